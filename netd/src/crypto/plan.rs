//! What the kernel should hold for encryption, and the ordered changes to get there: new SAs
//! first, then policies (the switch to a new primary key is one atomic policy update), then
//! removals. Pure: computed from typed values, applied by `reconcile::crypto`.

use super::keys::{DataKey, SaParams};
use crate::kernel::xfrm::{self, Policy, State};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

#[derive(Debug, Default)]
pub struct Want {
    pub sas: Vec<SaParams>,
    /// Outbound SPI per peer (the primary key's).
    pub out_spi: BTreeMap<Ipv4Addr, u32>,
}

/// SAs for every peer, both directions, every key; sending with the primary. Each direction
/// at its sender's SA epoch (`me_epoch` for ours, the peer's published one for theirs).
pub fn want(
    me: Ipv4Addr,
    me_epoch: u64,
    peers: &BTreeMap<Ipv4Addr, u64>,
    keys: &[DataKey],
) -> Want {
    let mut w = Want::default();
    let Some(primary) = keys.first() else {
        return w;
    };
    for (&p, &p_epoch) in peers.iter().filter(|(p, _)| **p != me) {
        for k in keys {
            w.sas.push(k.sa(me, p, me_epoch));
            w.sas.push(k.sa(p, me, p_epoch));
        }
        w.out_spi.insert(p, primary.sa(me, p, me_epoch).spi);
    }
    w
}

impl Want {
    /// The outbound SAs: (peer, SPI).
    pub fn outbound(&self, me: Ipv4Addr) -> BTreeSet<(Ipv4Addr, u32)> {
        self.sas
            .iter()
            .filter(|s| s.src == me)
            .map(|s| (s.dst, s.spi))
            .collect()
    }
}

