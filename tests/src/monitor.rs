//! Watching FDB and neighbour changes as they happen (`bridge monitor fdb`,
//! `ip monitor neigh`): polling can miss an entry that is removed and re-added between
//! two looks; a monitor cannot.

use crate::cmd::{run, Background};
use anyhow::{bail, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// Probe entry used to prove the monitor is subscribed (TEST-NET-1 address, a locally
/// administered MAC): added and removed at once, never used for traffic.
const PROBE_MAC: &str = "02:00:5e:00:53:01";
const PROBE_IP: &str = "192.0.2.1";

#[derive(Clone, Copy)]
enum Kind {
    Fdb,
    Neigh,
}

pub struct EntryMonitor {
    proc: Background,
}

impl EntryMonitor {
    /// Watches FDB changes on `dev` in namespace `ns`.
    pub fn fdb(ns: &str, dev: &str, dir: &Path, tag: &str) -> Result<Self> {
        Self::start(ns, dev, dir, tag, Kind::Fdb)
    }

    /// Watches neighbour changes in namespace `ns` (probing through `dev`).
    pub fn neigh(ns: &str, dev: &str, dir: &Path, tag: &str) -> Result<Self> {
        Self::start(ns, dev, dir, tag, Kind::Neigh)
    }

    fn start(ns: &str, dev: &str, dir: &Path, tag: &str, kind: Kind) -> Result<Self> {
        let cmd: &[&str] = match kind {
            Kind::Fdb => &["bridge", "monitor", "fdb"],
            Kind::Neigh => &["ip", "monitor", "neigh"],
        };
        let mut proc = Background::spawn_in(ns, cmd, dir, tag)?;
        // Add and remove a probe entry until the monitor reports it: from then on it is
        // subscribed and sees every change.
        let needle = match kind {
            Kind::Fdb => PROBE_MAC,
            Kind::Neigh => PROBE_IP,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proc.stdout().contains(needle) {
            if !proc.is_running() || Instant::now() > deadline {
                bail!("{} not reporting: {}", proc.cmdline, proc.stderr());
            }
            poke(ns, dev, kind)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { proc })
    }

    /// Stops the monitor and returns the `Deleted ...` events that mention `needle`
    /// (case-insensitive), ignoring the readiness probe.
    pub fn deletions_of(mut self, needle: &str) -> Vec<String> {
        self.proc.stop_with(libc::SIGTERM, Duration::from_secs(2));
        let needle = needle.to_lowercase();
        self.proc
            .stdout()
            .lines()
            .filter(|l| l.starts_with("Deleted"))
            .map(str::to_lowercase)
            .filter(|l| l.contains(&needle) && !l.contains(PROBE_MAC) && !l.contains(PROBE_IP))
            .collect()
    }
}

fn poke(ns: &str, dev: &str, kind: Kind) -> Result<()> {
    let (add, del): (Vec<&str>, Vec<&str>) = match kind {
        Kind::Fdb => (
            vec![
                "bridge",
                "-n",
                ns,
                "fdb",
                "append",
                PROBE_MAC,
                "dev",
                dev,
                "dst",
                PROBE_IP,
                "self",
                "permanent",
            ],
            vec![
                "bridge", "-n", ns, "fdb", "del", PROBE_MAC, "dev", dev, "dst", PROBE_IP, "self",
            ],
        ),
        Kind::Neigh => (
            vec![
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                PROBE_IP,
                "lladdr",
                PROBE_MAC,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
            vec!["ip", "-n", ns, "neigh", "del", PROBE_IP, "dev", dev],
        ),
    };
    let out = run(add[0], &add[1..])?;
    if !out.success {
        bail!("`{}`: {}", out.cmdline, out.stderr.trim());
    }
    run(del[0], &del[1..])?;
    Ok(())
}
