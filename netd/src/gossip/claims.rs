//! IPAM block claims: how nodes split a subnet without a central allocator.
//!
//! A node that needs addresses publishes `ipam:<net>:<block> = claimed` and waits until every
//! live peer acknowledges it: a peer acknowledges by publishing `seen:<node>:<generation> = v`, meaning "I
//! hold all of your state up to version v" (Scuttlebutt delivers a node's keys in version
//! order, so this holds). Once all live peers have seen the claim, the claimant checks again for
//! a competing claim on the same block; the claim yields if the competitor is confirmed or has a
//! smaller node name. Otherwise it becomes `confirmed` and the node allocates inside the block
//! on its own from then on. Two concurrent claimants of one block always see each other before
//! either confirms (each waits for the other's acknowledgement, which follows the other's claim
//! in version order), so at most one of them confirms.
//!
//! Limit (documented): nodes that are partitioned away (not live) do not acknowledge; a claim
//! made while a node is unreachable can collide with one made on the other side of the
//! partition. netd reports such duplicates (`GET /v1/node` warnings) rather than hiding them.

use super::record::{claim_key, parse_claim_key, seen_key, CLAIMED, CLAIM_PREFIX, CONFIRMED};
use super::Gossip;
use crate::ipam;
use anyhow::{bail, Result};
use chitchat::ChitchatId;
use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Per node: which blocks of `network` it claims and whether confirmed.
fn claims_of(g: &chitchat::Chitchat, network: &str) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    for (id, st) in g.node_states() {
        // A range of the node's keys, not a scan of all (endpoint records are most of them).
        for (k, v) in st.iter_prefix(CLAIM_PREFIX) {
            if let Some((n, b)) = parse_claim_key(k) {
                if n == network {
                    out.push((id.node_id.to_string(), b, v.value == CONFIRMED));
                }
            }
        }
    }
    out
}

impl Gossip {
    /// Claims a free block of `subnet` for `network` and returns it once confirmed.
    pub async fn claim_block(
        &self,
        network: &str,
        subnet: &Ipv4Net,
        timeout: Duration,
    ) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        let cc = self.handle.chitchat();
        let mut skip: BTreeSet<u32> = BTreeSet::new();
        loop {
            if Instant::now() > deadline {
                bail!(
                    "could not confirm an address block of {network} with the live peers in time"
                );
            }
            // Pick the lowest block nobody claims.
            let (block, version) = {
                let mut g = cc.lock().await;
                let taken: BTreeSet<u32> =
                    claims_of(&g, network).into_iter().map(|c| c.1).collect();
                let Some(block) = (0..ipam::block_count(subnet))
                    .find(|b| !taken.contains(b) && !skip.contains(b))
                else {
                    bail!("no free address block left in {subnet}");
                };
                let key = claim_key(network, block);
                let st = g.self_node_state();
                st.set(&key, CLAIMED);
                let v = st.get_versioned(&key).map(|v| v.version).unwrap_or(0);
                (block, v)
            };
            self.nudge().await;
            let key = claim_key(network, block);
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if Instant::now() > deadline {
                    cc.lock().await.self_node_state().delete(&key);
                    bail!(
                        "peers did not acknowledge the claim of block {block} of {network} in time"
                    );
                }
                let mut g = cc.lock().await;
                let me = g.self_chitchat_id().clone();
                let acked = g.live_nodes().filter(|id| **id != me).all(|id| {
                    g.node_state(id)
                        .and_then(|st| st.get(&seen_key(&me.node_id, me.generation_id)))
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(|seen| seen >= version)
                });
                if !acked {
                    continue;
                }
                let lose = claims_of(&g, network)
                    .into_iter()
                    .any(|(node, b, confirmed)| {
                        b == block
                            && node != *me.node_id
                            && (confirmed || node.as_str() < &*me.node_id)
                    });
                if lose {
                    g.self_node_state().delete(&key);
                    skip.insert(block);
                    break;
                }
                g.self_node_state().set(&key, CONFIRMED);
                drop(g);
                self.nudge().await;
                return Ok(block);
            }
        }
    }

    /// Gives a block back (network deleted on this node).
    pub async fn release_block(&self, network: &str, block: u32) {
        self.delete(&claim_key(network, block)).await;
    }

    /// Acknowledges peers' pending claims: for each live peer with a `claimed` key newer than
    /// what we acknowledged, publish `seen:<peer> = <its max version>`. Runs on every state
    /// change; writes only while claims are pending, so acknowledgements do not ping-pong.
    pub async fn acknowledge_claims(&self) {
        let cc = self.handle.chitchat();
        let mut g = cc.lock().await;
        let me: ChitchatId = g.self_chitchat_id().clone();
        let mut updates = Vec::new();
        for id in g.live_nodes() {
            if *id == me {
                continue;
            }
            let Some(st) = g.node_state(id) else { continue };
            let pending = st
                .iter_prefix(CLAIM_PREFIX)
                .filter(|(_, v)| v.value == CLAIMED)
                .map(|(_, v)| v.version)
                .max();
            let Some(pending) = pending else { continue };
            let key = seen_key(&id.node_id, id.generation_id);
            let acked = g
                .node_state(&me)
                .and_then(|s| s.get(&key))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if acked < pending {
                updates.push((key, st.max_version()));
            }
        }
        let changed = !updates.is_empty();
        for (k, v) in updates {
            // Drop acknowledgements of the peer's earlier incarnations.
            let node_prefix = k
                .rsplit_once(':')
                .map(|(p, _)| format!("{p}:"))
                .unwrap_or_default();
            let stale: Vec<String> = g
                .self_node_state()
                .iter_prefix(&node_prefix)
                .filter(|(sk, _)| *sk != k)
                .map(|(sk, _)| sk.to_string())
                .collect();
            for sk in stale {
                g.self_node_state().delete(&sk);
            }
            g.self_node_state().set(k, v);
        }
        drop(g);
        if changed {
            self.nudge().await;
        }
    }
}
