//! Egress legs: one per container namespace with an endpoint on a non-internal network, on the
//! node's gateway bridge, masqueraded by nftables.

use super::Shared;
use crate::ipam;
use crate::kernel::cmd::Ns;
use crate::kernel::egress::{self, BRIDGE};
use crate::kernel::link::{self, ContainerIf};
use crate::state::DesiredState;
use anyhow::Result;
use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::path::Path;

pub const IFNAME: &str = crate::validate::IFNAME_RESERVED;
pub const HOST_END_PREFIX: &str = "gw";

pub fn host_end(netns: &Path) -> String {
    link::host_end_name(HOST_END_PREFIX, &netns.to_string_lossy())
}

pub fn gateway(shared: &Shared) -> Ipv4Addr {
    ipam::default_gateway(&shared.cfg.gwbridge_subnet)
}

use std::net::Ipv4Addr;

pub fn reconcile(shared: &Shared, desired: &DesiredState, verify_containers: bool) -> Result<()> {
    let need = desired.egress_netns();
    if need.is_empty() && (shared.is_verified("egress") || link::get(&Ns::Node, BRIDGE)?.is_none())
    {
        return Ok(());
    }
    let subnet = shared.cfg.gwbridge_subnet;
    let gw = gateway(shared);
    let mtu = shared.facts.underlay_mtu;
    if !shared.is_verified("egress") {
        link::ensure_bridge(
            &Ns::Node,
            BRIDGE,
            Some(Ipv4Net::new(gw, subnet.prefix_len())?),
            mtu,
        )?;
        if !egress::table_present() {
            egress::apply_ruleset(&subnet)?;
        }
        egress::enable_forwarding()?;
        shared.set_verified("egress", true);
    }
    let present: BTreeSet<String> = link::list(&Ns::Node)?
        .into_iter()
        .filter(|l| l.master.as_deref() == Some(BRIDGE))
        .map(|l| l.ifname)
        .collect();
    let mut wanted = BTreeSet::new();
    let mut errors = Vec::new();
    for netns in &need {
        let Some(ip) = desired.egress.get(netns) else {
            continue;
        };
        let he = host_end(netns);
        wanted.insert(he.clone());
        let mac = ipam::mac_for(*ip);
        let c = ContainerIf {
            netns,
            ifname: IFNAME,
            addr: Ipv4Net::new(*ip, subnet.prefix_len())?,
            mac: &mac,
            mtu,
            default_via: Some(gw),
        };
        let r = if !present.contains(&he) {
            link::create_veth(&Ns::Node, None, &he, BRIDGE, true, &c)
        } else if verify_containers {
            link::configure_container_side(&c)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            errors.push(format!("egress leg for {}: {e:#}", netns.display()));
        }
    }
    for stray in present
        .iter()
        .filter(|n| n.starts_with(HOST_END_PREFIX) && n.len() == 14 && !wanted.contains(*n))
    {
        link::delete(&Ns::Node, stray)?;
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}
