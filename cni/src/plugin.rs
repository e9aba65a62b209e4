//! The CNI verbs, each a thin call of netd's API.

use crate::conf::{
    endpoint_id, endpoint_name, requested_ip, requested_mac, requested_service, CniArgs,
    PluginConf, LABEL_CONTAINER_ID, LABEL_IFNAME, LABEL_NETWORK, LABEL_OWNER, OWNER,
};
use crate::errors;
use crate::inspect;
use crate::netd::{EndpointSpec, EndpointView, Netd};
use rscni_types::error::Error;
use rscni_types::ipnet::IpNet;
use rscni_types::types::{CNIResult, Dns, GcAttachment, Interface, IpConfig, NetConf, Route};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// The second interface netd gives containers on non-internal networks (default route).
pub const EGRESS_IFNAME: &str = "netdgw0";
/// Bound on one API call (an ADD may wait for an address block claim to be acknowledged).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// STATUS is a readiness probe: answer quickly.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// One invocation: the CNI envelope plus the plugin's own configuration.
pub struct Invocation {
    pub netconf: NetConf,
    pub conf: PluginConf,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub args: CniArgs,
}

impl Invocation {
    fn netd(&self, timeout: Duration) -> Netd {
        Netd::new(&self.conf.socket, timeout)
    }

    fn id(&self) -> String {
        endpoint_id(&self.container_id, &self.ifname)
    }

    /// The namespace of ADD and CHECK (required there, so validated before).
    fn netns(&self) -> Result<&str, Error> {
        let netns = self
            .netns
            .as_deref()
            .ok_or_else(|| Error::missing_env(&["CNI_NETNS"]))?;
        if !Path::new(netns).exists() {
            return Err(Error::InvalidEnvValue(format!(
                "CNI_NETNS: {netns} does not exist"
            )));
        }
        Ok(netns)
    }
}

pub fn add(inv: &Invocation) -> Result<CNIResult, Error> {
    let netns = inv.netns()?;
    let conf = &inv.conf;
    let name = endpoint_name(&inv.container_id, &inv.args);
    let mut aliases: Vec<String> = vec![];
    for a in conf.aliases.iter().chain(&conf.runtime_aliases) {
        if *a != name && !aliases.contains(a) {
            aliases.push(a.clone());
        }
    }
    let mut labels: BTreeMap<String, String> = conf.labels.clone();
    labels.insert(LABEL_OWNER.into(), OWNER.into());
    labels.insert(LABEL_CONTAINER_ID.into(), inv.container_id.clone());
    labels.insert(LABEL_IFNAME.into(), inv.ifname.clone());
    labels.insert(LABEL_NETWORK.into(), inv.netconf.name.clone());
    let spec = EndpointSpec {
        network: conf.network.clone(),
        netns: netns.to_string(),
        ifname: inv.ifname.clone(),
        ip: requested_ip(conf, &inv.args)?,
        mac: requested_mac(conf, &inv.args),
        name,
        aliases,
        service: requested_service(conf, &inv.args)?,
        labels,
    };
    let view = inv.netd(CALL_TIMEOUT).put_endpoint(&inv.id(), &spec)?;
    let mut ours = result_of(&view, netns, &inv.ifname);
    if let Some(egress) = view.egress_address {
        // netd's view does not carry the egress interface's MAC, and runtimes (podman) refuse
        // an interface without one: read it from the namespace.
        let mac = inspect::inspect(Path::new(netns))
            .ok()
            .and_then(|st| st.link(EGRESS_IFNAME).and_then(|l| l.mac.clone()))
            .unwrap_or_else(|| {
                let o = egress.addr().octets();
                format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
            });
        if let Some(i) = ours.interfaces.iter_mut().find(|i| i.name == EGRESS_IFNAME) {
            i.mac = mac;
        }
    }
    Ok(match &inv.netconf.prev_result {
        Some(prev) => merge(prev.clone(), ours),
        None => ours,
    })
}

/// Idempotent: succeeds when netd no longer knows the attachment, and whether or not the
/// namespace still exists (netd removes what is left of it).
pub fn del(inv: &Invocation) -> Result<(), Error> {
    inv.netd(CALL_TIMEOUT).delete_endpoint(&inv.id())
}

