//! This node's SA epoch: part of the derivation of the SAs it *sends* with, gossiped as
//! `sa_epoch`, persisted in the state directory (`sa-epoch`).
//!
//! SPIs and keys are derived, not negotiated, so a node that lost its SAs (a reboot, a hand
//! flush) would re-create the very same outbound SA starting again at sequence number 1, and
//! every peer still holding the inbound half would drop those packets as replays. When netd
//! finds outbound SAs it had programmed gone — or, on the first pass that wants some, none of
//! them in the kernel — it moves to a new epoch: fresh SPIs and keys for its sending direction,
//! which peers install with a fresh replay window as soon as gossip tells them. Inbound SAs need
//! nothing: a fresh inbound window accepts the peer's current sequence numbers.

use crate::state::store::write_atomic;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const FILE: &str = "sa-epoch";
/// The gossip key the epoch is published under.
pub const GOSSIP_KEY: &str = "sa_epoch";

/// An outbound SA: (peer, SPI).
pub type OutSa = (Ipv4Addr, u32);

pub struct SaEpoch {
    dir: PathBuf,
    value: u64,
    /// Outbound SAs programmed (or found in the kernel) at this epoch.
    programmed: BTreeSet<OutSa>,
    /// Whether the first pass that wanted outbound SAs has looked at the kernel.
    checked: bool,
}

/// The persisted epoch (0 when none was ever chosen).
pub fn read(state_dir: &Path) -> Result<u64> {
    let path = state_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl SaEpoch {
    pub fn load(state_dir: &Path) -> Result<SaEpoch> {
        Ok(SaEpoch {
            dir: state_dir.to_path_buf(),
            value: read(state_dir)?,
            programmed: BTreeSet::new(),
            checked: false,
        })
    }

    pub fn value(&self) -> u64 {
        self.value
    }

    /// Whether outbound SAs of this epoch were lost: some that were programmed are missing, or
    /// (first look after a start) none of the wanted ones is in the kernel.
    pub fn lost(&mut self, wanted: &BTreeSet<OutSa>, present: &BTreeSet<OutSa>) -> bool {
        if wanted.is_empty() {
            return false;
        }
        if !self.checked {
            self.checked = true;
            return wanted.is_disjoint(present);
        }
        self.programmed
            .iter()
            .any(|sa| wanted.contains(sa) && !present.contains(sa))
    }

    /// Moves to a new epoch (larger than the last, and than any earlier start's: the clock),
    /// persisted before it is used.
    pub fn bump(&mut self) -> Result<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let next = now.max(self.value + 1);
        write_atomic(&self.dir, FILE, next.to_string().as_bytes())
            .context("persisting the SA epoch")?;
        self.value = next;
        self.programmed.clear();
        Ok(next)
    }

    /// Records the outbound SAs the kernel now holds at this epoch.
    pub fn programmed(&mut self, now: BTreeSet<OutSa>) {
        self.programmed = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netd-epoch-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn first_look_bumps_only_when_the_kernel_holds_none() {
        let d = dir("first");
        let wanted: BTreeSet<OutSa> = [(B, 1), (C, 2)].into();
        let mut e = SaEpoch::load(&d).unwrap();
        assert!(
            !e.lost(&BTreeSet::new(), &BTreeSet::new()),
            "nothing wanted yet"
        );
        assert!(
            e.lost(&wanted, &BTreeSet::new()),
            "none there after a start"
        );
        let mut e = SaEpoch::load(&d).unwrap();
        assert!(
            !e.lost(&wanted, &[(B, 1)].into()),
            "a restart adopts what is there"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_programmed_sa_gone_is_a_loss_a_new_peer_is_not() {
        let d = dir("loss");
        let mut e = SaEpoch::load(&d).unwrap();
        let one: BTreeSet<OutSa> = [(B, 1)].into();
        assert!(!e.lost(&one, &one));
        e.programmed(one.clone());
        let two: BTreeSet<OutSa> = [(B, 1), (C, 2)].into();
        assert!(!e.lost(&two, &one), "C is new, not lost");
        e.programmed(two.clone());
        assert!(e.lost(&two, &[(C, 2)].into()), "B's SA vanished");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bumps_grow_and_persist() {
        let d = dir("bump");
        let mut e = SaEpoch::load(&d).unwrap();
        assert_eq!(e.value(), 0);
        let a = e.bump().unwrap();
        let b = e.bump().unwrap();
        assert!(a > 1_600_000_000 && b == a + 1, "{a} {b}");
        assert_eq!(read(&d).unwrap(), b);
        assert_eq!(SaEpoch::load(&d).unwrap().value(), b);
        std::fs::write(d.join(FILE), "garbage").unwrap();
        assert!(read(&d).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
