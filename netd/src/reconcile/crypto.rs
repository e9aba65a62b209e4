//! Encrypted networks on this node: the fail-closed nftables rules for every encrypted VNI, and
//! the ESP states and policies towards every live peer, from the data-path keys.

use super::Shared;
use crate::api::types::PeerView;
use crate::crypto::keys::DataKey;
use crate::crypto::plan;
use crate::gossip::{ClusterView, EndpointChange};
use crate::kernel::{espfw, xfrm};
use crate::state::DesiredState;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// VNIs of the networks defined encrypted.
pub fn encrypted_vnis(desired: &DesiredState) -> BTreeSet<u32> {
    desired
        .networks
        .values()
        .filter(|n| n.encrypted)
        .map(|n| n.vni)
        .collect()
}

/// Nodes to hold SAs with, with the SA epoch each sends with: live gossip peers and the VTEPs
/// of remote endpoints.
pub fn peers(view: &ClusterView) -> BTreeMap<Ipv4Addr, u64> {
    let epoch_of: BTreeMap<&str, u64> = view
        .peers
        .iter()
        .map(|p| (p.node.as_str(), p.sa_epoch))
        .collect();
    let mut p: BTreeMap<Ipv4Addr, u64> = view
        .endpoints
        .iter()
        .map(|e| (e.vtep, epoch_of.get(&*e.node).copied().unwrap_or(0)))
        .collect();
    for peer in view.peers.iter().filter(|p| p.live) {
        if let Ok(SocketAddr::V4(a)) = peer.gossip_addr.parse::<SocketAddr>() {
            if !a.ip().is_unspecified() {
                p.insert(*a.ip(), peer.sa_epoch);
            }
        }
    }
    p
}

/// What [`peers`] is made of, followed change by change, so that the gossip watcher can tell
/// in O(changes) that the peers did not change: [`peers`] reads every remote endpoint (100k at
/// 10k services x 10 tasks: ~9 ms twice on every gossip change, measured on a running daemon),
/// but it depends only on which (VTEP, node) pairs the endpoints have and on the gossip peers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerInputs {
    /// Remote endpoints by (VTEP, node).
    vteps: HashMap<(Ipv4Addr, Arc<str>), usize>,
}

impl PeerInputs {
    pub fn of(view: &ClusterView) -> PeerInputs {
        let mut p = PeerInputs::default();
        for e in &view.endpoints {
            *p.vteps.entry((e.vtep, e.node.clone())).or_default() += 1;
        }
        p
    }

    /// Follows `changes` (from `old` to `new`) and tells whether the peers changed, exactly:
    /// `peers(old) != peers(new)`, computed only when a (VTEP, node) pair came or went or a
    /// gossip peer's address, liveness or SA epoch changed (a drained, enabled, added or
    /// removed task of a node already there touches neither).
    pub fn changed(
        &mut self,
        old: &ClusterView,
        new: &ClusterView,
        changes: &[EndpointChange],
    ) -> bool {
        // Whether each pair touched was there before.
        let mut before: HashMap<(Ipv4Addr, Arc<str>), bool> = HashMap::new();
        for (o, n) in changes {
            for (e, added) in [(o, false), (n, true)] {
                let Some(e) = e else { continue };
                let k = (e.vtep, e.node.clone());
                let count = self.vteps.entry(k.clone()).or_default();
                before.entry(k).or_insert(*count > 0);
                *count = if added {
                    *count + 1
                } else {
                    count.saturating_sub(1)
                };
            }
        }
        let mut pairs_moved = false;
        for (k, was) in before {
            let now = self.vteps.get(&k).is_some_and(|c| *c > 0);
            if !now {
                self.vteps.remove(&k);
            }
            pairs_moved |= now != was;
        }
        fn gossip(p: &PeerView) -> (&str, &str, bool, u64) {
            (&p.node, &p.gossip_addr, p.live, p.sa_epoch)
        }
        let gossip_moved = !old
            .peers
            .iter()
            .map(gossip)
            .eq(new.peers.iter().map(gossip));
        (pairs_moved || gossip_moved) && peers(old) != peers(new)
    }
}

pub fn keys(desired: &DesiredState) -> Vec<DataKey> {
    desired
        .encryption_keys
        .iter()
        .map(|k| DataKey::new(k))
        .collect()
}

pub fn reconcile(
    shared: &Shared,
    desired: &DesiredState,
    view: &ClusterView,
    keep_extra: bool,
) -> Result<()> {
    let vnis = encrypted_vnis(desired);
    // Nothing encrypted and nothing left from before: one check per full pass.
    if vnis.is_empty() && shared.is_verified("crypto:none") {
        return Ok(());
    }
    let port = shared.cfg.data_port;
    let me = shared.cfg.advertise_addr;
    // Drop rules first: an encrypted VNI is never in clear, whatever happens next.
    let st = espfw::status()?;
    if st.out_vnis != vnis || st.in_vnis != vnis || (vnis.is_empty() && st.present) {
        espfw::apply(port, &vnis)?;
    }
    let (states, policies) = match (xfrm::states(), xfrm::policies()) {
        (Ok(s), Ok(p)) => (s, p),
        // A kernel without XFRM cannot hold SAs of ours; with no encrypted network that is fine.
        (Err(e), _) | (_, Err(e)) if vnis.is_empty() => {
            tracing::debug!(error = %format!("{e:#}"), "no XFRM; nothing to clean up");
            shared.set_verified("crypto:none", true);
            return Ok(());
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let keys = if vnis.is_empty() {
        vec![]
    } else {
        keys(desired)
    };
    let peers = peers(view);
    let mut epoch = shared.sa_epoch.lock().expect("sa epoch lock");
    let mut want = plan::want(me, epoch.value(), &peers, &keys);
    let present: BTreeSet<(Ipv4Addr, u32)> = states
        .iter()
        .filter(|s| s.src == me)
        .map(|s| (s.dst, s.spi))
        .collect();
    if epoch.lost(&want.outbound(me), &present) {
        // Re-creating the same SAs would restart at sequence number 1 under the peers' replay
        // windows: send with fresh ones instead (peers follow through gossip).
        let old = epoch.value();
        let new = epoch.bump()?;
        tracing::warn!(
            old,
            new,
            "outbound SAs missing from the kernel: new SA epoch"
        );
        shared.events.emit(
            "sa_epoch_changed",
            None,
            &shared.cfg.node_name,
            format!("{old} -> {new}: outbound SAs were missing from the kernel"),
        );
        shared.sa_epoch_published.send_replace(new);
        want = plan::want(me, new, &peers, &keys);
    }
    let lines = plan::diff(me, port, &want, &states, &policies, keep_extra);
    if !lines.is_empty() {
        tracing::info!(
            changes = lines.len(),
            peers = want.out_spi.len(),
            keys = keys.len(),
            "programming IPsec"
        );
        xfrm::apply(&lines)?;
    }
    epoch.programmed(want.outbound(me));
    shared.set_verified("crypto:none", vnis.is_empty() && !keep_extra);
    Ok(())
}