pub fn check(inv: &Invocation) -> Result<(), Error> {
    let netns = inv.netns()?;
    let id = inv.id();
    let prev = inv.netconf.prev_result.as_ref().ok_or_else(|| {
        Error::InvalidNetworkConfig("CHECK needs prevResult (the attachment's result)".into())
    })?;
    let view = inv
        .netd(CALL_TIMEOUT)
        .get_endpoint(&id)?
        .ok_or_else(|| errors::check_unknown(format!("netd has no endpoint {id}")))?;
    if view.labels.get(LABEL_OWNER).map(String::as_str) != Some(OWNER)
        || view.labels.get(LABEL_CONTAINER_ID) != Some(&inv.container_id)
    {
        return Err(errors::check_unknown(format!(
            "netd endpoint {id} was not made by this plugin for container {}",
            inv.container_id
        )));
    }
    let mismatch = errors::check_mismatch;
    if view.netns != netns || view.ifname != inv.ifname || view.network != inv.conf.network {
        return Err(mismatch(format!(
            "netd endpoint {id} is {} in {} on network {}; expected {} in {netns} on {}",
            view.ifname, view.netns, view.network, inv.ifname, inv.conf.network
        )));
    }

    // The result the runtime holds must be the one netd gave.
    let idx = prev
        .interfaces
        .iter()
        .position(|i| {
            i.name == inv.ifname
                && i.sandbox
                    .as_deref()
                    .is_none_or(|s| s.is_empty() || s == netns)
        })
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult has no interface {} in {netns}",
                inv.ifname
            ))
        })?;
    let want = IpNet::V4(view.address);
    if !prev
        .ips
        .iter()
        .any(|ip| ip.address == want && ip.interface.is_none_or(|i| i as usize == idx))
    {
        return Err(mismatch(format!(
            "prevResult does not list {want} on {}; netd has it",
            inv.ifname
        )));
    }

    // And the kernel must have it.
    let st = inspect::inspect(Path::new(netns))
        .map_err(|e| mismatch(format!("cannot inspect {netns}: {e}")))?;
    let link = st
        .link(&inv.ifname)
        .ok_or_else(|| mismatch(format!("{netns} has no interface {}", inv.ifname)))?;
    if link.mac.as_deref() != Some(view.mac.to_ascii_lowercase().as_str()) {
        return Err(mismatch(format!(
            "{} has MAC {:?}, netd set {}",
            inv.ifname, link.mac, view.mac
        )));
    }
    let (addr, len) = (view.address.addr(), view.address.prefix_len());
    if !link.ipv4.contains(&(addr, len)) {
        return Err(mismatch(format!(
            "{} lacks {}/{len} (has {:?})",
            inv.ifname, addr, link.ipv4
        )));
    }
    let subnet = view.address.trunc();
    let has_route = |dst: std::net::Ipv4Addr, prefix: u8, gw, dev: Option<&str>| {
        st.routes.iter().any(|r| {
            r.dst == dst && r.prefix == prefix && r.gw == gw && dev.is_none_or(|d| r.dev == d)
        })
    };
    if !has_route(subnet.addr(), len, None, Some(&inv.ifname)) {
        return Err(mismatch(format!(
            "{netns} has no route to {subnet} on {}",
            inv.ifname
        )));
    }
    for r in view.routes.iter().filter(|r| r.dst.trunc() != subnet) {
        if !has_route(r.dst.addr(), r.dst.prefix_len(), r.gw, None) {
            return Err(mismatch(format!(
                "{netns} lacks route {}{}",
                r.dst,
                r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
            )));
        }
    }
    if let Some(egress) = view.egress_address {
        let ok = st
            .link(EGRESS_IFNAME)
            .is_some_and(|l| l.ipv4.contains(&(egress.addr(), egress.prefix_len())));
        if !ok {
            return Err(mismatch(format!(
                "{netns} lacks {EGRESS_IFNAME} with {egress}"
            )));
        }
    }
    Ok(())
}

/// Ready when netd answers, says it is ready, and knows the configured network.
pub fn status(netconf: &NetConf, conf: &PluginConf) -> Result<(), Error> {
    let netd = Netd::new(&conf.socket, STATUS_TIMEOUT);
    let unavailable = |e: Error| Error::PluginNotAvailable(e.details().to_string());
    let node = netd.node().map_err(unavailable)?;
    if !node.ready {
        return Err(Error::PluginNotAvailable(format!(
            "netd on node {} (socket {}) is not ready yet",
            node.node,
            netd.socket().display()
        )));
    }
    if !netd.network_exists(&conf.network).map_err(unavailable)? {
        return Err(Error::PluginNotAvailable(format!(
            "network {:?} (CNI network {:?}) is not defined on node {}",
            conf.network, netconf.name, node.node
        )));
    }
    Ok(())
}

