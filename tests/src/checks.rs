//! Observations shared by several tests: reachability, what a node has programmed for a
//! remote endpoint, and link identity snapshots.

use crate::cluster::Node;
use crate::cmd::exec_in;
use crate::kernel;
use crate::views::EndpointView;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// `ping -c count` from `ns`; true if at least one reply came back.
pub fn ping(ns: &str, ip: Ipv4Addr, count: u32) -> bool {
    exec_in(
        ns,
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            &ip.to_string(),
        ],
    )
    .map(|o| o.success)
    .unwrap_or(false)
}

/// Poll closure body: Ok once `ns` can ping `ip`.
pub fn pingable(ns: &str, ip: Ipv4Addr) -> Result<(), String> {
    if ping(ns, ip, 1) {
        Ok(())
    } else {
        Err(format!("{ns} cannot ping {ip}"))
    }
}

/// What `node` has programmed in its sandbox for the remote endpoint `ep`: VTEP FDB
/// entries for its MAC and permanent neighbour entries for its IP.
#[derive(Debug, Clone, Default)]
pub struct RemoteProgramming {
    pub fdb_dsts: Vec<String>,
    pub neigh_macs: Vec<String>,
}

impl RemoteProgramming {
    pub fn read(node: &Node, vni: u32, ep: &EndpointView) -> Self {
        let sandbox = node.sandbox(vni);
        let dev = format!("vx-{vni}");
        let fdb_dsts = kernel::fdb_to_vtep(&sandbox, &dev, &ep.mac)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.dst)
            .collect();
        let ip = ep.ip.to_string();
        let neigh_macs = kernel::neigh(&sandbox, &dev)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.ip == ip && n.is_permanent())
            .filter_map(|n| n.lladdr)
            .collect();
        Self {
            fdb_dsts,
            neigh_macs,
        }
    }

    /// Exactly one FDB entry pointing at `vtep` and one permanent neighbour with `mac`.
    pub fn is_exactly(&self, vtep: Ipv4Addr, mac: &str) -> bool {
        self.fdb_dsts == [vtep.to_string()] && self.neigh_macs == [mac.to_lowercase()]
    }

    pub fn is_absent(&self) -> bool {
        self.fdb_dsts.is_empty() && self.neigh_macs.is_empty()
    }
}

/// Poll closure body: Ok once `node` has `ep` (living behind `vtep`) programmed exactly once.
pub fn programmed(node: &Node, vni: u32, ep: &EndpointView, vtep: Ipv4Addr) -> Result<(), String> {
    let p = RemoteProgramming::read(node, vni, ep);
    if p.is_exactly(vtep, &ep.mac) {
        Ok(())
    } else {
        Err(format!(
            "{} sandbox for vni {vni}: endpoint {} ({} {}): {p:?}",
            node.name, ep.id, ep.ip, ep.mac
        ))
    }
}

/// Poll closure body: Ok once `node` has nothing programmed for `ep`.
pub fn unprogrammed(node: &Node, vni: u32, ep: &EndpointView) -> Result<(), String> {
    let p = RemoteProgramming::read(node, vni, ep);
    if p.is_absent() {
        Ok(())
    } else {
        Err(format!(
            "{} still has {} programmed: {p:?}",
            node.name, ep.id
        ))
    }
}

/// `(namespace, ifname) -> ifindex` over several namespaces: if netd recreates any link
/// (instead of adopting it) its ifindex changes.
pub fn link_snapshot(namespaces: &[&str]) -> BTreeMap<(String, String), u64> {
    let mut snap = BTreeMap::new();
    for ns in namespaces {
        let links = kernel::links(ns).unwrap_or_else(|e| panic!("links of {ns}: {e:#}"));
        for (name, index) in links {
            snap.insert((ns.to_string(), name), index);
        }
    }
    snap
}
