//! Published ports, from the desired state and the cluster view (see `crate::ingress`): the
//! node's nftables table, its port reservations and the return paths in local tasks. Runs on
//! every pass, gossip-driven ones included (remote tasks are backends); reloads the table only
//! when its text changes (one nft transaction: established flows keep their conntrack entries).

use crate::api::types::PublishMode;
use crate::gossip::ClusterView;
use crate::ingress::{model::IngressModel, ports};
use crate::kernel::cmd::Ns;
use crate::kernel::conntrack;
use crate::kernel::ingress as k;
use crate::lb::model::Backend;
use crate::state::DesiredState;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Default)]
struct Applied {
    ruleset: Option<String>,
    /// Return-path ruleset per task namespace.
    returns: BTreeMap<PathBuf, String>,
    /// Ports that could not be reserved, with their holder (as last logged).
    unreserved: Vec<(crate::ingress::model::Published, String)>,
    /// UDP backends of the last pass (a removed one gets its flows forgotten).
    udp_backends: BTreeSet<Backend>,
}

static APPLIED: Mutex<Applied> = Mutex::new(Applied {
    ruleset: None,
    returns: BTreeMap::new(),
    unreserved: Vec::new(),
    udp_backends: BTreeSet::new(),
});

/// Whether published ports can depend on what an LB-only pass follows (a remote task, or a
/// local one drained): there is an ingress network, a local task publishes a host-mode port,
/// or a ruleset is programmed (it may have to go). Otherwise such a pass leaves them alone and
/// costs nothing (right after a start, a pass checks the kernel's table with a process).
pub fn in_play(desired: &DesiredState) -> bool {
    desired.ingress_network().is_some()
        || desired.containers().any(|(_, e)| {
            e.spec.service.as_ref().is_some_and(|s| {
                s.ports
                    .iter()
                    .any(|p| p.publish_mode == PublishMode::Host && p.published_port.is_some())
            })
        })
        || APPLIED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ruleset
            .is_some()
}

/// Failures are logged and retried on the next pass (like the VIP LB): they do not fail the
/// API call that triggered the pass.
///
/// `keep_kernel` (right after a start, while gossip catches up): published ports the kernel
/// has but the model lacks (their tasks are not known again yet) stay programmed and reserved.
pub fn reconcile(
    desired: &DesiredState,
    view: &ClusterView,
    full: bool,
    keep_kernel: bool,
) -> Result<()> {
    if let Err(e) = sync(desired, view, full, keep_kernel) {
        tracing::warn!(error = %format!("{e:#}"), "published ports");
    }
    Ok(())
}

fn sync(desired: &DesiredState, view: &ClusterView, full: bool, keep_kernel: bool) -> Result<()> {
    let model = IngressModel::build(desired, view);
    let mut applied = APPLIED.lock().unwrap_or_else(|e| e.into_inner());
    if keep_kernel && applied.ruleset.is_none() && k::present() {
        let mut want = model.reserved();
        let programmed = k::programmed_ports()?;
        if !programmed.is_subset(&want) {
            want.extend(programmed);
            ports::hold(&want);
            tracing::debug!("published ports: keeping the kernel's table until gossip caught up");
            return Ok(());
        }
    }
    if full && applied.ruleset.is_some() && !k::present() {
        // Drift repair: someone deleted the table.
        applied.ruleset = None;
    }
    let failed = ports::hold(&model.reserved());
    if failed != applied.unreserved {
        // Logged once per change, not on every pass.
        for (p, who) in &failed {
            tracing::warn!(port = %p, holder = %who, "published port is held by another process on this node; not reserved");
        }
        applied.unreserved = failed;
    }
    let nothing = model.ingress.is_empty() && model.host.is_empty() && model.leg_ifname.is_none();
    if nothing {
        if applied.ruleset.is_some() || full {
            k::remove()?;
            applied.ruleset = None;
        }
    } else {
        let rs = k::ruleset(&model);
        if applied.ruleset.as_deref() != Some(rs.as_str()) {
            k::apply(&rs)?;
            tracing::debug!(
                ingress = model.ingress.len(),
                host = model.host.len(),
                "published ports programmed"
            );
            applied.ruleset = Some(rs);
        }
    }
    let udp = model.udp_backends();
    for gone in applied.udp_backends.difference(&udp) {
        // A removed task: its UDP flows would stay pinned to it while the client keeps sending
        // (TCP flows to it end by themselves).
        if let Err(e) = conntrack::forget_udp_flows_to(&Ns::Node, gone.ip, gone.port) {
            tracing::warn!(backend = ?gone, error = %format!("{e:#}"), "forgetting UDP flows");
        }
    }
    applied.udp_backends = udp;
    // Localhost clients leave through the leg (ingress) or the node bridge (host mode).
    if let Some(leg) = &model.leg_ifname {
        if std::path::Path::new("/proc/sys/net/ipv4/conf")
            .join(leg)
            .exists()
        {
            k::allow_localnet(leg)?;
        }
    }
    if !model.host.is_empty() {
        k::allow_localnet(crate::kernel::egress::BRIDGE)?;
    }
    let mut errors = Vec::new();
    let mut keep = BTreeMap::new();
    for rp in &model.return_paths {
        let text = format!(
            "{}{:?}{:?}",
            k::return_path_ruleset(&rp.ifname, &model.legs),
            rp.udp_ports,
            model.leg_ip
        );
        if applied.returns.get(&rp.netns) != Some(&text) {
            if let Err(e) = k::apply_return_path(rp, model.leg_ip, &model.legs) {
                errors.push(format!("{e:#}"));
                continue;
            }
        }
        keep.insert(rp.netns.clone(), text);
    }
    applied.returns = keep;
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}
