//! `netd inspect`: identity, advertise address, data-path port, gossip peers and their state,
//! networks with endpoint counts and drift, service count, kernel feature check, warnings.

use super::render::{self, opt};
use super::{kernel, Ctx, View};
use crate::api::types::{NetworkView, NodeView};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryReport {
    pub desired_state: String,
    /// `GET /v1/node` (absent while the daemon is down).
    pub node: Option<NodeView>,
    /// From the config when the daemon is down.
    pub node_name: Option<String>,
    pub networks: Vec<NetworkSummary>,
    pub services: Option<usize>,
    pub lb_backend: String,
    pub kernel_features: Vec<Feature>,
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkSummary {
    pub name: Option<String>,
    pub vni: u32,
    pub subnet: Option<String>,
    pub sandbox: Option<String>,
    pub sandbox_present: bool,
    pub local_endpoints: Option<usize>,
    pub remote_endpoints: Option<usize>,
    pub kernel_fdb_entries: usize,
    pub drift: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feature {
    pub feature: String,
    pub ok: bool,
    pub required: bool,
    pub affects: String,
}

pub fn view(ctx: &Ctx) -> Result<SummaryReport> {
    let mut problems: Vec<String> = ctx.daemon_problem().into_iter().collect();
    let mut warnings = Vec::new();
    let mut networks = Vec::new();
    let mut services = None;
    if let Ok(node) = &ctx.node {
        let nets: Vec<NetworkView> = ctx.networks()?;
        for n in nets {
            let r = super::network::view(ctx, &n.name)?;
            let drift = r.drift.len();
            if drift > 0 {
                problems.push(format!(
                    "network {}: {drift} drift entries (netd inspect network {})",
                    n.name, n.name
                ));
            }
            networks.push(NetworkSummary {
                name: Some(n.name.clone()),
                vni: n.spec.vni,
                subnet: Some(n.spec.subnet.to_string()),
                sandbox: Some(n.sandbox.clone()),
                sandbox_present: r.sandbox_present,
                local_endpoints: Some(n.local_endpoints),
                remote_endpoints: Some(n.remote_endpoints),
                kernel_fdb_entries: r.kernel.fdb.len(),
                drift: Some(drift),
            });
        }
        services = Some(ctx.services()?.len());
        for p in node.peers.iter().filter(|p| !p.live) {
            warnings.push(format!(
                "peer {} ({}) is dead: its endpoints are withdrawn",
                p.node, p.gossip_addr
            ));
        }
        if node.gossip_rejected > 0 {
            warnings.push(format!(
                "{} gossip datagrams failed authentication (a peer with another cluster key?)",
                node.gossip_rejected
            ));
        }
        if node.dns.failures > 0 {
            warnings.push(format!(
                "{} forwarded DNS queries failed upstream",
                node.dns.failures
            ));
        }
    } else if let Some(name) = ctx.node_name() {
        for (sb, vni) in kernel::sandboxes(&name) {
            let vx = crate::reconcile::vxlan_name(vni);
            let fdb = kernel::fdb_neigh(&sb, &vx)
                .map(|(f, _)| f.len())
                .unwrap_or(0);
            networks.push(NetworkSummary {
                name: None,
                vni,
                subnet: None,
                sandbox: Some(sb),
                sandbox_present: true,
                local_endpoints: None,
                remote_endpoints: None,
                kernel_fdb_entries: fdb,
                drift: None,
            });
        }
    } else {
        warnings.push(
            "no config readable (--config): the node name, and so its sandboxes, are unknown"
                .into(),
        );
    }
    let kernel_features: Vec<Feature> = crate::check::run_probes()
        .into_iter()
        .map(|p| Feature {
            feature: p.feature.into(),
            ok: p.ok,
            required: p.required,
            affects: p.affects.into(),
        })
        .collect();
    for f in kernel_features.iter().filter(|f| !f.ok) {
        if f.required {
            problems.push(format!(
                "kernel feature {} missing ({})",
                f.feature, f.affects
            ));
        } else {
            warnings.push(format!(
                "optional kernel feature {} missing ({})",
                f.feature, f.affects
            ));
        }
    }
    Ok(SummaryReport {
        desired_state: ctx.desired_state(),
        node_name: ctx.node_name(),
        node: ctx.node.as_ref().ok().cloned(),
        networks,
        services,
        lb_backend: ctx.lb_backend(),
        kernel_features,
        warnings,
        problems,
    })
}

impl View for SummaryReport {
    fn render(&self, out: &mut String) {
        match &self.node {
            Some(n) => {
                let _ = writeln!(
                    out,
                    "node {}  advertise {}  data port {}  gossip {}  underlay mtu {}  lb {}",
                    n.node,
                    n.advertise_addr,
                    n.data_port,
                    n.gossip_addr,
                    n.underlay_mtu,
                    n.lb_backend
                );
                let _ = writeln!(
                    out,
                    "  networks {}  local endpoints {}  remote endpoints {}  services {}  key tags {}",
                    n.networks,
                    n.local_endpoints,
                    n.remote_endpoints,
                    opt(&self.services),
                    n.gossip_key_tags.join(",")
                );
                let rows: Vec<Vec<String>> = n
                    .peers
                    .iter()
                    .map(|p| {
                        vec![
                            p.node.clone(),
                            p.gossip_addr.clone(),
                            if p.live { "live" } else { "DEAD" }.into(),
                            p.generation.to_string(),
                            p.endpoints.to_string(),
                        ]
                    })
                    .collect();
                render::table(
                    out,
                    "peers",
                    &["NODE", "GOSSIP", "STATE", "GENERATION", "ENDPOINTS"],
                    &rows,
                    "none",
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "node {}  desired state {}",
                    opt(&self.node_name),
                    self.desired_state
                );
            }
        }
        let rows: Vec<Vec<String>> = self
            .networks
            .iter()
            .map(|n| {
                vec![
                    opt(&n.name),
                    n.vni.to_string(),
                    opt(&n.subnet),
                    opt(&n.local_endpoints),
                    opt(&n.remote_endpoints),
                    n.kernel_fdb_entries.to_string(),
                    format!(
                        "{}{}",
                        opt(&n.sandbox),
                        if n.sandbox_present { "" } else { " (absent)" }
                    ),
                    n.drift.map_or("unknown".into(), |d| {
                        if d == 0 {
                            "none".into()
                        } else {
                            d.to_string()
                        }
                    }),
                ]
            })
            .collect();
        render::table(
            out,
            "networks",
            &[
                "NAME", "VNI", "SUBNET", "LOCAL", "REMOTE", "FDB", "SANDBOX", "DRIFT",
            ],
            &rows,
            "none",
        );
        let bad: Vec<String> = self
            .kernel_features
            .iter()
            .filter(|f| !f.ok)
            .map(|f| f.feature.clone())
            .collect();
        let _ = writeln!(
            out,
            "kernel features: {}",
            if bad.is_empty() {
                "all ok".to_string()
            } else {
                format!("missing {}", bad.join(", "))
            }
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    fn problems(&self) -> &[String] {
        &self.problems
    }
}
