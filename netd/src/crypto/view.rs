//! The encryption view (`GET /v1/encryption`, `netd inspect crypto`): key tags (never
//! material), SPIs, the kernel's states and policies per peer with their counters, sequence
//! number headroom, and the drop rules. Read from the kernel, compared with what should be.

use super::keys::DataKey;
use crate::config::Config;
use crate::gossip::ClusterView;
use crate::kernel::{espfw, xfrm};
use crate::reconcile::crypto::{encrypted_vnis, keys, peers};
use crate::state::DesiredState;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CryptoView {
    pub esp_supported: bool,
    /// Tags of the data-path keys, primary first.
    pub key_tags: Vec<String>,
    /// The epoch of the SAs this node sends with (changes when its SAs were found lost).
    #[serde(default)]
    pub sa_epoch: u64,
    pub encrypted_networks: Vec<EncryptedNetwork>,
    pub drop_rules: DropRules,
    pub peers: Vec<PeerSas>,
    /// What is wrong (empty when healthy).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncryptedNetwork {
    pub name: String,
    pub vni: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropRules {
    pub present: bool,
    pub out_vnis: Vec<u32>,
    pub in_vnis: Vec<u32>,
    pub dropped_out_packets: u64,
    pub dropped_in_packets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSas {
    pub peer: Ipv4Addr,
    /// The epoch the peer sends with (as gossiped).
    #[serde(default)]
    pub sa_epoch: u64,
    /// SPI the outbound policy sends with, and its key's tag.
    pub out_spi: Option<String>,
    pub out_key_tag: Option<String>,
    pub states: Vec<SaView>,
    pub policies: Vec<PolicyView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaView {
    pub dir: String,
    pub spi: String,
    /// Tag of the key this SA derives from (None: not from a current key).
    pub key_tag: Option<String>,
    pub esn: bool,
    pub bytes: u64,
    pub packets: u64,
    /// Highest sequence number sent (out) or received (in).
    pub seq: u64,
    /// Sequence numbers left before wrap (out): 2^64 with ESN, 2^32 without.
    pub seq_headroom: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyView {
    pub dir: String,
    pub selector: String,
    pub tmpl_spi: Option<String>,
}

fn spi_hex(spi: u32) -> String {
    format!("0x{spi:08x}")
}

/// Outbound SAs with less headroom than this are a problem (rekey is due).
const MIN_HEADROOM: u64 = 1 << 24;

/// `me_epoch`: the epoch this node sends with (see `super::epoch`).
pub fn build(cfg: &Config, d: &DesiredState, v: &ClusterView, me_epoch: u64) -> Result<CryptoView> {
    let me = cfg.advertise_addr;
    let peer_epochs = peers(v);
    let epoch_of = |node: Ipv4Addr| {
        if node == me {
            me_epoch
        } else {
            peer_epochs.get(&node).copied().unwrap_or(0)
        }
    };
    let ks: Vec<DataKey> = keys(d);
    let vnis = encrypted_vnis(d);
    let st = espfw::status()?;
    let states = xfrm::states()?;
    let policies = xfrm::policies()?;
    let tag_of = |src: Ipv4Addr, dst: Ipv4Addr, spi: u32| {
        ks.iter()
            .find(|k| k.sa(src, dst, epoch_of(src)).spi == spi)
            .map(|k| k.tag())
    };
    let mut problems = Vec::new();
    if st.out_vnis != vnis || st.in_vnis != vnis {
        problems.push(format!(
            "drop rules cover out {:?} / in {:?}, encrypted VNIs are {:?}",
            st.out_vnis, st.in_vnis, vnis
        ));
    }
    if !vnis.is_empty() && ks.is_empty() {
        problems.push("no data-path keys yet: traffic of encrypted networks is dropped".into());
    }
    let mut all_peers: std::collections::BTreeSet<Ipv4Addr> = peer_epochs.keys().copied().collect();
    all_peers.extend(states.iter().flat_map(|s| [s.src, s.dst]));
    all_peers.remove(&me);
    let mut out = Vec::new();
    for peer in all_peers {
        let mut sas = Vec::new();
        for s in states
            .iter()
            .filter(|s| (s.src == me && s.dst == peer) || (s.src == peer && s.dst == me))
        {
            let outbound = s.src == me;
            let max = if s.esn { u64::MAX } else { u32::MAX as u64 };
            let seq = if outbound { s.oseq } else { s.seq };
            sas.push(SaView {
                dir: if outbound { "out" } else { "in" }.into(),
                spi: spi_hex(s.spi),
                key_tag: tag_of(s.src, s.dst, s.spi),
                esn: s.esn,
                bytes: s.bytes,
                packets: s.packets,
                seq,
                seq_headroom: max - seq,
            });
        }
        let pols: Vec<PolicyView> = policies
            .iter()
            .filter(|p| (p.src == me && p.dst == peer) || (p.src == peer && p.dst == me))
            .map(|p| PolicyView {
                dir: p.dir.clone(),
                selector: format!(
                    "{}/32 -> {}/32 udp dport {} mark {}",
                    p.src,
                    p.dst,
                    p.dport.map(|x| x.to_string()).unwrap_or("any".into()),
                    p.mark.map(spi_hex).unwrap_or("none".into())
                ),
                tmpl_spi: (p.tmpl_spi != 0).then(|| spi_hex(p.tmpl_spi)),
            })
            .collect();
        let out_pol = policies
            .iter()
            .find(|p| p.dir == "out" && p.src == me && p.dst == peer);
        if !vnis.is_empty() && !ks.is_empty() {
            let want_spi = ks[0].sa(me, peer, me_epoch).spi;
            if out_pol.map(|p| p.tmpl_spi) != Some(want_spi) {
                problems.push(format!(
                    "{peer}: outbound policy does not send with the primary key"
                ));
            }
            for k in &ks {
                for (s, dd) in [(me, peer), (peer, me)] {
                    let spi = k.sa(s, dd, epoch_of(s)).spi;
                    if !states
                        .iter()
                        .any(|x| x.src == s && x.dst == dd && x.spi == spi)
                    {
                        problems.push(format!(
                            "{peer}: SA {s}->{dd} {} of key {} missing",
                            spi_hex(spi),
                            k.tag()
                        ));
                    }
                }
            }
        }
        for s in sas
            .iter()
            .filter(|s| s.dir == "out" && s.seq_headroom < MIN_HEADROOM)
        {
            problems.push(format!(
                "{peer}: SA {} has {} sequence numbers left: rotate the key",
                s.spi, s.seq_headroom
            ));
        }
        out.push(PeerSas {
            peer,
            sa_epoch: epoch_of(peer),
            out_spi: out_pol.map(|p| spi_hex(p.tmpl_spi)),
            out_key_tag: out_pol.and_then(|p| tag_of(me, peer, p.tmpl_spi)),
            states: sas,
            policies: pols,
        });
    }
    Ok(CryptoView {
        esp_supported: super::support::probe().is_ok(),
        key_tags: ks.iter().map(|k| k.tag()).collect(),
        sa_epoch: me_epoch,
        encrypted_networks: d
            .networks
            .iter()
            .filter(|(_, n)| n.encrypted)
            .map(|(name, n)| EncryptedNetwork {
                name: name.clone(),
                vni: n.vni,
            })
            .collect(),
        drop_rules: DropRules {
            present: st.present,
            out_vnis: st.out_vnis.into_iter().collect(),
            in_vnis: st.in_vnis.into_iter().collect(),
            dropped_out_packets: st.dropped_out_packets,
            dropped_in_packets: st.dropped_in_packets,
        },
        peers: out,
        problems,
    })
}