/// `ip -batch` lines, in the order that loses no packet.
pub fn diff(
    me: Ipv4Addr,
    port: u16,
    want: &Want,
    have_states: &[State],
    have_policies: &[Policy],
    keep_extra: bool,
) -> Vec<String> {
    let have: BTreeSet<(Ipv4Addr, Ipv4Addr, u32)> =
        have_states.iter().map(|s| (s.src, s.dst, s.spi)).collect();
    let wanted: BTreeSet<(Ipv4Addr, Ipv4Addr, u32)> =
        want.sas.iter().map(|s| (s.src, s.dst, s.spi)).collect();
    let mut lines = Vec::new();
    for sa in &want.sas {
        if !have.contains(&(sa.src, sa.dst, sa.spi)) {
            lines.push(xfrm::add_state_line(sa));
        }
    }
    let selects = |p: &Policy| p.dport == Some(port) && p.mark == Some(xfrm::MARK);
    let mut kept_policies = BTreeSet::new();
    for (&peer, &spi) in &want.out_spi {
        let out_ok = have_policies.iter().any(|p| {
            p.dir == "out" && p.src == me && p.dst == peer && selects(p) && p.tmpl_spi == spi
        });
        if !out_ok {
            lines.push(xfrm::out_policy_line(me, peer, port, spi));
        }
        let in_ok = have_policies
            .iter()
            .any(|p| p.dir == "in" && p.src == peer && p.dst == me && selects(p));
        if !in_ok {
            lines.push(xfrm::in_policy_line(me, peer, port));
        }
        kept_policies.insert(("out", me, peer));
        kept_policies.insert(("in", peer, me));
    }
    if keep_extra {
        return lines;
    }
    for s in have_states {
        if !wanted.contains(&(s.src, s.dst, s.spi)) {
            lines.push(xfrm::delete_state_line(s.src, s.dst, s.spi));
        }
    }
    for p in have_policies {
        let kept = kept_policies.contains(&(p.dir.as_str(), p.src, p.dst)) && selects(p);
        if !kept {
            lines.push(xfrm::delete_policy_line(p));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn state_of(sa: &SaParams) -> State {
        State {
            src: sa.src,
            dst: sa.dst,
            spi: sa.spi,
            reqid: xfrm::REQID,
            esn: true,
            oseq: 0,
            seq: 0,
            bytes: 0,
            packets: 0,
        }
    }

    fn policies_for(spi: u32) -> Vec<Policy> {
        vec![
            Policy {
                dir: "out".into(),
                src: ME,
                dst: B,
                dport: Some(4789),
                mark: Some(xfrm::MARK),
                tmpl_spi: spi,
                reqid: xfrm::REQID,
            },
            Policy {
                dir: "in".into(),
                src: B,
                dst: ME,
                dport: Some(4789),
                mark: Some(xfrm::MARK),
                tmpl_spi: 0,
                reqid: xfrm::REQID,
            },
        ]
    }

    #[test]
    fn nothing_to_do_when_the_kernel_matches() {
        let k = DataKey::new("0123456789abcdef-one");
        let w = want(ME, 0, &[(ME, 0), (B, 0)].into(), std::slice::from_ref(&k));
        assert_eq!(w.sas.len(), 2);
        let states: Vec<State> = w.sas.iter().map(state_of).collect();
        let d = diff(
            ME,
            4789,
            &w,
            &states,
            &policies_for(k.sa(ME, B, 0).spi),
            false,
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn rotation_adds_states_before_switching_and_removes_after() {
        let (old, new) = (
            DataKey::new("0123456789abcdef-old"),
            DataKey::new("0123456789abcdef-new"),
        );
        let have: Vec<State> = want(ME, 0, &[(B, 0)].into(), std::slice::from_ref(&old))
            .sas
            .iter()
            .map(state_of)
            .collect();
        let pols = policies_for(old.sa(ME, B, 0).spi);
        // new key first: states for it, then the outbound policy switches to it
        let w = want(ME, 0, &[(B, 0)].into(), &[new.clone(), old.clone()]);
        let d = diff(ME, 4789, &w, &have, &pols, false);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("xfrm state add") && d[1].starts_with("xfrm state add"));
        assert!(
            d[2].contains("dir out") && d[2].contains(&format!("0x{:08x}", new.sa(ME, B, 0).spi))
        );
        // old key dropped: its states go, after nothing else changed
        let have2: Vec<State> = w.sas.iter().map(state_of).collect();
        let w2 = want(ME, 0, &[(B, 0)].into(), std::slice::from_ref(&new));
        let d2 = diff(
            ME,
            4789,
            &w2,
            &have2,
            &policies_for(new.sa(ME, B, 0).spi),
            false,
        );
        assert_eq!(d2.len(), 2, "{d2:?}");
        assert!(d2.iter().all(|l| l.starts_with("xfrm state delete")));
    }

    #[test]
    fn gone_peers_lose_states_and_policies_unless_kept_during_startup() {
        let k = DataKey::new("0123456789abcdef-one");
        let w_full = want(ME, 0, &[(B, 0)].into(), std::slice::from_ref(&k));
        let have: Vec<State> = w_full.sas.iter().map(state_of).collect();
        let pols = policies_for(k.sa(ME, B, 0).spi);
        let none = want(ME, 0, &BTreeMap::new(), std::slice::from_ref(&k));
        assert_eq!(diff(ME, 4789, &none, &have, &pols, false).len(), 4);
        assert!(diff(ME, 4789, &none, &have, &pols, true).is_empty());
    }

    #[test]
    fn a_new_peer_epoch_replaces_only_the_inbound_sa_from_it() {
        let k = DataKey::new("0123456789abcdef-one");
        let before = want(ME, 7, &[(B, 1)].into(), std::slice::from_ref(&k));
        let have: Vec<State> = before.sas.iter().map(state_of).collect();
        let pols = policies_for(k.sa(ME, B, 7).spi);
        let after = want(ME, 7, &[(B, 2)].into(), std::slice::from_ref(&k));
        let d = diff(ME, 4789, &after, &have, &pols, false);
        assert_eq!(d.len(), 2, "{d:?}");
        let new_in = k.sa(B, ME, 2).spi;
        assert!(d[0].starts_with("xfrm state add") && d[0].contains(&format!("0x{new_in:08x}")));
        let old_in = k.sa(B, ME, 1).spi;
        assert!(d[1].starts_with("xfrm state delete") && d[1].contains(&format!("0x{old_in:08x}")));
        assert_eq!(after.outbound(ME), before.outbound(ME));
    }

    #[test]
    fn no_keys_means_no_states() {
        assert!(want(ME, 0, &[(B, 0)].into(), &[]).sas.is_empty());
    }
}
