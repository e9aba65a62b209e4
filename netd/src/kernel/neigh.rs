//! Static FDB and neighbor entries on a VXLAN device: how remote endpoints are reached without
//! flood-and-learn.

use super::cmd::{batch, json, Ns};
use anyhow::Result;
use serde::Deserialize;
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

#[derive(Deserialize)]
struct FdbEntry {
    mac: String,
    #[serde(default)]
    dst: Option<String>,
}

#[derive(Deserialize)]
struct NeighEntry {
    dst: String,
    #[serde(default)]
    lladdr: Option<String>,
}

/// FDB entries with a remote destination on `dev`: MAC → VTEP.
pub fn fdb(sandbox: &Ns, dev: &str) -> Result<BTreeMap<[u8; 6], Ipv4Addr>> {
    let entries: Vec<FdbEntry> = json(sandbox, "bridge", &["-j", "fdb", "show", "dev", dev])?;
    Ok(entries
        .into_iter()
        .filter_map(|e| Some((parse_mac(&e.mac)?, e.dst?.parse().ok()?)))
        .filter(|(m, _)| *m != [0; 6])
        .collect())
}

/// Neighbor entries on `dev`: IP → MAC.
pub fn neighbors(sandbox: &Ns, dev: &str) -> Result<BTreeMap<Ipv4Addr, [u8; 6]>> {
    let entries: Vec<NeighEntry> = json(sandbox, "ip", &["-j", "-4", "neigh", "show", "dev", dev])?;
    Ok(entries
        .into_iter()
        .filter_map(|e| Some((e.dst.parse().ok()?, parse_mac(e.lladdr.as_deref()?)?)))
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn mac_round_trip() {
        assert_eq!(
            fmt_mac(&parse_mac("02:42:0A:00:00:01").unwrap()),
            "02:42:0a:00:00:01"
        );
        assert!(parse_mac("02:42").is_none());
    }
}
