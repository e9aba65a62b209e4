//! What `netd inspect` reads from the kernel itself (never through netd): sandbox links, FDB
//! and neighbor entries, routes. All commands go through `kernel::cmd`.

use crate::kernel::cmd::{json, Ns};
use crate::kernel::neigh;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The VXLAN device of a sandbox as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: Option<u32>,
    pub local: Option<String>,
    pub dstport: Option<u16>,
    pub mtu: u32,
    pub up: bool,
    pub master: Option<String>,
}

/// One link as `ip -j -d link` shows it (the parts read here).
#[derive(Debug, Clone, Deserialize)]
struct RawLink {
    ifname: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    linkinfo: Option<RawLinkInfo>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawLinkInfo {
    #[serde(default)]
    info_data: Option<serde_json::Value>,
}

fn links(ns: &Ns) -> Result<Vec<RawLink>> {
    json(ns, "ip", &["-j", "-d", "link", "show"])
}

/// The sandbox's links: the VXLAN device `vx` (if present) and the names of `br0`'s ports.
pub fn sandbox_links(sandbox: &str, vx: &str) -> Result<(Option<VxlanDevice>, Vec<String>)> {
    let all = links(&Ns::named(sandbox))?;
    let dev = all.iter().find(|l| l.ifname == vx).map(|l| {
        let d = l
            .linkinfo
            .as_ref()
            .and_then(|i| i.info_data.clone())
            .unwrap_or_default();
        VxlanDevice {
            name: l.ifname.clone(),
            vni: d["id"].as_u64().map(|v| v as u32),
            local: d["local"].as_str().map(str::to_string),
            dstport: d["port"].as_u64().map(|v| v as u16),
            mtu: l.mtu,
            up: l.flags.iter().any(|f| f == "UP"),
            master: l.master.clone(),
        }
    });
    let ports = all
        .iter()
        .filter(|l| l.master.as_deref() == Some(crate::reconcile::BRIDGE) && l.ifname != vx)
        .map(|l| l.ifname.clone())
        .collect();
    Ok((dev, ports))
}

/// FDB (MAC → VTEP) and neighbor (IP → MAC) entries of `vx` in `sandbox`.
pub type FdbNeigh = (BTreeMap<[u8; 6], Ipv4Addr>, BTreeMap<Ipv4Addr, [u8; 6]>);

pub fn fdb_neigh(sandbox: &str, vx: &str) -> Result<FdbNeigh> {
    let sb = Ns::named(sandbox);
    Ok((neigh::fdb(&sb, vx)?, neigh::neighbors(&sb, vx)?))
}

/// `ip route get` in a namespace: the device (and gateway) a packet to `dst` leaves by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHop {
    pub dev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefsrc: Option<String>,
}

pub fn route_get(ns: &Ns, dst: Ipv4Addr) -> Result<RouteHop> {
    let v: Vec<serde_json::Value> = json(ns, "ip", &["-j", "route", "get", &dst.to_string()])?;
    let r = v.first().cloned().unwrap_or_default();
    Ok(RouteHop {
        dev: r["dev"].as_str().unwrap_or_default().to_string(),
        gateway: r["gateway"].as_str().map(str::to_string),
        prefsrc: r["prefsrc"].as_str().map(str::to_string),
    })
}

/// Sandboxes of `node` under /run/netns, with their VNI.
pub fn sandboxes(node: &str) -> Vec<(String, u32)> {
    let prefix = format!("nd-{node}-");
    let mut v: Vec<(String, u32)> = crate::kernel::netns::list(&prefix)
        .into_iter()
        .filter_map(|n| {
            let vni = n.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, vni))
        })
        .collect();
    v.sort();
    v
}
