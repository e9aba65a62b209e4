//! `netd inspect path --from C --to IP|NAME:PORT`: walks what a packet from container C
//! would meet — DNS answer, socket-LB translation and the backends it may choose, the route
//! in the container, the local bridge or the neighbor and FDB entries on the VXLAN device,
//! the remote VTEP and the underlay route to it, encryption — and names the first hop that
//! would fail, with the reason.

use super::kernel;
use super::{query::qenc, Ctx, View};
use crate::api::diag::{DnsView, FrontendView, ServiceView};
use crate::api::types::{EndpointView, NetworkView, RemoteEndpointView};
use crate::kernel::cmd::Ns;
use crate::kernel::neigh::{fmt_mac, parse_mac};
use crate::lb::dump::PinnedMaps;
use crate::lb::model::{Frontend, Proto};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathReport {
    pub desired_state: String,
    pub from: String,
    pub to: String,
    pub protocol: String,
    pub port: u16,
    pub hops: Vec<Hop>,
    /// `ok` or `fail`.
    pub result: String,
    /// The step of the first failing hop, and why.
    pub failed_step: Option<String>,
    pub reason: Option<String>,
    pub problems: Vec<String>,
}

/// One thing the packet meets. Field names are stable (`--json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hop {
    /// `source`, `dns`, `load_balancer`, `backend`, `route`, `bridge`, `neighbor`, `fdb`,
    /// `vtep`, `underlay`, `encryption`, `egress`.
    pub step: String,
    /// `ok`, `fail` or `info`.
    pub status: String,
    pub detail: String,
}

struct Walk {
    hops: Vec<Hop>,
}

impl Walk {
    fn ok(&mut self, step: &str, detail: impl Into<String>) {
        self.push(step, "ok", detail);
    }
    fn info(&mut self, step: &str, detail: impl Into<String>) {
        self.push(step, "info", detail);
    }
    fn fail(&mut self, step: &str, detail: impl Into<String>) {
        self.push(step, "fail", detail);
    }
    fn push(&mut self, step: &str, status: &str, detail: impl Into<String>) {
        self.hops.push(Hop {
            step: step.into(),
            status: status.into(),
            detail: detail.into(),
        });
    }
    fn failed(&self) -> bool {
        self.hops.iter().any(|h| h.status == "fail")
    }
}

