//! A small blocking client of the API socket, for the CLI (`netd inspect`).

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends one request; returns `(status, body)`.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response")
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn get_json(socket: &Path, path: &str) -> Result<serde_json::Value> {
    let (status, body) = request(socket, "GET", path, None)?;
    if status != 200 {
        bail!("GET {path}: HTTP {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// `GET path` of a streaming (chunked NDJSON) response: calls `line` for every complete line
/// until the server closes, `line` returns false, or `until` passes.
pub fn stream_lines(
    socket: &Path,
    path: &str,
    until: Option<std::time::Instant>,
    mut line: impl FnMut(&str) -> bool,
) -> Result<()> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n"
    )?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut raw: Vec<u8> = Vec::new();
    let mut body_start = None;
    let mut text = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if until.is_some_and(|u| std::time::Instant::now() >= u) {
            return Ok(());
        }
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        };
        raw.extend_from_slice(&buf[..n]);
        if body_start.is_none() {
            let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..i]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("malformed HTTP status line")?;
            if status != 200 {
                bail!("GET {path}: HTTP {status}");
            }
            raw.drain(..i + 4);
            body_start = Some(());
        }
        // Chunks: "<hex size>\r\n<data>\r\n".
        while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16)
                .context("malformed chunk size")?;
            if size == 0 {
                return Ok(());
            }
            if raw.len() < eol + 2 + size + 2 {
                break;
            }
            text.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
            raw.drain(..eol + 2 + size + 2);
        }
        while let Some(i) = text.iter().position(|b| *b == b'\n') {
            let l: Vec<u8> = text.drain(..=i).collect();
            if !line(String::from_utf8_lossy(&l).trim_end()) {
                return Ok(());
            }
        }
    }
}
