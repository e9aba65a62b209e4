//! Encrypted networks on this node: the fail-closed nftables rules for every encrypted VNI, and
//! the ESP states and policies towards every live peer, from the data-path keys.

use super::Shared;
use crate::crypto::keys::DataKey;
use crate::crypto::plan;
use crate::gossip::ClusterView;
use crate::kernel::{espfw, xfrm};
use crate::state::DesiredState;
use anyhow::Result;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

/// VNIs of the networks defined encrypted.
pub fn encrypted_vnis(desired: &DesiredState) -> BTreeSet<u32> {
    desired
        .networks
        .values()
        .filter(|n| n.encrypted)
        .map(|n| n.vni)
        .collect()
}

/// Nodes to hold SAs with: live gossip peers and the VTEPs of remote endpoints.
pub fn peers(view: &ClusterView) -> BTreeSet<Ipv4Addr> {
    let mut p: BTreeSet<Ipv4Addr> = view.endpoints.iter().map(|e| e.vtep).collect();
    for peer in view.peers.iter().filter(|p| p.live) {
        if let Ok(SocketAddr::V4(a)) = peer.gossip_addr.parse::<SocketAddr>() {
            if !a.ip().is_unspecified() {
                p.insert(*a.ip());
            }
        }
    }
    p
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
    let want = plan::want(me, &peers(view), &keys);
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
    shared.set_verified("crypto:none", vnis.is_empty() && !keep_extra);
    Ok(())
}
