//! Published ports in the kernel: one nftables table `ip netd_ingress` in the node's
//! namespace (DNAT of published ports into each service's Maglev table, SNAT of ingress
//! flows), the node namespace's name for its ingress leg, and the return path in the
//! namespaces of tasks that serve `preserve_client_ip` ports.

use super::cmd::{batch, run, with_stdin, Ns};
use crate::ingress::model::{IngressModel, Published, ReturnPath, Target};
use crate::lb::maglev;
use crate::lb::model::{Backend, Proto};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::Path;

pub const TABLE: &str = "netd_ingress";
/// Maglev table size for published ports (prime): 1021 map elements per port.
pub const MAGLEV_M: usize = 1021;
/// jhash seed, fixed: every node computes the same slot for the same flow.
pub const SEED: u32 = 0x6e65_7464; // "netd"
/// Table in tasks' namespaces steering replies of un-SNATed flows.
pub const RETURN_TABLE: &str = "netd_ingress_rt";
const RULE_PRIORITY: &str = "90";
const UDP_RULE_PRIORITY: &str = "91";

/// The node namespace's name under /run/netns, so the ingress leg can be created in it like
/// in a container (`nd-<node>-host`; not swept: not all digits).
pub fn node_netns_name(node: &str) -> String {
    format!("nd-{node}-host")
}

/// Names the namespace netd runs in (bind mount of /proc/self/ns/net) if not named yet.
pub fn name_node_netns(name: &str) -> Result<()> {
    if Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    run(&Ns::Node, "ip", &["netns", "attach", name, &pid]).map(|_| ())
}

fn dnat_rule(p: &Published, t: &Target) -> Option<String> {
    let backends: Vec<Backend> = t.backends.iter().copied().collect();
    if backends.is_empty() {
        return None; // the reservation socket refuses TCP (RST); UDP goes nowhere
    }
    let proto = p.proto.name();
    let slots = maglev::table(&backends, MAGLEV_M);
    let mut map = String::new();
    for (i, b) in slots.iter().enumerate() {
        let be = backends[*b as usize];
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(map, "{sep}{i} : {} . {}", be.ip, be.port);
    }
    Some(format!(
        "    {proto} dport {} dnat ip to jhash ip saddr . {proto} sport mod {MAGLEV_M} seed {SEED:#x} map {{ {map} }}\n",
        p.port
    ))
}

/// The whole table, loaded in one transaction (flush + define).
pub fn ruleset(m: &IngressModel) -> String {
    let mut published = String::new();
    for (p, t) in m.ingress.iter().chain(&m.host) {
        if let Some(r) = dnat_rule(p, t) {
            published.push_str(&r);
        }
    }
    let mut snat = String::new();
    if let Some(leg) = &m.leg_ifname {
        for (p, t) in &m.ingress {
            if !t.preserve_client_ip {
                let _ = writeln!(
                    snat,
                    "    oifname \"{leg}\" ct status dnat meta l4proto {} ct original proto-dst {} masquerade",
                    p.proto.name(),
                    p.port
                );
            }
        }
    }
    format!(
        "table ip {TABLE} {{}}
flush table ip {TABLE}
table ip {TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump published
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump published
  }}
  chain published {{
{published}  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
{snat}    ip saddr 127.0.0.0/8 ct status dnat masquerade
  }}
}}
"
    )
}

pub fn apply(ruleset: &str) -> Result<()> {
    with_stdin(&Ns::Node, "nft", &["-f", "-"], ruleset).context("loading nft table ip netd_ingress")
}

pub fn present() -> bool {
    run(&Ns::Node, "nft", &["list", "tables", "ip"])
        .is_ok_and(|out| out.lines().any(|l| l.trim() == format!("table ip {TABLE}")))
}

/// Published ports the table in the kernel DNATs (`tcp dport N dnat ...` lines).
pub fn programmed_ports() -> Result<std::collections::BTreeSet<Published>> {
    let text = run(
        &Ns::Node,
        "nft",
        &["list", "chain", "ip", TABLE, "published"],
    )?;
    Ok(parse_programmed(&text))
}

fn parse_programmed(text: &str) -> std::collections::BTreeSet<Published> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let proto = match w.next()? {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => return None,
            };
            (w.next()? == "dport").then_some(())?;
            let port = w.next()?.parse().ok()?;
            Some(Published { proto, port })
        })
        .collect()
}

pub fn remove() -> Result<()> {
    if present() {
        run(&Ns::Node, "nft", &["delete", "table", "ip", TABLE])?;
    }
    Ok(())
}

/// Localhost clients: a packet from 127.0.0.1 DNATed to a task may leave through `dev`.
pub fn allow_localnet(dev: &str) -> Result<()> {
    let p = format!("/proc/sys/net/ipv4/conf/{dev}/route_localnet");
    std::fs::write(&p, "1").with_context(|| format!("writing {p}"))
}

fn fwmark(leg: Ipv4Addr) -> u32 {
    u32::from(leg)
}

