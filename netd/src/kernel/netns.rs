//! Named network namespaces (sandboxes) under /run/netns.

use super::cmd::{run, Ns};
use anyhow::Result;
use std::path::Path;

pub fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
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
