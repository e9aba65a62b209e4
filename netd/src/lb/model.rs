//! What the load balancer should do, derived from the desired state (local endpoints) and the
//! cluster view (remote endpoints): one frontend per (VIP, target port, protocol) of every
//! `vip`-mode service, with the enabled tasks on all nodes as backends.

use crate::api::types::{EndpointMode, Protocol, ServiceSpec};
use crate::gossip::ClusterView;
use crate::state::DesiredState;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// VIP:port/protocol, what clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

/// A task: address and target port (the protocol is the frontend's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// The network the VIP belongs to.
    pub network: String,
    /// Enabled backends (drained ones are left out), sorted.
    pub backends: BTreeSet<Backend>,
    /// Drained tasks: no new flows, existing ones continue (unlike removed tasks).
    pub drained: BTreeSet<Backend>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LbModel {
    pub services: BTreeMap<Frontend, Service>,
    /// Local container namespaces and the networks they are attached to (the clients; used by
    /// backends that program each container, like nftables).
    pub clients: BTreeMap<PathBuf, BTreeSet<String>>,
    /// MACs of the tasks (the packet-level LB addresses frames to the backend).
    pub macs: BTreeMap<Ipv4Addr, [u8; 6]>,
}

impl LbModel {
    pub fn build(desired: &DesiredState, view: &ClusterView) -> LbModel {
        let mut m = LbModel::default();
        let locals = desired.endpoints.values().map(|e| {
            (
                e.spec.network.as_str(),
                e.ip,
                e.spec.service.as_ref(),
                e.service_disabled,
                e.mac.as_str(),
            )
        });
        let remotes = view
            .endpoints
            .iter()
            .filter(|e| desired.networks.contains_key(&e.network))
            .map(|e| {
                (
                    e.network.as_str(),
                    e.ip,
                    e.service.as_ref(),
                    e.service_disabled,
                    e.mac.as_str(),
                )
            });
        for (network, ip, svc, disabled, mac) in locals.chain(remotes) {
            if svc.is_some() {
                if let Some(mac) = crate::kernel::neigh::parse_mac(mac) {
                    m.macs.insert(ip, mac);
                }
            }
            m.add(network, ip, svc, disabled);
        }
        for (_, e) in desired.containers() {
            m.clients
                .entry(e.spec.netns.clone())
                .or_default()
                .insert(e.spec.network.clone());
        }
        m
    }

    fn add(&mut self, network: &str, ip: Ipv4Addr, svc: Option<&ServiceSpec>, disabled: bool) {
        let Some(svc) = svc else { return };
        if svc.endpoint_mode != EndpointMode::Vip {
            return; // dnsrr: no VIP, nothing to balance
        }
        let Some(vip) = svc.vip else { return };
        for p in &svc.ports {
            let fe = Frontend {
                vip,
                port: p.target_port,
                proto: match p.protocol {
                    Protocol::Tcp => Proto::Tcp,
                    Protocol::Udp => Proto::Udp,
                },
            };
            let s = self.services.entry(fe).or_insert_with(|| Service {
                network: network.to_string(),
                ..Service::default()
            });
            if s.network != network {
                // A VIP belongs to one network; a conflicting claim is ignored.
                tracing::warn!(%vip, network, other = %s.network, "VIP claimed on two networks");
                continue;
            }
            let b = Backend {
                ip,
                port: p.target_port,
            };
            if disabled {
                s.drained.insert(b);
            } else {
                s.backends.insert(b);
            }
        }
    }

    /// Right after a start (gossip still catching up): keeps the backends `current` has that
    /// are not local endpoints (local ones are known for sure), and its services.
    pub fn keep_unknown_remotes(&mut self, current: &LbModel, local_ips: &BTreeSet<Ipv4Addr>) {
        for (fe, cur) in &current.services {
            let s = self.services.entry(*fe).or_insert_with(|| Service {
                network: cur.network.clone(),
                ..Service::default()
            });
            for b in &cur.backends {
                if !local_ips.contains(&b.ip) {
                    s.backends.insert(*b);
                }
            }
        }
    }

    /// UDP backends (enabled or drained) of every service: a connected UDP socket pinned to
    /// one that leaves this set would black-hole.
    pub fn udp_backends(&self) -> BTreeSet<Backend> {
        self.services
            .iter()
            .filter(|(fe, _)| fe.proto == Proto::Udp)
            .flat_map(|(_, s)| s.backends.iter().chain(&s.drained).copied())
            .collect()
    }

    /// Services a client on `networks` can reach.
    pub fn services_for<'a>(
        &'a self,
        networks: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a Frontend, &'a Service)> + 'a {
        self.services
            .iter()
            .filter(move |(_, s)| networks.contains(&s.network))
    }
}

/// Frontends whose last task was deleted. They stay programmed without backends (connects are
/// refused at once, as with all tasks drained, instead of hanging on an address nobody owns)
/// until `ttl` passed or a task claims them again.
#[derive(Debug, Default)]
pub struct Linger {
    since: BTreeMap<Frontend, (String, Instant)>,
    /// The frontends (and their networks) of the last model applied.
    prev: Option<BTreeMap<Frontend, String>>,
}

