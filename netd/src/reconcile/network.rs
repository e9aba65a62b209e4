//! One overlay network on this node: sandbox namespace, bridge, VXLAN device, local
//! attachments, and the static FDB/neighbor entries for remote endpoints.

use super::remotes::{self, Programmed};
use super::Shared;
use crate::gossip::ClusterView;
use crate::kernel::cmd::Ns;
use crate::kernel::link::{self, ContainerIf, VxlanParams};
use crate::kernel::neigh::{self, NeighPlan};
use crate::kernel::netns;
use crate::state::DesiredState;
use crate::validate::spec_gateway;
use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use std::collections::BTreeSet;

pub const BRIDGE: &str = "br0";
pub const HOST_END_PREFIX: &str = "ve";

pub fn vxlan_name(vni: u32) -> String {
    format!("vx-{vni}")
}

pub fn host_end(endpoint_id: &str) -> String {
    link::host_end_name(HOST_END_PREFIX, endpoint_id)
}

/// Which parts of a network a pass looks at.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    /// Local attachments (veth pairs).
    pub locals: bool,
    /// Remote endpoints (FDB and neighbor entries).
    pub remotes: bool,
    /// Re-check every container-side interface (after a restart).
    pub verify_containers: bool,
    /// A full (drift repair) pass: what it changes is reported as `drift_repaired`.
    pub repair: bool,
}

