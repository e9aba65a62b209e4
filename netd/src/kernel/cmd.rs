//! The one runner of iproute2 / nftables commands, with the namespace they act in.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where a command acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ns {
    /// netd's own namespace (the node's).
    Node,
    /// A named namespace under /run/netns.
    Named(String),
    /// A namespace by path (a container's).
    Path(PathBuf),
}

impl Ns {
    pub fn named(name: &str) -> Ns {
        Ns::Named(name.to_string())
    }
    pub fn path(p: &Path) -> Ns {
        Ns::Path(p.to_path_buf())
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ns::Node => write!(f, "the node's namespace"),
            Ns::Named(n) => write!(f, "namespace {n}"),
            Ns::Path(p) => write!(f, "namespace {}", p.display()),
        }
    }
}

fn command(ns: &Ns, prog: &str) -> Command {
    match ns {
        Ns::Node => Command::new(prog),
        Ns::Named(n) => {
            // iproute2's own -n: setns into /run/netns/NAME without a mount namespace.
            let mut c = Command::new(prog);
            c.args(["-n", n]);
            c
        }
        // A namespace under /run/netns has a name iproute2's -n understands: one process
        // instead of nsenter + ip (iproute2 6.1's -n takes names only, not paths).
        Ns::Path(p)
            if (prog == "ip" || prog == "bridge")
                && p.parent() == Some(Path::new("/run/netns"))
                && p.file_name().is_some() =>
        {
            let mut c = Command::new(prog);
            c.arg("-n").arg(p.file_name().expect("checked"));
            c
        }
        Ns::Path(p) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", p.display())).arg(prog);
            c
        }
    }
}

/// Runs `prog args...` in `ns`; returns stdout. The error carries the command and its stderr.
pub fn run(ns: &Ns, prog: &str, args: &[&str]) -> Result<String> {
    let t = std::time::Instant::now();
    let out = command(ns, prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {prog}"))?;
    tracing::debug!(?ns, prog, args = %args.join(" "), elapsed = ?t.elapsed(), "kernel command");
    if !out.status.success() {
        bail!(
            "{prog} {} (in {ns:?}) failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `prog args... --json`-style commands and parses the output.
pub fn json<T: serde::de::DeserializeOwned>(ns: &Ns, prog: &str, args: &[&str]) -> Result<T> {
    let out = run(ns, prog, args)?;
    let text = if out.trim().is_empty() {
        "[]"
    } else {
        out.trim()
    };
    serde_json::from_str(text)
        .with_context(|| format!("parsing output of {prog} {}", args.join(" ")))
}

/// Runs `prog args...` in `ns` with `input` on stdin.
pub fn with_stdin(ns: &Ns, prog: &str, args: &[&str], input: &str) -> Result<()> {
    let t = std::time::Instant::now();
    let mut child = command(ns, prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {prog}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    tracing::debug!(?ns, prog, args = %args.join(" "), elapsed = ?t.elapsed(), "kernel command (stdin)");
    if !out.status.success() {
        bail!(
            "{prog} {} (in {ns:?}) failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Feeds `lines` to `prog -batch -` in `ns`: one process for many changes, stops at the first
/// failing line.
pub fn batch(ns: &Ns, prog: &str, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let mut child = command(ns, prog)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {prog} -batch"))?;
    {
        let mut stdin = child.stdin.take().context("batch stdin")?;
        for l in lines {
            writeln!(stdin, "{l}")?;
        }
    }
    let out = child.wait_with_output()?;
    tracing::debug!(?ns, prog, batch = %lines.join("; "), elapsed = ?t.elapsed(), "kernel batch");
    if !out.status.success() {
        bail!(
            "{prog} batch (in {ns:?}) failed: {} [commands: {}]",
            String::from_utf8_lossy(&out.stderr).trim(),
            lines.join("; ")
        );
    }
    Ok(())
}
