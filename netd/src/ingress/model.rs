//! What published ports should do on this node, from the desired state and the cluster view.

use crate::api::types::{EndpointMode, Protocol, PublishMode, ServiceSpec};
use crate::gossip::ClusterView;
use crate::lb::model::{Backend, Proto};
use crate::state::{DesiredState, INGRESS_LEG};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A published port: protocol and port number on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Published {
    pub proto: Proto,
    pub port: u16,
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.proto.name())
    }
}

pub fn proto_of(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
    }
}

/// One published port and where its flows go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub service: String,
    pub service_id: String,
    /// Enabled tasks (drained and removed ones get no new flows), sorted: the Maglev input.
    pub backends: BTreeSet<Backend>,
    /// Drained tasks: no new flows, established ones continue.
    pub drained: BTreeSet<Backend>,
    /// Ingress mode only: no SNAT, replies return through the ingress node.
    pub preserve_client_ip: bool,
}

/// A local task on the ingress network whose replies to un-SNATed clients must go back
/// through the node the flow came in on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReturnPath {
    pub netns: PathBuf,
    pub ifname: String,
    /// Target ports of `preserve_client_ip` UDP ports: replies from a socket bound to
    /// 0.0.0.0 get their source address from routing, which must pick this interface.
    pub udp_ports: BTreeSet<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressModel {
    /// Ingress-mode ports, cluster-wide.
    pub ingress: BTreeMap<Published, Target>,
    /// Host-mode ports of local tasks (backends are the tasks' egress addresses).
    pub host: BTreeMap<Published, Target>,
    /// Local tasks that serve a `preserve_client_ip` port.
    pub return_paths: BTreeSet<ReturnPath>,
    /// Every node's ingress leg, MAC → address (ours included).
    pub legs: BTreeMap<[u8; 6], Ipv4Addr>,
    /// This node's leg (ifname in the node namespace), once it exists in the desired state.
    pub leg_ifname: Option<String>,
    /// This node's leg address.
    pub leg_ip: Option<Ipv4Addr>,
}

/// A published port of a service as one endpoint record carries it.
struct Claim<'a> {
    svc: &'a ServiceSpec,
    published: Published,
    target_port: u16,
    preserve: bool,
}

fn claims(svc: &ServiceSpec, mode: PublishMode) -> impl Iterator<Item = Claim<'_>> + '_ {
    svc.ports.iter().filter_map(move |p| {
        if p.publish_mode != mode {
            return None;
        }
        Some(Claim {
            svc,
            published: Published {
                proto: proto_of(p.protocol),
                port: p.published_port?,
            },
            target_port: p.target_port,
            preserve: p.preserve_client_ip,
        })
    })
}

impl IngressModel {
    pub fn build(desired: &DesiredState, view: &ClusterView) -> IngressModel {
        let mut m = IngressModel::default();
        if let Some((net, _)) = desired.ingress_network() {
            m.build_ingress(desired, view, net);
        }
        m.build_host(desired);
        m
    }

    fn build_ingress(&mut self, desired: &DesiredState, view: &ClusterView, net: &str) {
        // (endpoint ip, service, disabled), local and remote; node legs apart.
        let mut tasks: Vec<(Ipv4Addr, &ServiceSpec, bool)> = Vec::new();
        for (id, e) in desired.endpoints_on(net) {
            if id == INGRESS_LEG {
                self.leg_ifname = Some(e.spec.ifname.clone());
                self.leg_ip = Some(e.ip);
                if let Some(mac) = crate::kernel::neigh::parse_mac(&e.mac) {
                    self.legs.insert(mac, e.ip);
                }
            } else if let Some(svc) = &e.spec.service {
                tasks.push((e.ip, svc, e.service_disabled));
                if claims(svc, PublishMode::Ingress).any(|c| c.preserve) {
                    self.return_paths.insert(ReturnPath {
                        netns: e.spec.netns.clone(),
                        ifname: e.spec.ifname.clone(),
                        udp_ports: claims(svc, PublishMode::Ingress)
                            .filter(|c| c.preserve && c.published.proto == Proto::Udp)
                            .map(|c| c.target_port)
                            .collect(),
                    });
                }
            }
        }
        for e in view.endpoints_on(net) {
            if e.id == INGRESS_LEG {
                if let Some(mac) = crate::kernel::neigh::parse_mac(&e.mac) {
                    self.legs.insert(mac, e.ip);
                }
            } else if let Some(svc) = &e.service {
                tasks.push((e.ip, svc, e.service_disabled));
            }
        }
        // A port claimed by two services (possible only across nodes that validated
        // concurrently): the smaller service id wins on every node alike.
        let mut owner: BTreeMap<Published, &str> = BTreeMap::new();
        for (_, svc, _) in &tasks {
            if svc.endpoint_mode == EndpointMode::Dnsrr {
                continue;
            }
            for c in claims(svc, PublishMode::Ingress) {
                let o = owner.entry(c.published).or_insert(&c.svc.id);
                if c.svc.id.as_str() < *o {
                    *o = &c.svc.id;
                }
            }
        }
        for (ip, svc, disabled) in &tasks {
            if svc.endpoint_mode == EndpointMode::Dnsrr {
                continue;
            }
            for c in claims(svc, PublishMode::Ingress) {
                if owner.get(&c.published) != Some(&c.svc.id.as_str()) {
                    continue;
                }
                let t = self.ingress.entry(c.published).or_insert_with(|| Target {
                    service: svc.name.clone(),
                    service_id: svc.id.clone(),
                    ..Target::default()
                });
                t.preserve_client_ip |= c.preserve;
                let b = Backend {
                    ip: *ip,
                    port: c.target_port,
                };
                if *disabled {
                    t.drained.insert(b);
                } else {
                    t.backends.insert(b);
                }
            }
        }
    }

