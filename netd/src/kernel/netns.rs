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

pub fn delete(name: &str) -> Result<()> {
    if exists(name) {
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
