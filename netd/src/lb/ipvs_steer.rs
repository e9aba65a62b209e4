//! What IPVS does not do by itself and the VIP semantics require, for the IPVS LB: a small
//! nftables table `ip netd_ipvs` in every local container namespace that
//! - answers ICMP echo to a VIP whose service has an enabled backend (set `pings`: redirected to
//!   the container's own stack, which answers; conntrack makes the reply come from the VIP);
//!   IPVS balances TCP and UDP only, a ping to a VIP would go unanswered;
//! - refuses a TCP connect to a frontend without an enabled backend at once (set `refuse`:
//!   the SYN gets a reset, ECONNREFUSED), before IPVS's LOCAL_OUT hook (priority -99) sees it.
//!   Only the SYN: connections already on a drained backend continue through IPVS.
//!
//! The sets change only when a frontend gains its first or loses its last enabled backend (or
//! comes or goes): most backend changes cost no nft process at all.

use super::model::{Frontend, Proto, Service};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

pub const TABLE: &str = "netd_ipvs";

/// The contents of the two sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Steer {
    pub pings: BTreeSet<Ipv4Addr>,
    pub refuse: BTreeSet<(Ipv4Addr, u16)>,
}

impl Steer {
    pub fn of(services: &BTreeMap<Frontend, Service>) -> Steer {
        let mut s = Steer::default();
        for (fe, svc) in services {
            if !svc.backends.is_empty() {
                s.pings.insert(fe.vip);
            } else if fe.proto == Proto::Tcp {
                s.refuse.insert((fe.vip, fe.port));
            }
        }
        s
    }
}

/// The whole table, replacing whatever is there, in one transaction.
pub fn full_table(s: &Steer) -> String {
    let mut t = format!(
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         \tset pings {{ type ipv4_addr; }}\n\
         \tset refuse {{ type ipv4_addr . inet_service; }}\n\
         \tchain ping {{ type nat hook output priority -100; policy accept; \
         ip daddr @pings icmp type echo-request redirect; }}\n\
         \tchain refuse {{ type filter hook output priority -150; policy accept; \
         ip daddr . tcp dport @refuse tcp flags & (syn | ack) == syn reject with tcp reset; }}\n}}\n"
    );
    t.push_str(&delta(&Steer::default(), s));
    t
}

/// The element changes from `old` to `new` (one transaction; empty when nothing changed).
pub fn delta(old: &Steer, new: &Steer) -> String {
    let mut t = String::new();
    for vip in new.pings.difference(&old.pings) {
        let _ = writeln!(t, "add element ip {TABLE} pings {{ {vip} }}");
    }
    for vip in old.pings.difference(&new.pings) {
        let _ = writeln!(t, "delete element ip {TABLE} pings {{ {vip} }}");
    }
    for (vip, port) in new.refuse.difference(&old.refuse) {
        let _ = writeln!(t, "add element ip {TABLE} refuse {{ {vip} . {port} }}");
    }
    for (vip, port) in old.refuse.difference(&new.refuse) {
        let _ = writeln!(t, "delete element ip {TABLE} refuse {{ {vip} . {port} }}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::model::Backend;

    #[test]
    fn pings_while_enabled_refuses_tcp_without() {
        let vip = Ipv4Addr::new(10, 1, 0, 250);
        let fe = |port, proto| Frontend { vip, port, proto };
        let b = Backend {
            ip: Ipv4Addr::new(10, 1, 0, 2),
            port: 80,
        };
        let up = Service {
            backends: [b].into(),
            ..Service::default()
        };
        let drained = Service {
            drained: [b].into(),
            ..Service::default()
        };
        let s = Steer::of(&BTreeMap::from([
            (fe(80, Proto::Tcp), up.clone()),
            (fe(53, Proto::Udp), up),
        ]));
        assert_eq!(s.pings, [vip].into());
        assert!(s.refuse.is_empty());
        let all_drained = BTreeMap::from([
            (fe(80, Proto::Tcp), drained.clone()),
            (fe(53, Proto::Udp), drained),
        ]);
        let n = Steer::of(&all_drained);
        assert!(n.pings.is_empty());
        assert_eq!(n.refuse, [(vip, 80)].into(), "UDP is left to IPVS");
        let d = delta(&s, &n);
        assert_eq!(
            d,
            "delete element ip netd_ipvs pings { 10.1.0.250 }\n\
             add element ip netd_ipvs refuse { 10.1.0.250 . 80 }\n"
        );
        assert!(delta(&n, &n).is_empty());
        assert!(full_table(&n).contains("refuse { 10.1.0.250 . 80 }"));
    }
}