/// Removes the attachments this plugin made for this CNI network that the runtime no longer
/// lists. Endpoints without the plugin's labels (made by other clients of netd) are never
/// touched. An absent or null list means no attachment is valid (libcni sends `null` then).
pub fn gc(netconf: &NetConf, conf: &PluginConf) -> Result<(), Error> {
    let netd = Netd::new(&conf.socket, CALL_TIMEOUT);
    let valid: &[GcAttachment] = netconf.valid_attachments.as_deref().unwrap_or_default();
    let mut failed = vec![];
    for ep in netd.endpoints()? {
        let label = |k: &str| ep.labels.get(k).map(String::as_str);
        if label(LABEL_OWNER) != Some(OWNER) || label(LABEL_NETWORK) != Some(&netconf.name) {
            continue;
        }
        let (Some(cid), Some(ifname)) = (label(LABEL_CONTAINER_ID), label(LABEL_IFNAME)) else {
            continue;
        };
        if valid
            .iter()
            .any(|a| a.container_id == cid && a.ifname == ifname)
        {
            continue;
        }
        if let Err(e) = netd.delete_endpoint(&ep.id) {
            failed.push(format!("{}: {e}", ep.id));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(errors::gc_incomplete(failed.join("; ")))
    }
}

/// The ADD result of one netd endpoint: the container interface (and `netdgw0` when netd
/// gave an egress leg), the overlay address with the network's gateway, the egress address,
/// the routes beyond the connected subnet, and netd's DNS (127.0.0.11).
pub fn result_of(view: &EndpointView, netns: &str, ifname: &str) -> CNIResult {
    let iface = |name: &str, mac: &str, mtu: Option<u32>| Interface {
        name: name.to_string(),
        mac: mac.to_string(),
        mtu,
        sandbox: Some(netns.to_string()),
        socket_path: None,
        pci_id: None,
    };
    let mut interfaces = vec![iface(ifname, &view.mac, Some(view.mtu))];
    let mut ips = vec![IpConfig {
        interface: Some(0),
        address: IpNet::V4(view.address),
        gateway: Some(IpAddr::V4(view.gateway)),
    }];
    let subnet = view.address.trunc();
    let default_gw = view
        .routes
        .iter()
        .find(|r| r.dst.prefix_len() == 0)
        .and_then(|r| r.gw);
    if let Some(egress) = view.egress_address {
        interfaces.push(iface(EGRESS_IFNAME, "", None));
        ips.push(IpConfig {
            interface: Some(1),
            address: IpNet::V4(egress),
            gateway: default_gw.map(IpAddr::V4),
        });
    }
    let routes = view
        .routes
        .iter()
        .filter(|r| r.dst.trunc() != subnet)
        .map(|r| Route {
            dst: IpNet::V4(r.dst),
            gw: r.gw.map(IpAddr::V4),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        })
        .collect();
    let dns = Dns {
        nameservers: view.dns.nameservers.iter().map(|n| n.to_string()).collect(),
        domain: None,
        search: (!view.dns.search.is_empty()).then(|| view.dns.search.clone()),
        options: (!view.dns.options.is_empty()).then(|| view.dns.options.clone()),
    };
    CNIResult {
        interfaces,
        ips,
        routes,
        dns: Some(dns),
    }
}

/// When netd is not the first plugin of a chain: the previous result plus this one, with
/// this one's interface indices moved past the previous interfaces.
fn merge(mut prev: CNIResult, ours: CNIResult) -> CNIResult {
    let offset = u32::try_from(prev.interfaces.len()).unwrap_or(u32::MAX);
    prev.interfaces.extend(ours.interfaces);
    prev.ips.extend(ours.ips.into_iter().map(|mut ip| {
        ip.interface = ip.interface.map(|i| i.saturating_add(offset));
        ip
    }));
    prev.routes.extend(ours.routes);
    let prev_dns_empty = prev.dns.as_ref().is_none_or(|d| d.nameservers.is_empty());
    if prev_dns_empty {
        prev.dns = ours.dns;
    }
    prev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> EndpointView {
        serde_json::from_value(serde_json::json!({
            "id": "c1-eth0", "network": "web", "netns": "/run/netns/c1", "ifname": "eth0",
            "address": "10.1.0.2/24", "ip": "10.1.0.2", "mac": "02:42:0a:01:00:02",
            "gateway": "10.1.0.1", "mtu": 1450,
            "routes": [{"dst": "10.1.0.0/24"}, {"dst": "0.0.0.0/0", "gw": "172.18.0.1"}],
            "dns": {"nameservers": ["127.0.0.11"], "search": [], "options": ["ndots:0"]},
            "egress_address": "172.18.0.2/16"
        }))
        .unwrap()
    }

    #[test]
    fn result_shape() {
        let r = result_of(&view(), "/run/netns/c1", "eth0");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["interfaces"][0]["name"], "eth0");
        assert_eq!(j["interfaces"][0]["sandbox"], "/run/netns/c1");
        assert_eq!(j["interfaces"][1]["name"], EGRESS_IFNAME);
        assert_eq!(j["ips"][0]["address"], "10.1.0.2/24");
        assert_eq!(j["ips"][0]["gateway"], "10.1.0.1");
        assert_eq!(j["ips"][1]["gateway"], "172.18.0.1");
        assert_eq!(j["ips"][1]["interface"], 1);
        assert_eq!(
            j["routes"],
            serde_json::json!([{"dst": "0.0.0.0/0", "gw": "172.18.0.1"}])
        );
        assert_eq!(j["dns"]["nameservers"], serde_json::json!(["127.0.0.11"]));
    }

    #[test]
    fn internal_network_has_one_interface() {
        let mut v = view();
        v.egress_address = None;
        v.routes.truncate(1);
        let r = result_of(&v, "/run/netns/c1", "eth0");
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.ips.len(), 1);
        assert!(r.routes.is_empty());
    }

    #[test]
    fn merge_offsets_indices() {
        let prev = result_of(&view(), "/run/netns/c1", "eth0");
        let merged = merge(prev, result_of(&view(), "/run/netns/c1", "eth1"));
        assert_eq!(merged.interfaces.len(), 4);
        assert_eq!(merged.ips[2].interface, Some(2));
        assert_eq!(merged.ips[3].interface, Some(3));
    }
}
