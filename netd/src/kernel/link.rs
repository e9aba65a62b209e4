//! Links: bridges, VXLAN devices, veth pairs; addresses and routes on them.

use super::cmd::{batch, json, run, Ns};
use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    pub ifname: String,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub flags: Vec<String>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }
}

pub fn list(ns: &Ns) -> Result<Vec<Link>> {
    json(ns, "ip", &["-j", "-d", "link", "show"])
}

pub fn get(ns: &Ns, name: &str) -> Result<Option<Link>> {
    Ok(list(ns)?.into_iter().find(|l| l.ifname == name))
}

#[derive(Debug, Clone, Deserialize)]
struct AddrInfo {
    ifname: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<AddrEntry>,
}

#[derive(Debug, Clone, Deserialize)]
struct AddrEntry {
    family: String,
    local: String,
    prefixlen: u8,
}

/// IPv4 addresses per interface in `ns`.
pub fn addresses(ns: &Ns) -> Result<Vec<(String, Ipv4Net)>> {
    let infos: Vec<AddrInfo> = json(ns, "ip", &["-j", "addr", "show"])?;
    Ok(infos
        .into_iter()
        .flat_map(|i| {
            let ifname = i.ifname;
            i.addr_info.into_iter().filter_map(move |a| {
                if a.family != "inet" {
                    return None;
                }
                let ip: Ipv4Addr = a.local.parse().ok()?;
                Some((ifname.clone(), Ipv4Net::new(ip, a.prefixlen).ok()?))
            })
        })
        .collect())
}

/// The underlay device holding `addr` and its MTU.
pub fn underlay_for(addr: Ipv4Addr) -> Result<(String, u32)> {
    let infos: Vec<AddrInfo> = json(&Ns::Node, "ip", &["-j", "addr", "show"])?;
    infos
        .into_iter()
        .find(|i| {
            i.addr_info
                .iter()
                .any(|a| a.family == "inet" && a.local == addr.to_string())
        })
        .map(|i| (i.ifname, i.mtu))
        .with_context(|| {
            format!("advertise_addr {addr} is not configured on any interface of this namespace")
        })
}

/// Ensures a bridge `name` in `ns` with `addr` (if any), `mtu`, up. Existing bridges are adopted.
pub fn ensure_bridge(ns: &Ns, name: &str, addr: Option<Ipv4Net>, mtu: u32) -> Result<()> {
    let existing = get(ns, name)?;
    let mut cmds = Vec::new();
    if existing.is_none() {
        cmds.push(format!("link add {name} mtu {mtu} type bridge"));
    } else if existing.as_ref().is_some_and(|l| l.mtu != mtu) {
        cmds.push(format!("link set {name} mtu {mtu}"));
    }
    if let Some(a) = addr {
        let have = addresses(ns)?.into_iter().any(|(i, n)| i == name && n == a);
        if !have {
            cmds.push(format!("addr replace {a} dev {name}"));
        }
    }
    if !existing.as_ref().is_some_and(|l| l.is_up()) {
        cmds.push(format!("link set {name} up"));
    }
    batch(ns, "ip", &cmds)
}

pub struct VxlanParams<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    pub underlay_dev: &'a str,
    pub mtu: u32,
}

