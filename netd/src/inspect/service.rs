//! `netd inspect service NAME`: VIPs per network, ports, endpoint mode, backends with node
//! and state, what the LB actually holds (eBPF: the pinned maps, Maglev fill, conntrack,
//! reverse-NAT entries; nftables: each container's service chain; IPVS: each container's
//! virtual service with its destinations, weights and connection counts), and drift.

use super::render::{self, opt};
use super::{Ctx, Drift, View};
use crate::api::diag::{FrontendView, ServiceView};
use crate::kernel::cmd::{run, Ns};
use crate::lb::dump::{KernelFrontend, PinnedMaps};
use crate::lb::maps::MAGLEV_M;
use crate::lb::model::{Frontend, Proto};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceReport {
    pub desired_state: String,
    pub name: String,
    /// `ebpf`, `nftables`, `ipvs`, `none` (or `unknown` without daemon and config).
    pub lb_backend: String,
    pub lb_pin_dir: Option<String>,
    /// The service as netd has it (absent while the daemon is down).
    pub service: Option<ServiceView>,
    pub frontends: Vec<FrontendReport>,
    pub drift: Vec<Drift>,
    /// Not drift, but worth knowing (a service with no active backend refuses connections).
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontendReport {
    /// `VIP:port/proto`.
    pub frontend: String,
    pub desired: Option<FrontendView>,
    /// eBPF: what the pinned maps hold (None: no `lb_services` entry).
    pub kernel: Option<KernelFrontend>,
    /// nftables: the service chain in each local container.
    pub nftables: Vec<NftChain>,
    /// IPVS: the virtual service in each local container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipvs: Vec<IpvsService>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpvsService {
    pub container: String,
    pub present: bool,
    /// `mh` (Maglev) or `rr`.
    pub scheduler: String,
    pub dests: Vec<IpvsDest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpvsDest {
    /// `ip:port`.
    pub backend: String,
    /// 1 enabled, 0 drained.
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NftChain {
    pub container: String,
    pub present: bool,
    /// Backend addresses the chain DNATs to (empty: rejects).
    pub backends: Vec<Ipv4Addr>,
}

fn fe_name(fe: &Frontend) -> String {
    format!("{}:{}/{}", fe.vip, fe.port, fe.proto.name())
}

fn frontend_of(f: &FrontendView) -> Option<Frontend> {
    Some(Frontend {
        vip: f.vip,
        port: f.port,
        proto: match f.protocol.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return None,
        },
    })
}

pub fn view(ctx: &Ctx, name: &str) -> Result<ServiceReport> {
    let mut problems: Vec<String> = ctx.daemon_problem().into_iter().collect();
    let mut warnings = Vec::new();
    let service: Option<ServiceView> = if ctx.daemon_up() {
        match ctx.get_opt(&format!("/v1/services/{}", super::query::qenc(name)))? {
            Some(s) => Some(s),
            None => bail!("service {name:?} is not known on this node (no task on its networks)"),
        }
    } else {
        None
    };
    let vips: BTreeSet<Ipv4Addr> = match &service {
        Some(s) => s.vips.iter().filter_map(|v| v.vip).collect(),
        None => vips_without_daemon(ctx, name)?,
    };
    let mut desired: BTreeMap<Frontend, FrontendView> = BTreeMap::new();
    if let Some(s) = &service {
        for f in &s.frontends {
            if let Some(fe) = frontend_of(f) {
                desired.insert(fe, f.clone());
            }
        }
        for f in &s.frontends {
            if f.backends.is_empty() {
                warnings.push(if f.draining.is_empty() {
                    format!("{}: no backend: connections are refused", f.frontend)
                } else {
                    format!(
                        "{}: all {} backends are draining: new connections are refused",
                        f.frontend,
                        f.draining.len()
                    )
                });
            }
        }
    }
    let lb_backend = ctx.lb_backend();
    let pin_dir = ctx.lb_pin_dir();
    let mut drift = Vec::new();
    let mut frontends = Vec::new();
    match lb_backend.as_str() {
        "ebpf" => {
            let dir = pin_dir.clone().unwrap_or_default();
            match PinnedMaps::open(&dir) {
                Err(e) => problems.push(format!(
                    "cannot read the LB maps under {}: {e:#}",
                    dir.display()
                )),
                Ok(maps) => {
                    let mut all: BTreeSet<Frontend> = desired.keys().copied().collect();
                    all.extend(
                        maps.frontends()?
                            .into_iter()
                            .filter(|fe| vips.contains(&fe.vip)),
                    );
                    for fe in all {
                        let k = maps.frontend(&fe)?;
                        let d = desired.get(&fe).cloned();
                        if service.is_some() {
                            ebpf_drift(&fe, d.as_ref(), k.as_ref(), &mut drift);
                        }
                        frontends.push(FrontendReport {
                            frontend: fe_name(&fe),
                            desired: d,
                            kernel: k,
                            nftables: Vec::new(),
                            ipvs: Vec::new(),
                        });
                    }
                    if let Some(s) = &service {
                        vip_drift(s, &desired, &maps, &mut drift)?;
                    }
                }
            }
        }
        "nftables" => {
            let containers: BTreeSet<PathBuf> = if ctx.daemon_up() {
                ctx.endpoints()?.into_iter().map(|e| e.spec.netns).collect()
            } else {
                problems
                    .push("nftables backend: the containers to read are known only to netd".into());
                BTreeSet::new()
            };
            for (fe, d) in &desired {
                let mut chains = Vec::new();
                for c in &containers {
                    let ch = nft_chain(c, fe);
                    let want: BTreeSet<Ipv4Addr> = d
                        .backends
                        .iter()
                        .filter_map(|b| b.split(':').next()?.parse().ok())
                        .collect();
                    let have: BTreeSet<Ipv4Addr> = ch.backends.iter().copied().collect();
                    let key = format!("{} in {}", fe_name(fe), c.display());
                    if !ch.present {
                        drift.push(Drift::new("missing", "nft_lb", key));
                    } else if want != have {
                        drift.push(
                            Drift::new("different", "nft_lb", key)
                                .want(fmt_ips(&want))
                                .have(fmt_ips(&have)),
                        );
                    }
                    chains.push(ch);
                }
                frontends.push(FrontendReport {
                    frontend: fe_name(fe),
                    desired: Some(d.clone()),
                    kernel: None,
                    nftables: chains,
                    ipvs: Vec::new(),
                });
            }
        }
        "ipvs" => {
            let containers: BTreeSet<PathBuf> = if ctx.daemon_up() {
                ctx.endpoints()?.into_iter().map(|e| e.spec.netns).collect()
            } else {
                problems.push("IPVS backend: the containers to read are known only to netd".into());
                BTreeSet::new()
            };
            for (fe, d) in &desired {
                let mut want: BTreeMap<String, u32> =
                    d.draining.iter().map(|b| (b.clone(), 0)).collect();
                want.extend(d.backends.iter().map(|b| (b.clone(), 1)));
                let mut services = Vec::new();
                for c in &containers {
                    let svc = ipvs_service(c, fe);
                    let have: BTreeMap<String, u32> = svc
                        .dests
                        .iter()
                        .map(|x| (x.backend.clone(), x.weight))
                        .collect();
                    let key = format!("{} in {}", fe_name(fe), c.display());
                    if !svc.present {
                        drift.push(Drift::new("missing", "ipvs", key));
                    } else if want != have {
                        let fmt = |m: &BTreeMap<String, u32>| {
                            m.iter()
                                .map(|(b, w)| format!("{b} w{w}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        };
                        drift.push(
                            Drift::new("different", "ipvs", key)
                                .want(fmt(&want))
                                .have(fmt(&have)),
                        );
                    }
                    services.push(svc);
                }
                frontends.push(FrontendReport {
                    frontend: fe_name(fe),
                    desired: Some(d.clone()),
                    kernel: None,
                    nftables: Vec::new(),
                    ipvs: services,
                });
            }
        }
        other => {
            for (fe, d) in &desired {
                frontends.push(FrontendReport {
                    frontend: fe_name(fe),
                    desired: Some(d.clone()),
                    kernel: None,
                    nftables: Vec::new(),
                    ipvs: Vec::new(),
                });
            }
            if !desired.is_empty() {
                warnings.push(format!(
                    "lb_backend is {other}: VIPs are not load-balanced on this node"
                ));
            }
        }
    }
    if !drift.is_empty() {
        problems.push(format!(
            "{} drift entr{} between netd and the LB (the reconcile loop repairs drift every reconcile_interval_ms)",
            drift.len(),
            if drift.len() == 1 { "y" } else { "ies" }
        ));
    }
    Ok(ServiceReport {
        desired_state: ctx.desired_state(),
        name: name.to_string(),
        lb_backend,
        lb_pin_dir: pin_dir.map(|p| p.display().to_string()),
        service,
        frontends,
        drift,
        warnings,
        problems,
    })
}

fn fmt_ips(s: &BTreeSet<Ipv4Addr>) -> String {
    if s.is_empty() {
        return "reject".into();
    }
    s.iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Without the daemon: NAME is a VIP, or a service of the state file netd persisted.
fn vips_without_daemon(ctx: &Ctx, name: &str) -> Result<BTreeSet<Ipv4Addr>> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok([ip].into());
    }
    let vips: BTreeSet<Ipv4Addr> = ctx
        .persisted()
        .map(|d| {
            d.endpoints
                .values()
                .filter_map(|e| e.spec.service.as_ref())
                .filter(|s| s.name.eq_ignore_ascii_case(name) || s.id == name)
                .filter_map(|s| s.vip)
                .collect()
        })
        .unwrap_or_default();
    if vips.is_empty() {
        bail!(
            "service {name:?}: netd is not answering and its state file does not name it; give the VIP instead"
        );
    }
    Ok(vips)
}

fn ebpf_drift(
    fe: &Frontend,
    d: Option<&FrontendView>,
    k: Option<&KernelFrontend>,
    drift: &mut Vec<Drift>,
) {
    let key = fe_name(fe);
    let (d, k) = match (d, k) {
        (None, None) => return,
        (Some(d), None) => {
            drift.push(
                Drift::new("missing", "lb_service", key)
                    .want(format!("{} backends", d.backends.len())),
            );
            return;
        }
        (None, Some(k)) => {
            drift.push(
                Drift::new("extra", "lb_service", key)
                    .have(format!("{} backends", k.backend_count)),
            );
            return;
        }
        (Some(d), Some(k)) => (d, k),
    };
    let want: BTreeSet<String> = d.backends.iter().cloned().collect();
    let have: BTreeSet<String> = k
        .backends
        .iter()
        .map(|b| format!("{}:{}", b.ip, b.port))
        .collect();
    if k.backend_count as usize != want.len() {
        drift.push(
            Drift::new("different", "lb_service", format!("{key} count"))
                .want(want.len().to_string())
                .have(k.backend_count.to_string()),
        );
    }
    for b in want.difference(&have) {
        drift.push(Drift::new("missing", "lb_backend", format!("{key} -> {b}")));
    }
    for b in have.difference(&want) {
        drift.push(Drift::new("extra", "lb_backend", format!("{key} -> {b}")));
    }
    if k.maglev.dangling > 0 {
        drift.push(
            Drift::new("different", "maglev", format!("{key} slot {}", k.slot))
                .want("every slot on a backend")
                .have(format!(
                    "{} slots on empty backend entries",
                    k.maglev.dangling
                )),
        );
    } else if !want.is_empty() && k.maglev.filled != MAGLEV_M {
        drift.push(
            Drift::new("different", "maglev", format!("{key} slot {}", k.slot))
                .want(format!("{MAGLEV_M} slots filled"))
                .have(format!("{} filled", k.maglev.filled)),
        );
    }
}

/// `lb_vips` holds, per VIP, the enabled backends over its frontends (ARP/ICMP answers).
fn vip_drift(
    s: &ServiceView,
    desired: &BTreeMap<Frontend, FrontendView>,
    maps: &PinnedMaps,
    drift: &mut Vec<Drift>,
) -> Result<()> {
    for vip in s.vips.iter().filter_map(|v| v.vip) {
        let want: usize = desired
            .iter()
            .filter(|(fe, _)| fe.vip == vip)
            .map(|(_, d)| d.backends.len())
            .sum();
        let any = desired.keys().any(|fe| fe.vip == vip);
        let have = desired
            .keys()
            .find(|fe| fe.vip == vip)
            .map(|fe| maps.frontend(fe))
            .transpose()?
            .flatten()
            .and_then(|k| k.vip_enabled_backends);
        if any && have != Some(want as u32) {
            drift.push(
                Drift::new("different", "lb_vip", vip.to_string())
                    .want(want.to_string())
                    .have(opt(&have)),
            );
        }
    }
    Ok(())
}

/// The IPVS LB's virtual service for `fe` in a container, read over generic netlink.
fn ipvs_service(container: &std::path::Path, fe: &Frontend) -> IpvsService {
    use crate::kernel::ipvs::{Ipvs, ServiceKey};
    let key = ServiceKey {
        addr: fe.vip,
        port: fe.port,
        protocol: fe.proto.number(),
    };
    let found = crate::kernel::netns::in_netns(container, || {
        let mut ipvs = Ipvs::open()?;
        let Some(svc) = ipvs.services()?.into_iter().find(|s| s.key == key) else {
            return Ok(None);
        };
        Ok(Some((svc.scheduler, ipvs.dests(&key)?)))
    });
    let (present, scheduler, dests) = match found {
        Ok(Some((sched, dests))) => (true, sched, dests),
        _ => (false, String::new(), Vec::new()),
    };
    IpvsService {
        container: container.display().to_string(),
        present,
        scheduler,
        dests: dests
            .into_iter()
            .map(|d| IpvsDest {
                backend: format!("{}:{}", d.addr, d.port),
                weight: d.weight,
                active_conns: d.active_conns,
                inactive_conns: d.inactive_conns,
            })
            .collect(),
    }
}

/// The nftables LB's chain for `fe` in a container: present, and the addresses it DNATs to.
fn nft_chain(container: &std::path::Path, fe: &Frontend) -> NftChain {
    let out = run(
        &Ns::path(container),
        "nft",
        &[
            "list",
            "chain",
            "ip",
            crate::lb::nft::TABLE,
            &crate::lb::nft::chain(fe),
        ],
    );
    let (present, backends) = match out {
        Err(_) => (false, Vec::new()),
        Ok(text) => (true, nft_backends(&text)),
    };
    NftChain {
        container: container.display().to_string(),
        present,
        backends,
    }
}

/// Addresses of `map { 0 : a.b.c.d, 1 : ... }` in an nft chain listing.
fn nft_backends(text: &str) -> Vec<Ipv4Addr> {
    let Some(start) = text.find("map {") else {
        return Vec::new();
    };
    let rest = &text[start + 5..];
    let body = &rest[..rest.find('}').unwrap_or(rest.len())];
    body.split(',')
        .filter_map(|e| e.split(':').nth(1)?.trim().parse().ok())
        .collect()
}

impl View for ServiceReport {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "service {}  lb {}  desired state {}",
            self.name, self.lb_backend, self.desired_state
        );
        if let Some(s) = &self.service {
            let vips: Vec<String> = s
                .vips
                .iter()
                .map(|v| format!("{} on {}", opt(&v.vip), v.network))
                .collect();
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p.target_port,
                        if p.protocol == crate::api::types::Protocol::Udp {
                            "udp"
                        } else {
                            "tcp"
                        }
                    )
                })
                .collect();
            let mode = if s.endpoint_mode == crate::api::types::EndpointMode::Vip {
                "vip"
            } else {
                "dnsrr"
            };
            let _ = writeln!(
                out,
                "  id {}  mode {}  vips {}  ports {}",
                s.id,
                mode,
                vips.join(", "),
                ports.join(" ")
            );
            let rows: Vec<Vec<String>> = s
                .tasks
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.ip.to_string(),
                        t.network.clone(),
                        t.node.clone(),
                        t.state.clone(),
                        t.endpoint_id.clone(),
                    ]
                })
                .collect();
            render::table(
                out,
                "backends (tasks)",
                &["NAME", "IP", "NETWORK", "NODE", "STATE", "ENDPOINT"],
                &rows,
                "none",
            );
        }
        for f in &self.frontends {
            let _ = writeln!(out, "frontend {}", f.frontend);
            match &f.desired {
                Some(d) => {
                    let _ = writeln!(
                        out,
                        "  desired: {} active [{}]  draining [{}]",
                        d.backends.len(),
                        d.backends.join(" "),
                        d.draining.join(" ")
                    );
                }
                None => {
                    let _ = writeln!(out, "  desired: not wanted (or unknown)");
                }
            }
            if self.lb_backend == "ebpf" {
                match &f.kernel {
                    None => {
                        let _ = writeln!(out, "  kernel: no lb_services entry");
                    }
                    Some(k) => {
                        let _ = writeln!(
                            out,
                            "  kernel: slot {}  count {}  maglev {}/{} filled, {} dangling  vip backends {}  conntrack {}  udp reverse-nat {}",
                            k.slot,
                            k.backend_count,
                            k.maglev.filled,
                            k.maglev.slots,
                            k.maglev.dangling,
                            opt(&k.vip_enabled_backends),
                            k.conntrack.len(),
                            k.udp_reverse_nat
                        );
                        let rows: Vec<Vec<String>> = k
                            .backends
                            .iter()
                            .map(|b| {
                                vec![
                                    b.id.to_string(),
                                    format!("{}:{}", b.ip, b.port),
                                    b.mac.clone(),
                                    b.maglev_slots.to_string(),
                                ]
                            })
                            .collect();
                        render::table(
                            out,
                            "  lb_backends",
                            &["ID", "BACKEND", "MAC", "SLOTS"],
                            &rows,
                            "none",
                        );
                        for c in &k.conntrack {
                            let _ = writeln!(out, "  ct {} -> {}", c.client, c.backend);
                        }
                    }
                }
            }
            for c in &f.ipvs {
                let dests: Vec<String> = c
                    .dests
                    .iter()
                    .map(|d| {
                        format!(
                            "{} w{} ({} active, {} inactive)",
                            d.backend, d.weight, d.active_conns, d.inactive_conns
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  ipvs {} [{}]: {}",
                    c.container,
                    c.scheduler,
                    if !c.present {
                        "service missing".to_string()
                    } else if dests.is_empty() {
                        "no destinations (refused)".to_string()
                    } else {
                        dests.join(", ")
                    }
                );
            }
            for c in &f.nftables {
                let _ = writeln!(
                    out,
                    "  nft {}: {}",
                    c.container,
                    if !c.present {
                        "chain missing".to_string()
                    } else if c.backends.is_empty() {
                        "reject".to_string()
                    } else {
                        c.backends
                            .iter()
                            .map(Ipv4Addr::to_string)
                            .collect::<Vec<_>>()
                            .join(" ")
                    }
                );
            }
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        if self.service.is_some() {
            render::drift(out, &self.drift);
        } else {
            let _ = writeln!(out, "drift: not computed (desired state unavailable)");
        }
    }
    fn problems(&self) -> &[String] {
        &self.problems
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nft_backends_from_a_chain_listing() {
        let text = "table ip netd_lb {\n\tchain svc_0a000064_80_tcp {\n\t\tdnat to numgen random mod 2 map { 0 : 10.0.0.3, 1 : 10.0.0.4 }\n\t}\n}\n";
        assert_eq!(
            super::nft_backends(text),
            vec![
                "10.0.0.3".parse::<std::net::Ipv4Addr>().unwrap(),
                "10.0.0.4".parse().unwrap()
            ]
        );
        assert!(super::nft_backends("reject with tcp reset").is_empty());
    }
}
