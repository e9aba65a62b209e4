//! nftables LB (kube-proxy's nftables mode, per container): in every local container namespace
//! a table `ip netd_lb` whose nat output chain looks up `daddr . l4proto . dport` in a verdict
//! map and jumps to the service's chain, which DNATs to `numgen random mod N` of its enabled
//! backends (or rejects when there are none). conntrack keeps established flows on their
//! backend (drain, removal) and un-NATs replies, so replies and `getpeername` show the VIP.
//!
//! ICMP echo to a VIP whose service has an enabled backend is redirected to the container's
//! own stack (set `pings`), which answers; conntrack makes the reply come from the VIP.
//!
//! A new namespace (or one seen first after a start) gets the whole table in one transaction;
//! afterwards a changed service rewrites only its own chain and map element.

use super::model::{Frontend, LbModel, Proto, Service};
use super::LoadBalancer;
use crate::kernel::cmd::{run, with_stdin, Ns};
use crate::kernel::conntrack;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const TABLE: &str = "netd_lb";

#[derive(Default)]
pub struct NftLb {
    /// Per container namespace: the services programmed there.
    programmed: BTreeMap<PathBuf, BTreeMap<Frontend, Service>>,
}

impl NftLb {
    pub fn new() -> NftLb {
        NftLb::default()
    }
}

pub fn chain(fe: &Frontend) -> String {
    format!(
        "svc_{:08x}_{}_{}",
        u32::from(fe.vip),
        fe.port,
        fe.proto.name()
    )
}

fn element(fe: &Frontend) -> String {
    format!("{} . {} . {}", fe.vip, fe.proto.name(), fe.port)
}

/// The service chain's one rule.
fn rule(fe: &Frontend, svc: &Service) -> String {
    if svc.backends.is_empty() {
        return match fe.proto {
            Proto::Tcp => "reject with tcp reset".into(),
            Proto::Udp => "reject".into(),
        };
    }
    let map: Vec<String> = svc
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {}", b.ip))
        .collect();
    // The VIP port is the target port: only the address changes.
    format!(
        "dnat to numgen random mod {} map {{ {} }}",
        svc.backends.len(),
        map.join(", ")
    )
}

/// VIPs answering ICMP echo: those with an enabled backend on some port.
fn pings(services: &BTreeMap<Frontend, Service>) -> BTreeSet<Ipv4Addr> {
    services
        .iter()
        .filter(|(_, s)| !s.backends.is_empty())
        .map(|(fe, _)| fe.vip)
        .collect()
}

