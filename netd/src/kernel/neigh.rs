//! Static FDB and neighbor entries on a VXLAN device: how remote endpoints are reached without
//! flood-and-learn. They are read with route-netlink dumps (`rtnl`), in-process: at 100k
//! remote endpoints `bridge -j fdb show` and `ip -j neigh show` cost seconds of JSON a pass.
//! They are changed with `bridge -batch` / `ip -batch`.

use super::cmd::{batch, Ns};
use super::netns;
use super::rtnl::{self, Neigh};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One remote endpoint as the kernel needs it: IP → MAC (neighbor), MAC → VTEP (FDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub vtep: Ipv4Addr,
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An FDB entry with a remote VTEP (an IPv4 `NDA_DST`) and a real MAC: MAC → VTEP. The
/// bridge's own entries for the device (no destination) and the all-zero MAC (the flood list)
/// are not remote endpoints.
fn fdb_entry(n: &Neigh<'_>) -> Option<([u8; 6], Ipv4Addr)> {
    let mac: [u8; 6] = n.lladdr?.try_into().ok()?;
    let vtep: [u8; 4] = n.dst?.try_into().ok()?;
    (mac != [0; 6]).then(|| (mac, vtep.into()))
}

/// A resolved neighbor: IP → MAC. Like `ip neigh show`, NOARP entries (the kernel's own
/// multicast and broadcast mappings) and state-less ones are not listed.
fn neigh_entry(n: &Neigh<'_>) -> Option<(Ipv4Addr, [u8; 6])> {
    let listed = n.state & 0xff & !rtnl::NUD_NOARP != 0
        || n.flags & (rtnl::NTF_PROXY | rtnl::NTF_EXT_LEARNED) != 0;
    let ip: [u8; 4] = n.dst?.try_into().ok()?;
    let mac: [u8; 6] = n.lladdr?.try_into().ok()?;
    listed.then(|| (ip.into(), mac))
}

/// Dumps `family`'s neighbor entries of `dev` in `sandbox` over route netlink.
fn dump(sandbox: &Ns, dev: &str, family: u8, each: impl FnMut(&Neigh<'_>) + Send) -> Result<()> {
    netns::enter(sandbox, || {
        let ifindex = rtnl::ifindex(dev)?;
        rtnl::Socket::open()?.neighbors(family, ifindex, each)
    })
}

/// FDB entries with a remote destination on `dev`: MAC → VTEP.
pub fn fdb(sandbox: &Ns, dev: &str) -> Result<BTreeMap<[u8; 6], Ipv4Addr>> {
    let mut out = BTreeMap::new();
    dump(sandbox, dev, rtnl::AF_BRIDGE, |n| out.extend(fdb_entry(n)))
        .with_context(|| format!("reading the FDB of {dev} in {sandbox}"))?;
    Ok(out)
}

/// Neighbor entries on `dev`: IP → MAC.
pub fn neighbors(sandbox: &Ns, dev: &str) -> Result<BTreeMap<Ipv4Addr, [u8; 6]>> {
    let mut out = BTreeMap::new();
    dump(sandbox, dev, rtnl::AF_INET, |n| out.extend(neigh_entry(n)))
        .with_context(|| format!("reading the neighbors of {dev} in {sandbox}"))?;
    Ok(out)
}

/// Changes to make on one VXLAN device.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NeighPlan {
    pub fdb_set: Vec<([u8; 6], Ipv4Addr)>,
    pub fdb_del: Vec<([u8; 6], Ipv4Addr)>,
    pub neigh_set: Vec<(Ipv4Addr, [u8; 6])>,
    pub neigh_del: Vec<Ipv4Addr>,
}

impl NeighPlan {
    pub fn is_empty(&self) -> bool {
        *self == NeighPlan::default()
    }

    /// Desired `remotes` vs what the kernel holds. With `keep_extra`, entries the kernel has
    /// but nobody asked for are left alone (used right after a restart, before gossip caught up).
    pub fn compute(
        remotes: &[Remote],
        fdb: &BTreeMap<[u8; 6], Ipv4Addr>,
        neigh: &BTreeMap<Ipv4Addr, [u8; 6]>,
        keep_extra: bool,
    ) -> NeighPlan {
        let want_fdb: BTreeMap<[u8; 6], Ipv4Addr> =
            remotes.iter().map(|r| (r.mac, r.vtep)).collect();
        let want_neigh: BTreeMap<Ipv4Addr, [u8; 6]> =
            remotes.iter().map(|r| (r.ip, r.mac)).collect();
        let mut p = NeighPlan::default();
        for (mac, vtep) in &want_fdb {
            if fdb.get(mac) != Some(vtep) {
                if let Some(old) = fdb.get(mac) {
                    p.fdb_del.push((*mac, *old));
                }
                p.fdb_set.push((*mac, *vtep));
            }
        }
        for (ip, mac) in &want_neigh {
            if neigh.get(ip) != Some(mac) {
                p.neigh_set.push((*ip, *mac));
            }
        }
        if !keep_extra {
            for (mac, vtep) in fdb {
                if !want_fdb.contains_key(mac) {
                    p.fdb_del.push((*mac, *vtep));
                }
            }
            for ip in neigh.keys() {
                if !want_neigh.contains_key(ip) {
                    p.neigh_del.push(*ip);
                }
            }
        }
        p
    }
}

pub fn apply(sandbox: &Ns, dev: &str, p: &NeighPlan) -> Result<()> {
    let mut br: Vec<String> = p
        .fdb_del
        .iter()
        .map(|(m, v)| format!("fdb del {} dev {dev} dst {v} self", fmt_mac(m)))
        .collect();
    br.extend(p.fdb_set.iter().map(|(m, v)| {
        format!(
            "fdb replace {} dev {dev} dst {v} self permanent",
            fmt_mac(m)
        )
    }));
    let mut ip: Vec<String> = p
        .neigh_del
        .iter()
        .map(|i| format!("neigh del {i} dev {dev}"))
        .collect();
    ip.extend(p.neigh_set.iter().map(|(i, m)| {
        format!(
            "neigh replace {i} lladdr {} dev {dev} nud permanent",
            fmt_mac(m)
        )
    }));
    batch(sandbox, "bridge", &br)?;
    batch(sandbox, "ip", &ip)
}

/// On the real kernel (root), and the 100k measurement `neigh_dump_bench`.
#[cfg(test)]
#[path = "neigh_kernel_tests.rs"]
mod kernel_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::{self, Attrs};
    use crate::kernel::rtnl::tests::newneigh;

    fn r(ip: u8, vtep: u8) -> Remote {
        Remote {
            ip: Ipv4Addr::new(10, 0, 0, ip),
            mac: [2, 0x42, 10, 0, 0, ip],
            vtep: Ipv4Addr::new(192, 168, 0, vtep),
        }
    }

    #[test]
    fn plan_adds_moves_and_removes() {
        let mut fdb = BTreeMap::new();
        let mut neigh = BTreeMap::new();
        // present and right
        fdb.insert(r(2, 1).mac, r(2, 1).vtep);
        neigh.insert(r(2, 1).ip, r(2, 1).mac);
        // present, wrong VTEP (endpoint moved)
        fdb.insert(r(3, 1).mac, r(3, 1).vtep);
        neigh.insert(r(3, 1).ip, r(3, 1).mac);
        // stale
        fdb.insert(r(9, 1).mac, r(9, 1).vtep);
        neigh.insert(r(9, 1).ip, r(9, 1).mac);
        let want = [r(2, 1), r(3, 2), r(4, 3)];
        let p = NeighPlan::compute(&want, &fdb, &neigh, false);
        assert_eq!(
            p.fdb_set,
            vec![(r(3, 2).mac, r(3, 2).vtep), (r(4, 3).mac, r(4, 3).vtep)]
        );
        assert!(p.fdb_del.contains(&(r(3, 1).mac, r(3, 1).vtep)));
        assert!(p.fdb_del.contains(&(r(9, 1).mac, r(9, 1).vtep)));
        assert_eq!(p.neigh_set, vec![(r(4, 3).ip, r(4, 3).mac)]);
        assert_eq!(p.neigh_del, vec![r(9, 1).ip]);
        let keep = NeighPlan::compute(&want, &fdb, &neigh, true);
        assert!(keep.neigh_del.is_empty());
        assert_eq!(keep.fdb_del, vec![(r(3, 1).mac, r(3, 1).vtep)]);
    }

    /// A dump datagram of the kernel's as `rtnl::Socket::neighbors` sees it: the entries of
    /// `family` on device 7, mapped as `fdb` / `neighbors` map them.
    fn entries<T>(family: u8, msgs: &[Vec<u8>], map: impl Fn(&Neigh<'_>) -> Option<T>) -> Vec<T> {
        let buf: Vec<u8> = msgs
            .iter()
            .flat_map(|m| netlink::tests::msg(28, 1, m))
            .collect();
        let mut out = Vec::new();
        for r in netlink::split(&buf).unwrap() {
            let netlink::Reply::Data { payload, .. } = r else {
                panic!("{r:?}")
            };
            if let Some(n) = rtnl::neigh_of(payload, family, 7).unwrap() {
                out.extend(map(&n));
            }
        }
        out
    }

    #[test]
    fn fdb_keeps_remote_entries_of_the_device() {
        let entry = |ifindex, mac: [u8; 6], dst: Option<[u8; 4]>| {
            let mut a = Attrs::new();
            a.bytes(2, &mac); // NDA_LLADDR
            if let Some(d) = dst {
                a.bytes(1, &d); // NDA_DST
            }
            newneigh(rtnl::AF_BRIDGE, ifindex, rtnl::NUD_PERMANENT, &a)
        };
        let m = r(5, 2).mac;
        let got = entries(
            rtnl::AF_BRIDGE,
            &[
                entry(7, m, Some([192, 168, 0, 2])),
                entry(7, [0; 6], Some([192, 168, 0, 3])), // flood list
                entry(7, [2, 0, 0, 0, 0, 1], None),       // the bridge's, no VTEP
                entry(8, [2, 0, 0, 0, 0, 2], Some([192, 168, 0, 4])), // another device
            ],
            fdb_entry,
        );
        assert_eq!(got, vec![(m, Ipv4Addr::new(192, 168, 0, 2))]);
    }

    #[test]
    fn neighbors_keep_resolved_entries_of_the_device() {
        let entry = |ifindex, state, ip: [u8; 4], mac: Option<[u8; 6]>| {
            let mut a = Attrs::new();
            a.bytes(1, &ip);
            if let Some(m) = mac {
                a.bytes(2, &m);
            }
            newneigh(rtnl::AF_INET, ifindex, state, &a)
        };
        let (a, b) = (r(2, 1), r(3, 1));
        let got = entries(
            rtnl::AF_INET,
            &[
                entry(7, rtnl::NUD_PERMANENT, a.ip.octets(), Some(a.mac)),
                entry(7, 0x04, b.ip.octets(), Some(b.mac)), // NUD_STALE: still listed
                entry(7, 0x20, [10, 0, 0, 9], None),        // NUD_FAILED, no lladdr
                entry(
                    7,
                    rtnl::NUD_NOARP,
                    [224, 0, 0, 251],
                    Some([1, 0, 0x5e, 0, 0, 0xfb]),
                ),
                entry(8, rtnl::NUD_PERMANENT, [10, 0, 0, 8], Some([2; 6])), // another device
            ],
            neigh_entry,
        );
        assert_eq!(got, vec![(a.ip, a.mac), (b.ip, b.mac)]);
    }

    #[test]
    fn mac_round_trip() {
        assert_eq!(
            fmt_mac(&parse_mac("02:42:0A:00:00:01").unwrap()),
            "02:42:0a:00:00:01"
        );
        assert!(parse_mac("02:42").is_none());
    }
}
