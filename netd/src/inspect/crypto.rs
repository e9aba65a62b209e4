//! `netd inspect crypto`: encryption of this node's overlay traffic — key tags (never key
//! material), encrypted networks, the fail-closed drop rules, and per peer the XFRM states
//! (SPI, key tag, byte/packet counters, sequence-number headroom) and policies.
//!
//! With the daemon up this is `GET /v1/encryption`; with it down the same view is built here
//! from the kernel and the persisted state file (the keys are read only to name SAs by tag).

use super::query::Ctx;
use super::{render, View};
use crate::crypto::view::CryptoView;
use crate::gossip::ClusterView;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Serialize, Deserialize)]
pub struct CryptoReport {
    pub desired_state: String,
    #[serde(flatten)]
    pub crypto: CryptoView,
}

pub fn view(ctx: &Ctx) -> Result<CryptoReport> {
    let mut crypto: CryptoView = if ctx.daemon_up() {
        ctx.get("/v1/encryption")?
    } else {
        let cfg = ctx
            .cfg
            .as_ref()
            .context("netd is down and its config is unreadable (give --config)")?;
        let state = ctx.persisted().unwrap_or_default();
        let epoch = crate::crypto::epoch::read(&cfg.state_dir)?;
        crate::crypto::view::build(cfg, &state, &ClusterView::default(), epoch)?
    };
    crypto.problems.extend(ctx.daemon_problem());
    Ok(CryptoReport {
        desired_state: ctx.desired_state(),
        crypto,
    })
}

impl View for CryptoReport {
    fn problems(&self) -> &[String] {
        &self.crypto.problems
    }

    fn render(&self, out: &mut String) {
        let v = &self.crypto;
        let _ = writeln!(out, "desired state: {}", self.desired_state);
        let _ = writeln!(
            out,
            "esp/gcm: {}   keys (tags, primary first): {}   sa epoch: {}",
            if v.esp_supported {
                "supported"
            } else {
                "NOT supported"
            },
            if v.key_tags.is_empty() {
                "none".to_string()
            } else {
                v.key_tags.join(" ")
            },
            v.sa_epoch
        );
        let nets: Vec<Vec<String>> = v
            .encrypted_networks
            .iter()
            .map(|n| vec![n.name.clone(), n.vni.to_string()])
            .collect();
        render::table(out, "encrypted networks", &["NAME", "VNI"], &nets, "none");
        let d = &v.drop_rules;
        let _ = writeln!(
            out,
            "drop rules (cleartext VXLAN of encrypted VNIs): {}; out {:?} ({} dropped), in {:?} ({} dropped)",
            if d.present { "present" } else { "absent" },
            d.out_vnis,
            d.dropped_out_packets,
            d.in_vnis,
            d.dropped_in_packets
        );
        let mut sas = Vec::new();
        let mut pols = Vec::new();
        for p in &v.peers {
            for s in &p.states {
                sas.push(vec![
                    format!("{} (epoch {})", p.peer, p.sa_epoch),
                    s.dir.clone(),
                    s.spi.clone(),
                    render::opt(&s.key_tag),
                    if s.esn { "yes" } else { "no" }.into(),
                    s.bytes.to_string(),
                    s.packets.to_string(),
                    s.seq.to_string(),
                    s.seq_headroom.to_string(),
                ]);
            }
            for pol in &p.policies {
                pols.push(vec![
                    p.peer.to_string(),
                    pol.dir.clone(),
                    pol.selector.clone(),
                    render::opt(&pol.tmpl_spi),
                ]);
            }
        }
        render::table(
            out,
            "xfrm states",
            &[
                "PEER", "DIR", "SPI", "KEY", "ESN", "BYTES", "PACKETS", "SEQ", "HEADROOM",
            ],
            &sas,
            "none",
        );
        render::table(
            out,
            "xfrm policies",
            &["PEER", "DIR", "SELECTOR", "TEMPLATE SPI"],
            &pols,
            "none",
        );
    }
}
