//! Named network namespaces (the `/run/netns/<name>` files `ip netns` manages): creation,
//! teardown, and running Rust code inside one.

use crate::cmd::{run, run_ok};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Creates a named namespace with `lo` up. Fails if the name is taken, which is how
/// callers detect prefix collisions.
pub fn create(name: &str) -> Result<()> {
    let out = run("ip", &["netns", "add", name])?;
    if !out.success {
        bail!("ip netns add {name}: {}", out.stderr.trim());
    }
    run_ok("ip", &["-n", name, "link", "set", "lo", "up"]);
    Ok(())
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// All named namespaces whose name starts with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Pids of the processes whose network namespace is `name`.
pub fn pids(name: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", name])
        .map(|o| {
            o.stdout
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process living in the namespace (our own helpers and whatever netd
/// left there), then removes the name. Best effort: used on teardown paths.
pub fn destroy(name: &str) {
    for pid in pids(name) {
        // SAFETY: kill(2) on a pid we just read for this namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = run("ip", &["netns", "del", name]);
    // `ip netns del` fails when the mount is busy; the bare file would otherwise linger.
    let p = path(name);
    if p.exists() {
        // SAFETY: umount2 with a valid NUL-terminated path; failures are ignored.
        if let Ok(c) = std::ffi::CString::new(p.to_string_lossy().as_bytes()) {
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_file(&p);
    }
}

/// Runs `f` on a fresh thread that has joined namespace `name`. Sockets created inside
/// `f` stay in that namespace after the thread ends, so this is how the tests open
/// listeners and connections "inside a container" and then use them from anywhere.
pub fn in_netns<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path(name)).with_context(|| format!("open netns {name}"))?;
    let handle = std::thread::spawn(move || -> Result<T> {
        // SAFETY: setns(2) on this thread only, with an fd that stays open for the call.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {name} panicked"))?
}

/// Creates a veth pair with each end directly in its namespace (no detour through the
/// root namespace, so names cannot clash with other test runs).
pub fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) -> Result<()> {
    let out = run(
        "ip",
        &[
            "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns",
            ns_b,
        ],
    )?;
    if !out.success {
        bail!(
            "veth {ns_a}/{name_a} <-> {ns_b}/{name_b}: {}",
            out.stderr.trim()
        );
    }
    Ok(())
}

/// `ip -n <ns> <args...>` that must succeed.
#[track_caller]
pub fn ip(ns: &str, args: &[&str]) {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    run_ok("ip", &full);
}