/// The return path in a task's namespace: a new flow arriving on `ifname` is marked (conntrack
/// mark) with the address of the node leg whose MAC sent it; replies carry that mark and are
/// routed back via that leg, so the ingress node can undo its DNAT.
pub fn return_path_ruleset(ifname: &str, legs: &BTreeMap<[u8; 6], Ipv4Addr>) -> String {
    let elems: Vec<String> = legs
        .iter()
        .map(|(mac, ip)| {
            let m: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            format!("{} : {:#x}", m.join(":"), fwmark(*ip))
        })
        .collect();
    let mark_rule = if elems.is_empty() {
        String::new()
    } else {
        format!(
            "    iifname \"{ifname}\" ct state new ct mark set ether saddr map {{ {} }}\n",
            elems.join(", ")
        )
    };
    format!(
        "table ip {RETURN_TABLE} {{}}
flush table ip {RETURN_TABLE}
table ip {RETURN_TABLE} {{
  chain prerouting {{
    type filter hook prerouting priority mangle; policy accept;
{mark_rule}  }}
  chain output {{
    type route hook output priority mangle; policy accept;
    ct mark != 0 meta mark set ct mark
  }}
}}
"
    )
}

/// Route table in tasks' namespaces for the source address of UDP replies.
const UDP_SOURCE_TABLE: u32 = 0x6e64;

/// Installs the return path in `rp`'s namespace: the nft table, one policy rule and route
/// table per node leg (fwmark = the leg's address), and for UDP target ports a rule that
/// makes routing pick the ingress interface's address as the reply's source (a socket bound
/// to 0.0.0.0 would otherwise answer from its default route's address, and the reply would
/// match no conntrack entry); the mark then reroutes it to the right leg.
pub fn apply_return_path(
    rp: &ReturnPath,
    own_leg: Option<Ipv4Addr>,
    legs: &BTreeMap<[u8; 6], Ipv4Addr>,
) -> Result<()> {
    let (netns, ifname) = (rp.netns.as_path(), rp.ifname.as_str());
    let ns = Ns::path(netns);
    with_stdin(&ns, "nft", &["-f", "-"], &return_path_ruleset(ifname, legs))
        .with_context(|| format!("return path table in {}", netns.display()))?;
    // Old rules of ours first, then one rule + table per leg.
    let mut lines = Vec::new();
    for prio in [RULE_PRIORITY, UDP_RULE_PRIORITY] {
        let rules = run(&ns, "ip", &["rule", "show", "priority", prio]).unwrap_or_default();
        let n = rules.lines().filter(|l| !l.trim().is_empty()).count();
        lines.extend(std::iter::repeat_n(format!("rule del priority {prio}"), n));
    }
    for ip in legs.values() {
        let mark = fwmark(*ip);
        lines.push(format!(
            "route replace default via {ip} dev {ifname} table {mark}"
        ));
        lines.push(format!(
            "rule add priority {RULE_PRIORITY} fwmark {mark:#x} table {mark}"
        ));
    }
    if let (Some(leg), false) = (own_leg, rp.udp_ports.is_empty()) {
        lines.push(format!(
            "route replace default via {leg} dev {ifname} table {UDP_SOURCE_TABLE}"
        ));
        for p in &rp.udp_ports {
            lines.push(format!(
                "rule add priority {UDP_RULE_PRIORITY} ipproto udp sport {p} table {UDP_SOURCE_TABLE}"
            ));
        }
    }
    batch(&ns, "ip", &lines).with_context(|| format!("return routes in {}", netns.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_dnats_into_the_maglev_table_and_snats_by_default() {
        let mut m = IngressModel {
            leg_ifname: Some("netd_ingress".into()),
            ..Default::default()
        };
        let p = Published {
            proto: Proto::Tcp,
            port: 8080,
        };
        let mut t = Target::default();
        for i in [5, 6] {
            t.backends.insert(Backend {
                ip: Ipv4Addr::new(10, 255, 0, i),
                port: 80,
            });
        }
        m.ingress.insert(p, t.clone());
        let r = ruleset(&m);
        assert!(r.contains("tcp dport 8080 dnat ip to jhash ip saddr . tcp sport mod 1021 seed 0x6e657464 map { 0 : 10.255.0."), "{r}");
        assert!(r.contains(" 1020 : 10.255.0."), "{r}");
        assert!(r.contains("ct original proto-dst 8080 masquerade"), "{r}");
        t.preserve_client_ip = true;
        m.ingress.insert(p, t);
        assert!(!ruleset(&m).contains("proto-dst 8080 masquerade"));
        assert_eq!(parse_programmed(&ruleset(&m)), [p].into());
    }

    #[test]
    fn return_path_marks_by_leg_mac() {
        let legs = BTreeMap::from([([2, 0x42, 10, 255, 0, 2], Ipv4Addr::new(10, 255, 0, 2))]);
        let r = return_path_ruleset("eth1", &legs);
        assert!(r.contains("iifname \"eth1\" ct state new ct mark set ether saddr map { 02:42:0a:ff:00:02 : 0xaff0002 }"), "{r}");
    }
}
