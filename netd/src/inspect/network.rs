//! `netd inspect network NAME`: subnet, VNI, MTU, sandbox, bridge/VTEP, local endpoints,
//! remote peers, the FDB and neighbor entries actually in the kernel, and drift.

use super::kernel::{self, VxlanDevice};
use super::render::{self, opt};
use super::{Ctx, Drift, View};
use crate::api::types::{NetworkView, RemoteEndpointView};
use crate::kernel::neigh::{fmt_mac, parse_mac};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkReport {
    pub desired_state: String,
    pub name: String,
    pub vni: u32,
    /// The network as netd has it (absent while the daemon is down).
    pub network: Option<NetworkView>,
    pub sandbox: Option<String>,
    pub sandbox_present: bool,
    pub vxlan: Option<VxlanDevice>,
    /// Ports of the sandbox bridge other than the VXLAN device (host ends of veths).
    pub bridge_ports: Vec<String>,
    pub local_endpoints: Vec<LocalEndpoint>,
    pub remote_endpoints: Vec<RemoteEndpointView>,
    pub kernel: KernelEntries,
    pub drift: Vec<Drift>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalEndpoint {
    pub id: String,
    pub name: String,
    /// The container's network namespace.
    pub container: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The sandbox end of its veth pair, and whether the kernel has it on the bridge.
    pub host_end: String,
    pub host_end_present: bool,
    pub service_disabled: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KernelEntries {
    pub fdb: Vec<FdbEntry>,
    pub neighbors: Vec<NeighEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbEntry {
    pub mac: String,
    pub dst: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NeighEntry {
    pub ip: Ipv4Addr,
    pub mac: String,
}

pub fn view(ctx: &Ctx, name: &str) -> Result<NetworkReport> {
    let mut problems: Vec<String> = ctx.daemon_problem().into_iter().collect();
    let (net, locals, remotes) = if ctx.daemon_up() {
        let Some(net) = ctx.network(name)? else {
            bail!("network {name:?} does not exist on this node");
        };
        let locals: Vec<_> = ctx
            .endpoints()?
            .into_iter()
            .filter(|e| e.spec.network == name)
            .collect();
        let remotes: Vec<_> = ctx
            .remote_endpoints()?
            .into_iter()
            .filter(|e| *e.network == *name)
            .collect();
        (Some(net), locals, remotes)
    } else {
        (None, Vec::new(), Vec::new())
    };
    let vni = match &net {
        Some(n) => n.spec.vni,
        None => vni_without_daemon(ctx, name)?,
    };
    let sandbox = match &net {
        Some(n) => Some(n.sandbox.clone()),
        None => ctx.sandbox_name(vni).or_else(|| {
            let found = crate::kernel::netns::list("nd-");
            let mut m = found
                .into_iter()
                .filter(|n| n.ends_with(&format!("-{vni}")));
            m.next()
        }),
    };
    let vx = crate::reconcile::vxlan_name(vni);
    let sandbox_present = sandbox.as_deref().is_some_and(crate::kernel::netns::exists);
    let (vxlan, bridge_ports, fdb, neighs) = match (&sandbox, sandbox_present) {
        (Some(sb), true) => {
            let (dev, ports) = kernel::sandbox_links(sb, &vx)?;
            let (fdb, neighs) = if dev.is_some() {
                kernel::fdb_neigh(sb, &vx)?
            } else {
                Default::default()
            };
            (dev, ports, fdb, neighs)
        }
        _ => (None, Vec::new(), BTreeMap::new(), BTreeMap::new()),
    };
    let ports: BTreeSet<&str> = bridge_ports.iter().map(String::as_str).collect();
    let local_endpoints: Vec<LocalEndpoint> = locals
        .iter()
        .map(|e| {
            let host_end = crate::reconcile::host_end(&e.id);
            LocalEndpoint {
                host_end_present: ports.contains(host_end.as_str()),
                host_end,
                id: e.id.clone(),
                name: e.spec.name.clone(),
                container: e.spec.netns.display().to_string(),
                ifname: e.spec.ifname.clone(),
                ip: e.ip,
                mac: e.mac.clone(),
                service_disabled: e.service_disabled,
            }
        })
        .collect();
    let mut drift = Vec::new();
    if let Some(n) = &net {
        drift = network_drift(
            ctx,
            n,
            &local_endpoints,
            &remotes,
            sandbox_present,
            &vxlan,
            &fdb,
            &neighs,
        );
    }
    if !drift.is_empty() {
        problems.push(format!(
            "{} drift entr{} between netd and the kernel (the reconcile loop repairs drift every reconcile_interval_ms)",
            drift.len(),
            if drift.len() == 1 { "y" } else { "ies" }
        ));
    }
    Ok(NetworkReport {
        desired_state: ctx.desired_state(),
        name: name.to_string(),
        vni,
        network: net,
        sandbox,
        sandbox_present,
        vxlan,
        bridge_ports,
        local_endpoints,
        remote_endpoints: remotes,
        kernel: KernelEntries {
            fdb: fdb
                .iter()
                .map(|(m, d)| FdbEntry {
                    mac: fmt_mac(m),
                    dst: *d,
                })
                .collect(),
            neighbors: neighs
                .iter()
                .map(|(i, m)| NeighEntry {
                    ip: *i,
                    mac: fmt_mac(m),
                })
                .collect(),
        },
        drift,
        problems,
    })
}

/// Without the daemon: NAME is a VNI, or a network of the state file netd persisted.
fn vni_without_daemon(ctx: &Ctx, name: &str) -> Result<u32> {
    if let Ok(vni) = name.parse() {
        return Ok(vni);
    }
    if let Some(n) = ctx.persisted().and_then(|d| d.networks.get(name).cloned()) {
        return Ok(n.vni);
    }
    bail!(
        "network {name:?}: netd is not answering and its state file does not name it; give the VNI instead ({})",
        ctx.desired_state()
    )
}

#[allow(clippy::too_many_arguments)]
fn network_drift(
    ctx: &Ctx,
    net: &NetworkView,
    locals: &[LocalEndpoint],
    remotes: &[RemoteEndpointView],
    sandbox_present: bool,
    vxlan: &Option<VxlanDevice>,
    fdb: &BTreeMap<[u8; 6], Ipv4Addr>,
    neighs: &BTreeMap<Ipv4Addr, [u8; 6]>,
) -> Vec<Drift> {
    let mut drift = Vec::new();
    if locals.is_empty() {
        // No local endpoint: no sandbox wanted on this node.
        if sandbox_present {
            drift.push(Drift::new("extra", "sandbox", &net.sandbox));
        }
        return drift;
    }
    if !sandbox_present {
        drift.push(Drift::new("missing", "sandbox", &net.sandbox));
        return drift;
    }
    let vx = crate::reconcile::vxlan_name(net.spec.vni);
    match vxlan {
        None => drift.push(Drift::new("missing", "vxlan", &vx)),
        Some(d) => {
            if d.vni != Some(net.spec.vni) {
                drift.push(
                    Drift::new("different", "vxlan", format!("{vx} vni"))
                        .want(net.spec.vni.to_string())
                        .have(opt(&d.vni)),
                );
            }
            if let Ok(node) = &ctx.node {
                if d.dstport != Some(node.data_port) {
                    drift.push(
                        Drift::new("different", "vxlan", format!("{vx} dstport"))
                            .want(node.data_port.to_string())
                            .have(opt(&d.dstport)),
                    );
                }
                if d.local.as_deref() != Some(node.advertise_addr.to_string().as_str()) {
                    drift.push(
                        Drift::new("different", "vxlan", format!("{vx} local"))
                            .want(node.advertise_addr.to_string())
                            .have(opt(&d.local)),
                    );
                }
            }
            if !d.up {
                drift.push(
                    Drift::new("different", "vxlan", format!("{vx} state"))
                        .want("up")
                        .have("down"),
                );
            }
        }
    }
    for l in locals.iter().filter(|l| !l.host_end_present) {
        drift.push(
            Drift::new("missing", "veth", &l.host_end).want(format!("port of br0 for {}", l.id)),
        );
    }
    // As reconcile programs them: a remote address that collides with a local one is skipped.
    let local_ips: BTreeSet<Ipv4Addr> = locals.iter().map(|l| l.ip).collect();
    let mut want_fdb: BTreeMap<[u8; 6], Ipv4Addr> = BTreeMap::new();
    let mut want_neigh: BTreeMap<Ipv4Addr, [u8; 6]> = BTreeMap::new();
    for r in remotes.iter().filter(|r| !local_ips.contains(&r.ip)) {
        if let Some(mac) = parse_mac(&r.mac) {
            want_fdb.insert(mac, r.vtep);
            want_neigh.insert(r.ip, mac);
        }
    }
    for (mac, vtep) in &want_fdb {
        match fdb.get(mac) {
            None => drift.push(Drift::new("missing", "fdb", fmt_mac(mac)).want(vtep.to_string())),
            Some(v) if v != vtep => drift.push(
                Drift::new("different", "fdb", fmt_mac(mac))
                    .want(vtep.to_string())
                    .have(v.to_string()),
            ),
            _ => {}
        }
    }
    for (mac, v) in fdb {
        if !want_fdb.contains_key(mac) {
            drift.push(Drift::new("extra", "fdb", fmt_mac(mac)).have(v.to_string()));
        }
    }
    for (ip, mac) in &want_neigh {
        match neighs.get(ip) {
            None => {
                drift.push(Drift::new("missing", "neighbor", ip.to_string()).want(fmt_mac(mac)))
            }
            Some(m) if m != mac => drift.push(
                Drift::new("different", "neighbor", ip.to_string())
                    .want(fmt_mac(mac))
                    .have(fmt_mac(m)),
            ),
            _ => {}
        }
    }
    for (ip, m) in neighs {
        if !want_neigh.contains_key(ip) {
            drift.push(Drift::new("extra", "neighbor", ip.to_string()).have(fmt_mac(m)));
        }
    }
    drift
}

impl View for NetworkReport {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "network {}  vni {}  desired state {}",
            self.name, self.vni, self.desired_state
        );
        if let Some(n) = &self.network {
            let _ = writeln!(
                out,
                "  subnet {}  gateway {}  mtu {}  encrypted {}  internal {}",
                n.spec.subnet,
                n.effective_gateway,
                n.effective_mtu,
                n.spec.encrypted,
                n.spec.internal
            );
        }
        let _ = writeln!(
            out,
            "  sandbox {} ({})",
            opt(&self.sandbox),
            if self.sandbox_present {
                "present"
            } else {
                "absent"
            }
        );
        match &self.vxlan {
            Some(v) => {
                let _ = writeln!(
                    out,
                    "  vtep {}  vni {}  local {}  dstport {}  mtu {}  {}  bridge {}",
                    v.name,
                    opt(&v.vni),
                    opt(&v.local),
                    opt(&v.dstport),
                    v.mtu,
                    if v.up { "up" } else { "DOWN" },
                    opt(&v.master)
                );
            }
            None => {
                let _ = writeln!(out, "  vtep: none in the kernel");
            }
        }
        let rows: Vec<Vec<String>> = self
            .local_endpoints
            .iter()
            .map(|e| {
                vec![
                    e.id.clone(),
                    e.name.clone(),
                    e.container.clone(),
                    e.ifname.clone(),
                    e.ip.to_string(),
                    e.mac.clone(),
                    format!(
                        "{}{}",
                        e.host_end,
                        if e.host_end_present { "" } else { " (MISSING)" }
                    ),
                ]
            })
            .collect();
        let none = if self.network.is_some() {
            "none"
        } else {
            "unknown (desired state unavailable)"
        };
        render::table(
            out,
            "local endpoints",
            &["ID", "NAME", "CONTAINER", "IF", "IP", "MAC", "VETH"],
            &rows,
            none,
        );
        if self.network.is_none() {
            let _ = writeln!(
                out,
                "  bridge ports in the kernel: {}",
                self.bridge_ports.join(" ")
            );
        }
        let rows: Vec<Vec<String>> = self
            .remote_endpoints
            .iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.ip.to_string(),
                    e.mac.clone(),
                    e.vtep.to_string(),
                    e.node.to_string(),
                ]
            })
            .collect();
        render::table(
            out,
            "remote endpoints (gossip)",
            &["NAME", "IP", "MAC", "VTEP", "NODE"],
            &rows,
            none,
        );
        let rows: Vec<Vec<String>> = self
            .kernel
            .fdb
            .iter()
            .map(|f| vec![f.mac.clone(), f.dst.to_string()])
            .collect();
        render::table(out, "kernel fdb", &["MAC", "DST"], &rows, "none");
        let rows: Vec<Vec<String>> = self
            .kernel
            .neighbors
            .iter()
            .map(|n| vec![n.ip.to_string(), n.mac.clone()])
            .collect();
        render::table(out, "kernel neighbors", &["IP", "MAC"], &rows, "none");
        if self.network.is_some() {
            render::drift(out, &self.drift);
        } else {
            let _ = writeln!(out, "drift: not computed (desired state unavailable)");
        }
    }
    fn problems(&self) -> &[String] {
        &self.problems
    }
}
