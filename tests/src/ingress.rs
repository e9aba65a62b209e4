//! Published-port tests: a client that connects from chosen source ports (to compare backend
//! choice across nodes for the same flow), and host-side port holders. The task server is
//! [`crate::lb::IdServer::start_telling_peer`] (it tells whom it sees: SNAT vs. client IP).

use crate::netns::in_netns;
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// For each source port, connects from `ns` to every `dst:port` in turn (SO_REUSEADDR, so
/// the same source port serves several destinations) and reads the first line: one line of
/// answers per source port, in the order of `dsts`.
const FIXED: &str = r#"
import json, socket, sys
port = int(sys.argv[1])
dsts = sys.argv[2].split(",")
out = {}
for sport in [int(p) for p in sys.argv[3].split(",")]:
    row = []
    for d in dsts:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(5)
        try:
            s.bind(("0.0.0.0", sport))
            s.connect((d, port))
            buf = b""
            while not buf.endswith(b"\n"):
                c = s.recv(1)
                if not c:
                    break
                buf += c
            row.append(buf.decode().split(" ")[0].strip())
        except OSError as e:
            row.append("error:%s" % e)
        s.close()
    out[str(sport)] = row
print(json.dumps(out))
"#;

/// Runs [`FIXED`] in `ns`: source port → backend id per destination.
pub fn same_flow_via(
    ns: &str,
    dsts: &[Ipv4Addr],
    port: u16,
    sports: &[u16],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let dsts: Vec<String> = dsts.iter().map(|d| d.to_string()).collect();
    let sports: Vec<String> = sports.iter().map(|p| p.to_string()).collect();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", crate::netns::path(ns).display()))
        .args(["python3", "-c", FIXED, &port.to_string()])
        .arg(dsts.join(","))
        .arg(sports.join(","))
        .stdin(Stdio::null())
        .output()
        .context("spawning python3")?;
    if !out.status.success() {
        bail!(
            "fixed-port client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v.as_object()
        .cloned()
        .context("client output is not an object")
}

/// Binds (and listens on) `port` in `ns` from a separate process, like a host service
/// would: returns the process (kill it to free the port) once it is bound.
pub fn host_listener(
    ns: &str,
    port: u16,
    dir: &std::path::Path,
    tag: &str,
) -> Result<crate::Background> {
    let script = format!(
        "import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', {port}))\ns.listen()\nprint('bound', flush=True)\ntime.sleep(3600)\n"
    );
    let bg = crate::Background::spawn(
        "nsenter",
        &[
            format!("--net={}", crate::netns::path(ns).display()),
            "python3".into(),
            "-c".into(),
            script,
        ],
        dir,
        tag,
    )?;
    for _ in 0..100 {
        if bg.stdout().contains("bound") {
            return Ok(bg);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("host listener did not bind {port}: {}", bg.stderr())
}

/// Whether a process in `ns` can bind TCP `port` (0.0.0.0): `Err(errno name)` if not.
pub fn try_bind(ns: &str, port: u16) -> Result<(), String> {
    let r = in_netns(ns, move || std::net::TcpListener::bind(("0.0.0.0", port)))
        .map_err(|e| format!("{e:#}"))?;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Err("EADDRINUSE".into()),
        Err(e) => Err(e.to_string()),
    }
}