/// Ensures the VXLAN device in `sandbox`, enslaved to `bridge`. It is created in the node's
/// namespace (so its UDP socket lives on the underlay) and then moved into the sandbox.
pub fn ensure_vxlan(sandbox: &str, bridge: &str, p: &VxlanParams) -> Result<()> {
    let sb = Ns::named(sandbox);
    let existing = get(&sb, p.name)?;
    if existing.is_none() {
        if get(&Ns::Node, p.name)?.is_none() {
            run(
                &Ns::Node,
                "ip",
                &[
                    "link",
                    "add",
                    p.name,
                    "mtu",
                    &p.mtu.to_string(),
                    "type",
                    "vxlan",
                    "id",
                    &p.vni.to_string(),
                    "local",
                    &p.local.to_string(),
                    "dstport",
                    &p.port.to_string(),
                    "dev",
                    p.underlay_dev,
                    "nolearning",
                    "proxy",
                ],
            )?;
        }
        // A crash between add and move leaves the device in the node namespace: move it now.
        run(&Ns::Node, "ip", &["link", "set", p.name, "netns", sandbox])?;
    }
    let l = get(&sb, p.name)?.context("vxlan device vanished")?;
    let mut cmds = Vec::new();
    if l.mtu != p.mtu {
        cmds.push(format!("link set {} mtu {}", p.name, p.mtu));
    }
    if l.master.as_deref() != Some(bridge) {
        cmds.push(format!("link set {} master {bridge}", p.name));
    }
    if !l.is_up() {
        cmds.push(format!("link set {} up", p.name));
    }
    batch(&sb, "ip", &cmds)
}

/// The container side of an attachment.
pub struct ContainerIf<'a> {
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub addr: Ipv4Net,
    pub mac: &'a str,
    pub mtu: u32,
    /// Default route via this gateway (egress leg only).
    pub default_via: Option<Ipv4Addr>,
}

/// Creates a veth pair (the caller found `host_end` absent): `host_end` in `host_ns` enslaved
/// to `bridge`, the peer configured in the container. `isolated` keeps bridge ports from
/// talking to each other (egress bridge).
pub fn create_veth(
    host_ns: &Ns,
    host_ns_name: Option<&str>,
    host_end: &str,
    bridge: &str,
    isolated: bool,
    c: &ContainerIf,
) -> Result<()> {
    // Created from inside the container, so the container end never appears elsewhere; the
    // host end goes straight to its namespace. One process per namespace.
    let peer_ns = host_ns_name
        .map(str::to_string)
        .unwrap_or_else(|| std::process::id().to_string());
    let mut cmds = vec![format!(
        "link add {} mtu {} address {} type veth peer name {host_end} mtu {} netns {peer_ns}",
        c.ifname, c.mtu, c.mac, c.mtu
    )];
    cmds.extend(container_side(c));
    batch(&Ns::path(c.netns), "ip", &cmds)?;
    let mut host = vec![format!("link set {host_end} master {bridge} up")];
    if isolated {
        host.push(format!("link set {host_end} type bridge_slave isolated on"));
    }
    batch(host_ns, "ip", &host)
}

/// Address, MAC, MTU, up and routes on the container end; idempotent.
pub fn configure_container_side(c: &ContainerIf) -> Result<()> {
    batch(&Ns::path(c.netns), "ip", &container_side(c))
}

fn container_side(c: &ContainerIf) -> Vec<String> {
    let mut cmds = vec![
        // the embedded resolver at 127.0.0.11 needs loopback
        "link set lo up".to_string(),
        format!("link set {} mtu {}", c.ifname, c.mtu),
        format!("addr replace {} dev {}", c.addr, c.ifname),
        format!("link set {} up", c.ifname),
    ];
    if let Some(gw) = c.default_via {
        cmds.push(format!("route replace default via {gw} dev {}", c.ifname));
    }
    cmds
}

/// Deletes a link; a link that is already gone is fine.
pub fn delete(ns: &Ns, name: &str) -> Result<()> {
    match run(ns, "ip", &["link", "del", name]) {
        Err(e) if format!("{e:#}").contains("Cannot find device") => Ok(()),
        r => r.map(|_| ()),
    }
}

/// Short, stable interface name for an endpoint's host end: `prefix` + 12 hex of a hash.
pub fn host_end_name(prefix: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(key.as_bytes());
    let hex: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_end_names_fit_ifnamsiz() {
        let n = super::host_end_name("ve", "some-very-long-endpoint-id-0123456789");
        assert_eq!(n.len(), 14);
        assert!(n.starts_with("ve"));
        assert_eq!(
            n,
            super::host_end_name("ve", "some-very-long-endpoint-id-0123456789")
        );
    }
}