/// `host:port[/udp|/tcp]`.
fn parse_to(to: &str) -> Result<(String, u16, Proto)> {
    let (hp, proto) = match to.rsplit_once('/') {
        Some((hp, "udp")) => (hp, Proto::Udp),
        Some((hp, "tcp")) => (hp, Proto::Tcp),
        Some((_, p)) => bail!("to: unknown protocol {p:?} (tcp or udp)"),
        None => (to, Proto::Tcp),
    };
    let (host, port) = hp
        .rsplit_once(':')
        .with_context(|| format!("to: {to:?} is not HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("to: port {port:?} is not a number"))?;
    if host.is_empty() {
        bail!("to: empty host in {to:?}");
    }
    Ok((host.to_string(), port, proto))
}

struct Tables {
    locals: Vec<EndpointView>,
    remotes: Vec<RemoteEndpointView>,
    networks: Vec<NetworkView>,
    services: Vec<ServiceView>,
}

pub fn view(ctx: &Ctx, from: &str, to: &str) -> Result<PathReport> {
    let (host, port, proto) = parse_to(to)?;
    let mut w = Walk { hops: Vec::new() };
    let mut problems: Vec<String> = ctx.daemon_problem().into_iter().collect();
    if ctx.daemon_up() {
        let t = Tables {
            locals: ctx.endpoints()?,
            remotes: ctx.remote_endpoints()?,
            networks: ctx.networks()?,
            services: ctx.services()?,
        };
        walk(ctx, &t, from, &host, port, proto, &mut w)?;
    } else {
        // Without netd's tables: the route the container's kernel would use, nothing more.
        w.fail(
            "source",
            "desired state unavailable: the endpoint, DNS and service tables are netd's",
        );
        let ns = if from.starts_with('/') {
            PathBuf::from(from)
        } else {
            PathBuf::from("/run/netns").join(from)
        };
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            match kernel::route_get(&Ns::path(&ns), ip) {
                Ok(r) => w.info(
                    "route",
                    format!(
                        "container kernel: {ip} via dev {}{}",
                        r.dev,
                        r.gateway
                            .map(|g| format!(" gateway {g}"))
                            .unwrap_or_default()
                    ),
                ),
                Err(e) => w.info("route", format!("container kernel: {e:#}")),
            }
        }
    }
    let first_fail = w.hops.iter().find(|h| h.status == "fail").cloned();
    if let Some(f) = &first_fail {
        problems.push(format!("path fails at {}: {}", f.step, f.detail));
    }
    Ok(PathReport {
        desired_state: ctx.desired_state(),
        from: from.to_string(),
        to: to.to_string(),
        protocol: proto.name().into(),
        port,
        result: if first_fail.is_some() { "fail" } else { "ok" }.into(),
        failed_step: first_fail.as_ref().map(|h| h.step.clone()),
        reason: first_fail.map(|h| h.detail),
        hops: w.hops,
        problems,
    })
}

fn walk(
    ctx: &Ctx,
    t: &Tables,
    from: &str,
    host: &str,
    port: u16,
    proto: Proto,
    w: &mut Walk,
) -> Result<()> {
    // Source: a local container (any of its endpoints names it).
    let Some(src) = t.locals.iter().find(|e| {
        e.id == from
            || e.spec.name == from
            || e.spec.netns.as_os_str() == from
            || e.spec.netns.file_name().is_some_and(|f| f == from)
    }) else {
        w.fail(
            "source",
            format!("{from:?} is not a local endpoint (id, container name or netns) on this node"),
        );
        return Ok(());
    };
    let netns = src.spec.netns.clone();
    let src_eps: Vec<&EndpointView> = t.locals.iter().filter(|e| e.spec.netns == netns).collect();
    let src_nets: Vec<&str> = src_eps.iter().map(|e| e.spec.network.as_str()).collect();
    w.ok(
        "source",
        format!(
            "{} ({}) in {} on networks {}",
            src.spec.name,
            src.id,
            netns.display(),
            src_nets.join(", ")
        ),
    );

    // DNS.
    let ip: Ipv4Addr = match host.parse() {
        Ok(ip) => {
            w.info("dns", format!("{ip} given: no lookup"));
            ip
        }
        Err(_) => {
            let d: DnsView = ctx.get(&format!(
                "/v1/dns?container={}&name={}",
                qenc(&src.id),
                qenc(host)
            ))?;
            let a = d.query.context("dns view without an answer")?;
            match a.source.as_str() {
                "netd" if !a.ips.is_empty() => {
                    let ips: Vec<String> = a.ips.iter().map(Ipv4Addr::to_string).collect();
                    w.ok("dns", format!("{host} -> {} ({})", ips.join(" "), a.reason));
                    a.ips[0]
                }
                "netd" => {
                    w.fail(
                        "dns",
                        format!("{host} is a service with no enabled task: the answer is empty"),
                    );
                    return Ok(());
                }
                _ => {
                    // Known elsewhere on this node? Then it is a network the container lacks.
                    let all: DnsView = ctx.get(&format!("/v1/dns?name={}", qenc(host)))?;
                    let lname = host.trim_end_matches('.').to_ascii_lowercase();
                    let nets: Vec<String> = all
                        .records
                        .iter()
                        .filter(|r| r.name == lname)
                        .map(|r| r.network.clone())
                        .collect();
                    if !nets.is_empty() {
                        w.fail("dns", format!("{host} is a name on network {} which {} is not attached to (no shared network): netd {} it", nets.join(", "), src.spec.name, if a.source == "forwarded" { "forwards the query upstream instead of answering" } else { "does not answer" }));
                    } else {
                        w.fail("dns", format!("{host}: {}", a.reason));
                    }
                    return Ok(());
                }
            }
        }
    };

    // Load balancer: is it a VIP?
    let vip_of = |s: &&ServiceView| s.vips.iter().any(|v| v.vip == Some(ip));
    let targets: Vec<Ipv4Addr> = match t.services.iter().find(vip_of) {
        None => vec![ip],
        Some(svc) => {
            let vnet = svc
                .vips
                .iter()
                .find(|v| v.vip == Some(ip))
                .map(|v| v.network.clone())
                .unwrap_or_default();
            if !src_nets.contains(&vnet.as_str()) {
                w.fail(
                    "load_balancer",
                    format!(
                        "{ip} is the VIP of {} on network {vnet}, which {} is not attached to",
                        svc.name, src.spec.name
                    ),
                );
                return Ok(());
            }
            let Some(f) = svc
                .frontends
                .iter()
                .find(|f| f.vip == ip && f.port == port && f.protocol == proto.name())
            else {
                w.fail("load_balancer", format!("service {} has no port {port}/{} on VIP {ip}: nothing translates the connection, it goes unanswered", svc.name, proto.name()));
                return Ok(());
            };
            if !lb_hop(ctx, svc, f, proto, &netns, w)? {
                return Ok(());
            }
            f.backends
                .iter()
                .filter_map(|b| b.split(':').next()?.parse().ok())
                .collect()
        }
    };
    for target in targets {
        overlay_leg(ctx, t, &src_eps, &netns, target, w)?;
        if w.failed() {
            break;
        }
    }
    Ok(())
}

/// The LB hop: backends wanted and what the kernel translates with. False when it fails.
fn lb_hop(
    ctx: &Ctx,
    svc: &ServiceView,
    f: &FrontendView,
    proto: Proto,
    netns: &std::path::Path,
    w: &mut Walk,
) -> Result<bool> {
    if f.backends.is_empty() {
        if f.draining.is_empty() {
            w.fail(
                "load_balancer",
                format!(
                    "{}: service {} has no task: connections are refused",
                    f.frontend, svc.name
                ),
            );
        } else {
            w.fail(
                "load_balancer",
                format!(
                    "{}: all {} backends of {} are draining ({}): new connections are refused",
                    f.frontend,
                    f.draining.len(),
                    svc.name,
                    f.draining.join(" ")
                ),
            );
        }
        return Ok(false);
    }
    match ctx.lb_backend().as_str() {
        "ebpf" => {
            let dir = ctx.lb_pin_dir().unwrap_or_default();
            let fe = Frontend {
                vip: f.vip,
                port: f.port,
                proto,
            };
            let k = PinnedMaps::open(&dir).and_then(|m| m.frontend(&fe));
            match k {
                Err(e) => {
                    w.fail(
                        "load_balancer",
                        format!("cannot read the LB maps under {}: {e:#}", dir.display()),
                    );
                    return Ok(false);
                }
                Ok(None) => {
                    w.fail("load_balancer", format!("{}: no lb_services entry in the kernel (drift): the socket LB does not translate, the connection goes to the VIP and is unanswered", f.frontend));
                    return Ok(false);
                }
                Ok(Some(k)) if k.backend_count == 0 || k.maglev.filled == 0 => {
                    w.fail(
                        "load_balancer",
                        format!(
                            "{}: the kernel holds no backend for it: connections are refused",
                            f.frontend
                        ),
                    );
                    return Ok(false);
                }
                Ok(Some(k)) => {
                    let bs: Vec<String> = k
                        .backends
                        .iter()
                        .map(|b| format!("{}:{}", b.ip, b.port))
                        .collect();
                    w.ok("load_balancer", format!("eBPF socket LB: {} -> one of {} (Maglev on the socket cookie; slot {}, {}/{} filled{})", f.frontend, bs.join(" "), k.slot, k.maglev.filled, k.maglev.slots, if k.maglev.dangling > 0 { format!(", {} DANGLING", k.maglev.dangling) } else { String::new() }));
                }
            }
        }
        "nftables" => {
            let out = crate::kernel::cmd::run(
                &Ns::path(netns),
                "nft",
                &[
                    "list",
                    "chain",
                    "ip",
                    crate::lb::nft::TABLE,
                    &crate::lb::nft::chain(&Frontend {
                        vip: f.vip,
                        port: f.port,
                        proto,
                    }),
                ],
            );
            match out {
                Err(_) => {
                    w.fail(
                        "load_balancer",
                        format!(
                            "{}: no nftables service chain in the container (drift)",
                            f.frontend
                        ),
                    );
                    return Ok(false);
                }
                Ok(_) => w.ok(
                    "load_balancer",
                    format!(
                        "nftables DNAT: {} -> one of {} (random)",
                        f.frontend,
                        f.backends.join(" ")
                    ),
                ),
            }
        }
        "ipvs" => {
            let key = crate::kernel::ipvs::ServiceKey {
                addr: f.vip,
                port: f.port,
                protocol: proto.number(),
            };
            let dests = crate::kernel::netns::in_netns(netns, || {
                crate::kernel::ipvs::Ipvs::open()?.dests(&key)
            });
            match dests {
                Err(e) => {
                    w.fail(
                        "load_balancer",
                        format!(
                            "{}: no IPVS service in the container (drift): {e:#}",
                            f.frontend
                        ),
                    );
                    return Ok(false);
                }
                Ok(ds) => {
                    let bs: Vec<String> = ds
                        .iter()
                        .map(|d| {
                            format!(
                                "{}:{} (weight {}, {} active, {} inactive)",
                                d.addr, d.port, d.weight, d.active_conns, d.inactive_conns
                            )
                        })
                        .collect();
                    w.ok(
                        "load_balancer",
                        format!("IPVS NAT: {} -> one of {}", f.frontend, bs.join(", ")),
                    );
                }
            }
        }
        other => {
            w.fail(
                "load_balancer",
                format!("lb_backend is {other}: VIPs are not translated on this node"),
            );
            return Ok(false);
        }
    }
    w.info(
        "backend",
        format!(
            "checking the path to each of the {} active backends",
            f.backends.len()
        ),
    );
    Ok(true)
}

/// Container → target over the overlay: route, then the local bridge or neighbor → FDB → VTEP.
fn overlay_leg(
    ctx: &Ctx,
    t: &Tables,
    src_eps: &[&EndpointView],
    netns: &std::path::Path,
    target: Ipv4Addr,
    w: &mut Walk,
) -> Result<()> {
    let on = src_eps.iter().find_map(|e| {
        let n = t.networks.iter().find(|n| n.name == e.spec.network)?;
        n.spec.subnet.contains(&target).then_some((*e, n))
    });
    let route = kernel::route_get(&Ns::path(netns), target);
    let Some((ep, net)) = on else {
        if let Some(other) = t.networks.iter().find(|n| n.spec.subnet.contains(&target)) {
            w.fail(
                "route",
                format!(
                    "{target} is on network {} ({}), which the container is not attached to",
                    other.name, other.spec.subnet
                ),
            );
            return Ok(());
        }
        match route {
            Ok(r) => w.info("egress", format!("{target} is outside the container's overlays: leaves via {}{} (egress, masqueraded)", r.dev, r.gateway.map(|g| format!(" gateway {g}")).unwrap_or_default())),
            Err(e) => w.fail("route", format!("no route to {target} in the container: {e:#}")),
        }
        return Ok(());
    };
    match route {
        Ok(r) if r.dev == ep.spec.ifname => w.ok(
            "route",
            format!("{target} via {} (network {})", r.dev, net.name),
        ),
        Ok(r) => {
            w.fail(
                "route",
                format!(
                    "{target} leaves the container via {}, not {} of network {}",
                    r.dev, ep.spec.ifname, net.name
                ),
            );
            return Ok(());
        }
        Err(e) => {
            w.fail(
                "route",
                format!("no route to {target} in the container: {e:#}"),
            );
            return Ok(());
        }
    }
    if let Some(l) = t
        .locals
        .iter()
        .find(|e| e.spec.network == net.name && e.ip == target)
    {
        let (_, ports) =
            kernel::sandbox_links(&net.sandbox, &crate::reconcile::vxlan_name(net.spec.vni))?;
        let he = crate::reconcile::host_end(&l.id);
        if ports.contains(&he) {
            w.ok(
                "bridge",
                format!(
                    "{target} is {} on this node: br0 in {} -> {he}",
                    l.spec.name, net.sandbox
                ),
            );
        } else {
            w.fail(
                "bridge",
                format!(
                    "{target} is {} on this node but its veth {he} is not on br0 in {}",
                    l.spec.name, net.sandbox
                ),
            );
        }
        return Ok(());
    }
    let Some(r) = t
        .remotes
        .iter()
        .find(|e| *e.network == *net.name && e.ip == target)
    else {
        w.fail("neighbor", format!("no endpoint has {target} on network {} (not local, not learnt by gossip): ARP gets no answer", net.name));
        return Ok(());
    };
    let vx = crate::reconcile::vxlan_name(net.spec.vni);
    let (fdb, neighs) = kernel::fdb_neigh(&net.sandbox, &vx)?;
    let mac = parse_mac(&r.mac).unwrap_or_default();
    match neighs.get(&target) {
        Some(m) if *m == mac => w.ok(
            "neighbor",
            format!(
                "{target} -> {} on {vx} ({} on node {})",
                r.mac, r.name, r.node
            ),
        ),
        Some(m) => {
            w.fail(
                "neighbor",
                format!(
                    "{target} -> {} on {vx}, but {} has {}",
                    fmt_mac(m),
                    r.name,
                    r.mac
                ),
            );
            return Ok(());
        }
        None => {
            w.fail(
                "neighbor",
                format!(
                    "no neighbor entry for {target} on {vx}: ARP from the container gets no answer"
                ),
            );
            return Ok(());
        }
    }
    match fdb.get(&mac) {
        Some(v) if *v == r.vtep => w.ok("fdb", format!("{} -> dst {v} on {vx}", r.mac)),
        Some(v) => {
            w.fail(
                "fdb",
                format!(
                    "{} -> dst {v} on {vx}, but node {} is at {}: frames go to the wrong VTEP",
                    r.mac, r.node, r.vtep
                ),
            );
            return Ok(());
        }
        None => {
            w.fail(
                "fdb",
                format!(
                    "no FDB entry for {} on {vx}: frames to {target} are dropped (no flooding)",
                    r.mac
                ),
            );
            return Ok(());
        }
    }
    let live = ctx
        .node
        .as_ref()
        .ok()
        .and_then(|n| n.peers.iter().find(|p| *p.node == *r.node))
        .map(|p| p.live);
    match live {
        Some(false) => {
            w.fail(
                "vtep",
                format!("node {} ({}) is dead for gossip", r.node, r.vtep),
            );
            return Ok(());
        }
        _ => w.ok(
            "vtep",
            format!(
                "node {} at {} (VXLAN udp/{})",
                r.node,
                r.vtep,
                ctx.node.as_ref().map(|n| n.data_port).unwrap_or(4789)
            ),
        ),
    }
    match kernel::route_get(&Ns::Node, r.vtep) {
        Ok(u) => w.ok(
            "underlay",
            format!(
                "{} via {}{}",
                r.vtep,
                u.dev,
                u.gateway
                    .map(|g| format!(" gateway {g}"))
                    .unwrap_or_default()
            ),
        ),
        Err(e) => {
            w.fail(
                "underlay",
                format!("no underlay route to VTEP {}: {e:#}", r.vtep),
            );
            return Ok(());
        }
    }
    if net.spec.encrypted {
        w.info(
            "encryption",
            format!(
                "network {} is encrypted (IPsec; see netd inspect crypto)",
                net.name
            ),
        );
    } else {
        w.info(
            "encryption",
            format!("not encrypted (network {} is not encrypted)", net.name),
        );
    }
    Ok(())
}

impl View for PathReport {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "path {} -> {} ({}/{})",
            self.from, self.to, self.port, self.protocol
        );
        for h in &self.hops {
            let mark = match h.status.as_str() {
                "ok" => "ok  ",
                "fail" => "FAIL",
                _ => "    ",
            };
            let _ = writeln!(out, "  {mark} {:<14} {}", h.step, h.detail);
        }
        match &self.failed_step {
            None => {
                let _ = writeln!(out, "result: ok");
            }
            Some(s) => {
                let _ = writeln!(
                    out,
                    "result: fails at {s}: {}",
                    self.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    fn problems(&self) -> &[String] {
        &self.problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_parses_host_port_proto() {
        assert_eq!(parse_to("web:80").unwrap(), ("web".into(), 80, Proto::Tcp));
        assert_eq!(
            parse_to("10.0.0.2:53/udp").unwrap(),
            ("10.0.0.2".into(), 53, Proto::Udp)
        );
        assert!(parse_to("web")
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT"));
        assert!(parse_to("web:x").unwrap_err().to_string().contains("port"));
        assert!(parse_to("web:80/sctp")
            .unwrap_err()
            .to_string()
            .contains("protocol"));
    }
}
