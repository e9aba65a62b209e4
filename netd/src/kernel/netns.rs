//! Named network namespaces (sandboxes) under /run/netns.

use super::cmd::{run, Ns};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where `ip netns` mounts namespace `name`.
fn named(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

pub fn exists(name: &str) -> bool {
    named(name).exists()
}

/// Creates the namespace if missing, with `lo` up. Returns whether it was created.
pub fn ensure(name: &str) -> Result<bool> {
    if exists(name) {
        return Ok(false);
    }
    run(&Ns::Node, "ip", &["netns", "add", name])?;
    run(&Ns::named(name), "ip", &["link", "set", "lo", "up"])?;
    Ok(true)
}

/// Deletes a sandbox. Its devices are deleted first: the kernel tears a namespace down
/// asynchronously, and a VXLAN device still alive in a dying namespace holds its VNI and
/// port, so an immediate re-create of the sandbox would fail.
pub fn delete(name: &str) -> Result<()> {
    if exists(name) {
        let ns = Ns::named(name);
        if let Ok(links) = super::link::list(&ns) {
            for l in links.iter().filter(|l| l.ifname != "lo") {
                let _ = run(&ns, "ip", &["link", "del", &l.ifname]);
            }
        }
        run(&Ns::Node, "ip", &["netns", "del", name])?;
    }
    Ok(())
}

/// Names of namespaces under /run/netns starting with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a thread of its own in network namespace `ns` (the caller's stays as it is).
/// Sockets opened there (netlink included) stay in `ns` for their whole life.
pub fn in_netns<T: Send>(ns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns(2) on this thread only, with an open namespace fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!(
                    "setns {}: {}",
                    ns.display(),
                    std::io::Error::last_os_error()
                );
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
    })
}

/// Runs `f` in `ns`: right here for the node's namespace, else as [`in_netns`] does.
pub fn enter<T: Send>(ns: &Ns, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match ns {
        Ns::Node => f(),
        Ns::Named(name) => in_netns(&named(name), f),
        Ns::Path(p) => in_netns(p, f),
    }
}

/// Identity of the namespace mounted at `ns` (device, inode): a container re-created under the
/// same path is a different namespace.
pub fn identity(ns: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(ns).ok().map(|m| (m.dev(), m.ino()))
}