impl Linger {
    /// Adds to `want` the frontends that the last model had (on the first call: what
    /// `programmed` returns, i.e. the maps a restarted netd found) and `want` lost less than
    /// `ttl` ago.
    pub fn apply(
        &mut self,
        want: &mut LbModel,
        programmed: impl FnOnce() -> LbModel,
        now: Instant,
        ttl: Duration,
    ) {
        let prev = self.prev.take().unwrap_or_else(|| {
            programmed()
                .services
                .into_iter()
                .map(|(fe, s)| (fe, s.network))
                .collect()
        });
        self.since.retain(|fe, _| !want.services.contains_key(fe));
        for (fe, network) in prev {
            if !want.services.contains_key(&fe) {
                self.since.entry(fe).or_insert((network, now));
            }
        }
        self.since
            .retain(|_, (_, t)| now.saturating_duration_since(*t) < ttl);
        for (fe, (network, _)) in &self.since {
            want.services.insert(
                *fe,
                Service {
                    network: network.clone(),
                    ..Service::default()
                },
            );
        }
        self.prev = Some(
            want.services
                .iter()
                .map(|(fe, s)| (*fe, s.network.clone()))
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{PortSpec, PublishMode, RemoteEndpointView};

    fn svc(mode: EndpointMode, vip: Option<&str>) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            id: "s1".into(),
            vip: vip.map(|v| v.parse().unwrap()),
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                target_port: 80,
                published_port: None,
                publish_mode: PublishMode::Ingress,
                preserve_client_ip: false,
            }],
            endpoint_mode: mode,
        }
    }

    fn remote(ip: u8, s: ServiceSpec, disabled: bool) -> RemoteEndpointView {
        RemoteEndpointView {
            id: format!("e{ip}"),
            node: "n2".into(),
            network: "web".into(),
            ip: Ipv4Addr::new(10, 1, 0, ip),
            mac: String::new(),
            vtep: Ipv4Addr::new(192, 168, 0, 2),
            name: "t".into(),
            aliases: vec![],
            service: Some(s),
            service_disabled: disabled,
        }
    }

    fn desired() -> DesiredState {
        let mut d = DesiredState::default();
        d.networks.insert(
            "web".into(),
            serde_json::from_str(r#"{"subnet":"10.1.0.0/24","vni":4097}"#).unwrap(),
        );
        d
    }

    #[test]
    fn drained_tasks_are_not_backends_and_dnsrr_has_no_frontend() {
        let vip = Some("10.1.0.100");
        let view = ClusterView {
            peers: vec![],
            endpoints: vec![
                remote(2, svc(EndpointMode::Vip, vip), false),
                remote(3, svc(EndpointMode::Vip, vip), true),
                remote(4, svc(EndpointMode::Dnsrr, None), false),
            ],
        };
        let m = LbModel::build(&desired(), &view);
        assert_eq!(m.services.len(), 1);
        let s = m.services.values().next().unwrap();
        let ips: Vec<_> = s.backends.iter().map(|b| b.ip).collect();
        assert_eq!(ips, vec![Ipv4Addr::new(10, 1, 0, 2)]);
    }

    #[test]
    fn a_deleted_service_lingers_without_backends_then_goes() {
        let view = ClusterView {
            peers: vec![],
            endpoints: vec![remote(3, svc(EndpointMode::Vip, Some("10.1.0.100")), false)],
        };
        let had = LbModel::build(&desired(), &view);
        let none = || LbModel::build(&desired(), &ClusterView::default());
        let (t0, ttl) = (Instant::now(), Duration::from_secs(60));
        // A restarted netd: the maps still hold the service its last task left.
        let mut linger = Linger::default();
        let mut want = none();
        linger.apply(&mut want, || had.clone(), t0, ttl);
        let s = want.services.values().next().expect("still programmed");
        assert!(s.backends.is_empty() && s.drained.is_empty());
        // Later passes keep it until the ttl passed...
        let mut want = none();
        linger.apply(&mut want, LbModel::default, t0 + ttl / 2, ttl);
        assert_eq!(want.services.len(), 1);
        let mut want = none();
        linger.apply(&mut want, LbModel::default, t0 + ttl, ttl);
        assert!(want.services.is_empty());
        // ... or until a task claims the frontend again (then it is an ordinary service).
        let mut linger = Linger::default();
        let mut want = had.clone();
        linger.apply(&mut want, LbModel::default, t0, ttl);
        let mut want = none();
        linger.apply(&mut want, LbModel::default, t0, ttl);
        assert_eq!(want.services.len(), 1, "lingers after its task left");
        let mut want = had.clone();
        linger.apply(&mut want, LbModel::default, t0, ttl);
        assert!(linger.since.is_empty());
        assert_eq!(want, had);
    }

    #[test]
    fn all_drained_keeps_the_frontend_without_backends() {
        let view = ClusterView {
            peers: vec![],
            endpoints: vec![remote(3, svc(EndpointMode::Vip, Some("10.1.0.100")), true)],
        };
        let m = LbModel::build(&desired(), &view);
        assert_eq!(m.services.len(), 1);
        assert!(m.services.values().next().unwrap().backends.is_empty());
    }
}