    fn build_host(&mut self, desired: &DesiredState) {
        for (_, e) in desired.containers() {
            let Some(svc) = &e.spec.service else { continue };
            // Host mode goes to the task's egress leg on the node bridge.
            let Some(addr) = desired.egress.get(&e.spec.netns) else {
                continue;
            };
            for c in claims(svc, PublishMode::Host) {
                if self.ingress.contains_key(&c.published) {
                    continue; // an ingress port wins on every node
                }
                let t = self.host.entry(c.published).or_insert_with(|| Target {
                    service: svc.name.clone(),
                    service_id: svc.id.clone(),
                    ..Target::default()
                });
                if t.service_id != svc.id {
                    continue;
                }
                let b = Backend {
                    ip: *addr,
                    port: c.target_port,
                };
                if e.service_disabled {
                    t.drained.insert(b);
                } else {
                    t.backends.insert(b);
                }
            }
        }
    }

    /// UDP backends (enabled or drained) of every published port: a flow pinned to one that
    /// leaves this set would go on into a black hole.
    pub fn udp_backends(&self) -> BTreeSet<Backend> {
        self.ingress
            .iter()
            .chain(&self.host)
            .filter(|(p, _)| p.proto == Proto::Udp)
            .flat_map(|(_, t)| t.backends.iter().chain(&t.drained).copied())
            .collect()
    }

    /// Every port this node must hold.
    pub fn reserved(&self) -> BTreeSet<Published> {
        self.ingress
            .keys()
            .chain(self.host.keys())
            .copied()
            .collect()
    }
}

/// Every published port known here (local endpoints and gossip) with its service id, for
/// conflict checks and automatic assignment: ingress ports cluster-wide, host ports of this
/// node only.
pub fn published_ports(
    desired: &DesiredState,
    view: &ClusterView,
) -> BTreeMap<Published, (String, String)> {
    let mut out = BTreeMap::new();
    let ingress_net = desired.ingress_network().map(|(n, _)| n.clone());
    let mut add = |svc: &ServiceSpec, network: &str, local: bool| {
        for p in &svc.ports {
            let Some(port) = p.published_port else {
                continue;
            };
            let counts = match p.publish_mode {
                PublishMode::Ingress => ingress_net.as_deref() == Some(network),
                PublishMode::Host => local,
            };
            if counts {
                out.entry(Published {
                    proto: proto_of(p.protocol),
                    port,
                })
                .or_insert_with(|| (svc.id.clone(), svc.name.clone()));
            }
        }
    };
    for (_, e) in desired.containers() {
        if let Some(svc) = &e.spec.service {
            add(svc, &e.spec.network, true);
        }
    }
    for e in &view.endpoints {
        if let Some(svc) = &e.service {
            add(svc, &e.network, false);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{PortSpec, RemoteEndpointView};

    fn svc(id: &str, port: u16, mode: PublishMode) -> ServiceSpec {
        ServiceSpec {
            name: format!("svc-{id}"),
            id: id.into(),
            vip: None,
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                target_port: 80,
                published_port: Some(port),
                publish_mode: mode,
                preserve_client_ip: false,
            }],
            endpoint_mode: EndpointMode::Vip,
        }
    }

    fn remote(ip: u8, id: &str, s: Option<ServiceSpec>, disabled: bool) -> RemoteEndpointView {
        RemoteEndpointView {
            id: id.into(),
            node: "n2".into(),
            network: "ingress".into(),
            ip: Ipv4Addr::new(10, 255, 0, ip),
            mac: format!("02:42:0a:ff:00:{ip:02x}"),
            vtep: Ipv4Addr::new(192, 168, 0, 2),
            name: "t".into(),
            aliases: vec![],
            service: s.map(std::sync::Arc::new),
            service_disabled: disabled,
        }
    }

    fn desired() -> DesiredState {
        let mut d = DesiredState::default();
        d.networks.insert(
            "ingress".into(),
            serde_json::from_str(r#"{"subnet":"10.255.0.0/16","vni":4096,"ingress":true}"#)
                .unwrap(),
        );
        d
    }

    #[test]
    fn ingress_ports_collect_enabled_tasks_and_legs() {
        let view = ClusterView {
            endpoints: [
                remote(2, INGRESS_LEG, None, false),
                remote(5, "t1", Some(svc("a", 8080, PublishMode::Ingress)), false),
                remote(6, "t2", Some(svc("a", 8080, PublishMode::Ingress)), true),
                // A second service claiming the port loses to the smaller id.
                remote(7, "t3", Some(svc("b", 8080, PublishMode::Ingress)), false),
                // Host mode of a remote node: nothing here.
                remote(8, "t4", Some(svc("c", 9090, PublishMode::Host)), false),
            ]
            .map(std::sync::Arc::new)
            .into(),
            ..ClusterView::default()
        };
        let m = IngressModel::build(&desired(), &view);
        let p = Published {
            proto: Proto::Tcp,
            port: 8080,
        };
        assert_eq!(m.ingress.len(), 1);
        let t = &m.ingress[&p];
        assert_eq!(t.service_id, "a");
        let ips: Vec<_> = t.backends.iter().map(|b| b.ip.octets()[3]).collect();
        assert_eq!(ips, vec![5]);
        assert!(m.host.is_empty());
        assert_eq!(
            m.legs.values().copied().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 255, 0, 2)]
        );
        let all = published_ports(&desired(), &view);
        assert_eq!(all[&p].0, "a");
        assert!(!all.contains_key(&Published {
            proto: Proto::Tcp,
            port: 9090
        }));
    }
}