pub fn reconcile(
    shared: &Shared,
    desired: &DesiredState,
    view: &ClusterView,
    name: &str,
    parts: Parts,
    keep_extra: bool,
) -> Result<()> {
    let verify_containers = parts.verify_containers;
    let Some(spec) = desired.networks.get(name) else {
        return Ok(()); // deleted: the sweep removes its sandbox
    };
    let locals: Vec<_> = desired.endpoints_on(name).collect();
    let sandbox = shared.cfg.sandbox_name(spec.vni);
    let key = format!("net:{name}");
    if locals.is_empty() {
        // Created on first local endpoint, removed with the last.
        shared.set_verified(&key, false);
        shared.swap_programmed_remotes(&sandbox, None);
        return netns::delete(&sandbox);
    }
    let sb = Ns::named(&sandbox);
    let mtu = shared.network_mtu(spec.mtu, spec.encrypted);
    let gw = spec_gateway(spec);
    let gw_net = Ipv4Net::new(gw, spec.subnet.prefix_len())?;
    let vx = vxlan_name(spec.vni);
    // A sandbox not (re)checked since the last full pass gets everything checked.
    let fresh = !shared.is_verified(&key);
    let parts = Parts {
        locals: parts.locals || fresh,
        remotes: parts.remotes || fresh,
        ..parts
    };
    if fresh {
        netns::ensure(&sandbox)?;
        link::ensure_bridge(&sb, BRIDGE, Some(gw_net), mtu).context("sandbox bridge")?;
        link::ensure_vxlan(
            &sandbox,
            BRIDGE,
            &VxlanParams {
                name: &vx,
                vni: spec.vni,
                local: shared.cfg.advertise_addr,
                port: shared.cfg.data_port,
                underlay_dev: &shared.facts.underlay_dev,
                mtu,
            },
        )
        .context("vxlan device")?;
        shared.set_verified(&key, true);
    }

    let mut errors = Vec::new();
    if parts.locals {
        reconcile_locals(&sandbox, spec, &locals, mtu, verify_containers, &mut errors)?;
    }
    if parts.remotes {
        let local_ips = locals.iter().map(|(_, e)| e.ip).collect();
        // Taken out while the pass runs: a pass that fails leaves the kernel unknown.
        let programmed = shared.swap_programmed_remotes(&sandbox, None);
        let follow = !fresh && !parts.repair;
        let followed = programmed
            .filter(|p| follow && p.local_ips == local_ips)
            .and_then(|p| follow_remotes(shared, view, name, p, keep_extra));
        let (plan, programmed) = match followed {
            Some(followed) => followed,
            None => {
                let want = remotes::wanted(view, name, &local_ips);
                let plan = NeighPlan::compute(
                    &want,
                    &neigh::fdb(&sb, &vx)?,
                    &neigh::neighbors(&sb, &vx)?,
                    keep_extra,
                );
                (plan, Programmed::new(view.generation, local_ips, &want))
            }
        };
        if !plan.is_empty() {
            tracing::debug!(network = name, ?plan, "neighbor plan");
            neigh::apply(&sb, &vx, &plan)?;
            if parts.repair {
                report_repair(shared, name, &vx, &plan);
            }
        }
        shared.swap_programmed_remotes(&sandbox, Some(programmed));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}

/// The plan for the view's changes since what `programmed` holds of `network`, and what it
/// holds after; None when those changes are no longer all known, or do not fit it.
fn follow_remotes(
    shared: &Shared,
    view: &ClusterView,
    network: &str,
    mut programmed: Programmed,
    keep_extra: bool,
) -> Option<(NeighPlan, Programmed)> {
    let changes = shared
        .view_changes
        .lock()
        .expect("view changes lock")
        .between(programmed.generation, view.generation)?;
    let plan = programmed.follow(network, &changes, view.generation, keep_extra)?;
    Some((plan, programmed))
}

/// Local attachments: a veth pair per endpoint; pairs of deleted endpoints are removed.
fn reconcile_locals(
    sandbox: &str,
    spec: &crate::api::types::NetworkSpec,
    locals: &[(&String, &crate::state::LocalEndpoint)],
    mtu: u32,
    verify_containers: bool,
    errors: &mut Vec<String>,
) -> Result<()> {
    let sb = Ns::named(sandbox);
    let present: BTreeSet<String> = link::list(&sb)?.into_iter().map(|l| l.ifname).collect();
    let mut wanted = BTreeSet::new();
    for (id, ep) in locals {
        let he = host_end(id);
        wanted.insert(he.clone());
        let c = ContainerIf {
            netns: &ep.spec.netns,
            ifname: &ep.spec.ifname,
            addr: Ipv4Net::new(ep.ip, spec.subnet.prefix_len())?,
            mac: &ep.mac,
            mtu,
            default_via: None,
        };
        let r = if !present.contains(&he) {
            link::create_veth(&sb, Some(sandbox), &he, BRIDGE, false, &c)
        } else if verify_containers {
            link::configure_container_side(&c)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            errors.push(format!("endpoint {id}: {e:#}"));
        }
    }
    for stray in present
        .iter()
        .filter(|n| n.starts_with(HOST_END_PREFIX) && n.len() == 14 && !wanted.contains(*n))
    {
        link::delete(&sb, stray)?;
    }
    Ok(())
}

/// Removes sandboxes of this node that no network with local endpoints wants.
pub fn sweep_sandboxes(shared: &Shared, desired: &DesiredState) -> Result<()> {
    let wanted: BTreeSet<String> = desired
        .networks
        .iter()
        .filter(|(n, _)| desired.endpoints_on(n).next().is_some())
        .map(|(_, s)| shared.cfg.sandbox_name(s.vni))
        .collect();
    let prefix = format!("nd-{}-", shared.cfg.node_name);
    for ns in netns::list(&prefix) {
        let is_ours = ns[prefix.len()..].chars().all(|c| c.is_ascii_digit());
        if is_ours && !wanted.contains(&ns) {
            tracing::info!(sandbox = %ns, "removing unused sandbox");
            shared.swap_programmed_remotes(&ns, None);
            netns::delete(&ns)?;
        }
    }
    Ok(())
}

/// What a drift-repair pass changed on a VXLAN device, as `drift_repaired` events.
fn report_repair(shared: &Shared, network: &str, vx: &str, plan: &NeighPlan) {
    let ev = &shared.events;
    let set: BTreeSet<[u8; 6]> = plan.fdb_set.iter().map(|(m, _)| *m).collect();
    for (m, v) in &plan.fdb_set {
        ev.emit(
            "drift_repaired",
            Some(network),
            vx,
            format!("fdb {} -> {v} restored", neigh::fmt_mac(m)),
        );
    }
    for (m, v) in plan.fdb_del.iter().filter(|(m, _)| !set.contains(m)) {
        ev.emit(
            "drift_repaired",
            Some(network),
            vx,
            format!("extra fdb {} -> {v} removed", neigh::fmt_mac(m)),
        );
    }
    for (i, m) in &plan.neigh_set {
        ev.emit(
            "drift_repaired",
            Some(network),
            vx,
            format!("neighbor {i} -> {} restored", neigh::fmt_mac(m)),
        );
    }
    for i in &plan.neigh_del {
        ev.emit(
            "drift_repaired",
            Some(network),
            vx,
            format!("extra neighbor {i} removed"),
        );
    }
}