/// The whole table, replacing whatever is there, in one transaction.
pub fn full_table(services: &BTreeMap<Frontend, Service>) -> String {
    let mut s = format!(
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         \tmap services {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n\
         \tset pings {{ type ipv4_addr; }}\n\
         \tchain output {{ type nat hook output priority -100; policy accept; \
         ip daddr . meta l4proto . th dport vmap @services; \
         ip daddr @pings icmp type echo-request redirect; }}\n"
    );
    for (fe, svc) in services {
        let _ = writeln!(s, "\tchain {} {{ {}; }}", chain(fe), rule(fe, svc));
    }
    s.push_str("}\n");
    for fe in services.keys() {
        let _ = writeln!(
            s,
            "add element ip {TABLE} services {{ {} : goto {} }}",
            element(fe),
            chain(fe)
        );
    }
    for vip in pings(services) {
        let _ = writeln!(s, "add element ip {TABLE} pings {{ {vip} }}");
    }
    s
}

/// The changes from `old` to `new` (one transaction).
pub fn delta(old: &BTreeMap<Frontend, Service>, new: &BTreeMap<Frontend, Service>) -> String {
    let mut s = String::new();
    for (fe, svc) in new {
        if old.get(fe) == Some(svc) {
            continue;
        }
        let c = chain(fe);
        let _ = writeln!(s, "add chain ip {TABLE} {c}\nflush chain ip {TABLE} {c}");
        let _ = writeln!(s, "add rule ip {TABLE} {c} {}", rule(fe, svc));
        if !old.contains_key(fe) {
            let _ = writeln!(
                s,
                "add element ip {TABLE} services {{ {} : goto {c} }}",
                element(fe)
            );
        }
    }
    let (was, is) = (pings(old), pings(new));
    for vip in is.difference(&was) {
        let _ = writeln!(s, "add element ip {TABLE} pings {{ {vip} }}");
    }
    for vip in was.difference(&is) {
        let _ = writeln!(s, "delete element ip {TABLE} pings {{ {vip} }}");
    }
    for fe in old.keys().filter(|fe| !new.contains_key(fe)) {
        let _ = writeln!(
            s,
            "delete element ip {TABLE} services {{ {} }}\ndelete chain ip {TABLE} {}",
            element(fe),
            chain(fe)
        );
    }
    s
}

/// UDP flows (frontend, backend) whose backend left the service between `old` and `new`
/// (drained backends stay: their flows continue).
fn removed_udp(
    old: &BTreeMap<Frontend, Service>,
    new: &BTreeMap<Frontend, Service>,
) -> Vec<(Frontend, Ipv4Addr)> {
    let mut out = Vec::new();
    for (fe, was) in old.iter().filter(|(fe, _)| fe.proto == Proto::Udp) {
        let is = new.get(fe);
        for b in was.backends.iter().chain(&was.drained) {
            let kept = is.is_some_and(|s| s.backends.contains(b) || s.drained.contains(b));
            if !kept {
                out.push((*fe, b.ip));
            }
        }
    }
    out
}

/// conntrack keeps a UDP flow on its backend: once that backend is gone the flow would
/// black-hole until the entry times out, so its entries are deleted (the next packet is DNATed
/// afresh).
fn forget_removed_udp(
    ns: &Ns,
    old: &BTreeMap<Frontend, Service>,
    new: &BTreeMap<Frontend, Service>,
) -> Result<()> {
    for (fe, backend) in removed_udp(old, new) {
        conntrack::forget_udp_flows_via(ns, fe.vip, fe.port, backend)?;
    }
    Ok(())
}

impl LoadBalancer for NftLb {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply(&mut self, want: &LbModel) -> Result<()> {
        let mut first_err = None;
        for (netns, networks) in &want.clients {
            let services: BTreeMap<Frontend, Service> = want
                .services_for(networks)
                .map(|(fe, s)| (*fe, s.clone()))
                .collect();
            let ns = Ns::path(netns);
            let r = match self.programmed.get(netns) {
                Some(old) if *old == services => continue,
                Some(old) => {
                    let d = delta(old, &services);
                    with_stdin(&ns, "nft", &["-f", "-"], &d)
                        .and_then(|()| forget_removed_udp(&ns, old, &services))
                }
                None => with_stdin(&ns, "nft", &["-f", "-"], &full_table(&services)),
            };
            match r {
                Ok(()) => {
                    self.programmed.insert(netns.clone(), services);
                }
                Err(e) => {
                    // Next pass loads the whole table again.
                    self.programmed.remove(netns);
                    first_err.get_or_insert(e);
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .programmed
            .keys()
            .filter(|n| !want.clients.contains_key(*n))
            .cloned()
            .collect();
        for netns in gone {
            // The namespace may be gone with its container: nothing to remove then.
            if netns.exists() {
                let _ = run(&Ns::path(&netns), "nft", &["delete", "table", "ip", TABLE]);
            }
            self.programmed.remove(&netns);
        }
        first_err.map_or(Ok(()), Err)
    }

    fn current(&self) -> LbModel {
        let mut m = LbModel::default();
        for svcs in self.programmed.values() {
            for (fe, s) in svcs {
                m.services.insert(*fe, s.clone());
            }
        }
        for (ns, svcs) in &self.programmed {
            let nets: BTreeSet<String> = svcs.values().map(|s| s.network.clone()).collect();
            m.clients.insert(ns.clone(), nets);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::model::Backend;

    fn fe(port: u16) -> Frontend {
        Frontend {
            vip: Ipv4Addr::new(10, 1, 0, 100),
            port,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn delta_touches_only_the_changed_service() {
        let b = |i| Backend {
            ip: Ipv4Addr::new(10, 1, 0, i),
            port: 80,
        };
        let svc = |bs: &[u8]| Service {
            network: "web".into(),
            backends: bs.iter().map(|i| b(*i)).collect(),
            ..Service::default()
        };
        let old = BTreeMap::from([(fe(80), svc(&[2, 3])), (fe(81), svc(&[2]))]);
        let new = BTreeMap::from([(fe(80), svc(&[2, 3, 4])), (fe(81), svc(&[2]))]);
        let d = delta(&old, &new);
        assert!(d.contains("svc_0a010064_80_tcp"), "{d}");
        assert!(!d.contains("_81_"), "{d}");
        assert!(d.contains("numgen random mod 3"), "{d}");
        let gone = delta(&old, &BTreeMap::new());
        assert!(
            gone.contains("delete chain ip netd_lb svc_0a010064_81_tcp"),
            "{gone}"
        );
        let empty = BTreeMap::from([(fe(80), svc(&[]))]);
        assert!(full_table(&empty).contains("reject with tcp reset"));
    }

    #[test]
    fn removed_udp_backends_only() {
        let b = |i| Backend {
            ip: Ipv4Addr::new(10, 1, 0, i),
            port: 53,
        };
        let udp = Frontend {
            proto: Proto::Udp,
            ..fe(53)
        };
        let svc = |up: &[u8], drained: &[u8]| Service {
            network: "web".into(),
            backends: up.iter().map(|i| b(*i)).collect(),
            drained: drained.iter().map(|i| b(*i)).collect(),
        };
        let old = BTreeMap::from([(udp, svc(&[2, 3, 4], &[])), (fe(80), svc(&[2], &[]))]);
        // 3 drained (its flows continue), 4 removed; the TCP service is not conntrack's to touch.
        let new = BTreeMap::from([(udp, svc(&[2], &[3]))]);
        assert_eq!(removed_udp(&old, &new), vec![(udp, b(4).ip)]);
        // The whole service gone: every backend's flows go.
        assert_eq!(removed_udp(&old, &BTreeMap::new()).len(), 3);
    }
}
