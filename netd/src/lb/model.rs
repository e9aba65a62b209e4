//! What the load balancer should do, derived from the desired state (local endpoints) and the
//! cluster view (remote endpoints): one frontend per (VIP, target port, protocol) of every
//! `vip`-mode service, with the enabled tasks on all nodes as backends.

use crate::api::types::{EndpointMode, Protocol, RemoteEndpointView, ServiceSpec};
use crate::gossip::ClusterView;
use crate::state::DesiredState;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// The model of `desired` and `view` (see [`LbIndex`], which can also keep it up to date
    /// change by change).
    pub fn build(desired: &DesiredState, view: &ClusterView) -> LbModel {
        LbIndex::build(desired, view).model
    }

    /// Right after a start (gossip still catching up): keeps the backends of `kept` (services
    /// as applied before: what the kernel held at the start, then what the last passes applied)
    /// that are not local endpoints (local ones are known for sure), and their services.
    pub fn keep_unknown_remotes<'a>(
        &mut self,
        kept: impl IntoIterator<Item = (&'a Frontend, &'a Service)>,
        local_ips: &BTreeSet<Ipv4Addr>,
    ) {
        for (fe, cur) in kept {
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

/// One endpoint's claim on a frontend: a task of the frontend's service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    network: Arc<str>,
    ip: Ipv4Addr,
    local: bool,
    disabled: bool,
    mac: Option<[u8; 6]>,
}

/// The LB model with what it was made of (the claims of every endpoint, by frontend), so that
/// a change of some endpoints recomputes only the frontends they claim (or claimed) instead of
/// the whole model from the whole cluster view. [`LbIndex::build`] makes it from scratch with the
/// same steps: an index kept up to date change by change equals one built from the result.
///
/// A frontend's service is a function of its claims only (their order does not matter): a VIP
/// belongs to one network, and when endpoints of several networks claim it, local endpoints
/// win over remote ones, then the smallest network name; the other claims are ignored.
#[derive(Debug, Default)]
pub struct LbIndex {
    /// The networks of this node the index was made for (remote endpoints of other networks
    /// are left out): when they change, the index is rebuilt.
    networks: BTreeSet<String>,
    members: HashMap<Frontend, Vec<Member>>,
    /// Claims per (task address, MAC): the model's MAC of an address is its smallest MAC.
    mac_refs: BTreeMap<(Ipv4Addr, [u8; 6]), u32>,
    /// The claims of local endpoints, as last added.
    locals: Vec<(Frontend, Member)>,
    names: HashSet<Arc<str>>,
    last_name: Option<Arc<str>>,
    /// The model. Kept up to date by `finish`; callers may add frontends of their own (see
    /// [`Linger::apply_delta`]), which the next `finish` of that frontend replaces.
    pub model: LbModel,
}

impl LbIndex {
    pub fn build(desired: &DesiredState, view: &ClusterView) -> LbIndex {
        let mut ix = LbIndex {
            networks: desired.networks.keys().cloned().collect(),
            ..LbIndex::default()
        };
        let mut dirty = BTreeSet::new();
        ix.set_locals(desired, &mut dirty);
        // The remote claims in bulk (what `change_remote` does one by one): MAC counts sorted
        // once instead of a map update per claim.
        // Claims sorted by frontend, then grouped (the view is in gossip order, by node: a
        // map update per claim would jump between frontends).
        let mut claims = Vec::with_capacity(view.endpoints.len());
        for e in &view.endpoints {
            if !ix.networks.contains(&*e.network) {
                continue;
            }
            let (svc, n) = (e.service.as_deref(), &e.network);
            ix.claims(n, e.ip, svc, e.service_disabled, &e.mac, false, &mut claims);
        }
        claims.sort_unstable_by_key(|(fe, _)| *fe);
        let mut macs: Vec<(Ipv4Addr, [u8; 6])> = claims
            .iter()
            .filter_map(|(_, m)| Some((m.ip, m.mac?)))
            .collect();
        let mut claims = claims.into_iter().peekable();
        while let Some((fe, m)) = claims.next() {
            let mut group = vec![m];
            while let Some((_, m)) = claims.next_if(|(f, _)| *f == fe) {
                group.push(m);
            }
            let v = ix.members.entry(fe).or_default();
            if v.is_empty() {
                *v = group;
            } else {
                v.extend(group);
            }
        }
        for (k, n) in std::mem::take(&mut ix.mac_refs) {
            macs.extend(std::iter::repeat_n(k, n as usize));
        }
        macs.sort_unstable();
        let mut refs: Vec<((Ipv4Addr, [u8; 6]), u32)> = Vec::new();
        for k in macs {
            match refs.last_mut() {
                Some((last, n)) if *last == k => *n += 1,
                _ => refs.push((k, 1)),
            }
        }
        ix.model.macs = BTreeMap::new();
        for ((ip, mac), _) in &refs {
            // The smallest MAC of an address comes first.
            ix.model.macs.entry(*ip).or_insert(*mac);
        }
        ix.mac_refs = refs.into_iter().collect();
        let mut services = Vec::with_capacity(ix.members.len());
        for (fe, v) in ix.members.iter_mut() {
            v.shrink_to_fit();
            if let Some(s) = service_of(fe, v) {
                services.push((*fe, s));
            }
        }
        ix.model.services = services.into_iter().collect();
        ix
    }

    /// Whether the index was made for the networks `desired` has (else rebuild it).
    pub fn same_networks(&self, desired: &DesiredState) -> bool {
        self.networks.len() == desired.networks.len()
            && self.networks.iter().eq(desired.networks.keys())
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.last_name.as_ref().filter(|a| ***a == *s) {
            return a.clone();
        }
        if let Some(a) = self.names.get(s) {
            self.last_name = Some(a.clone());
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(a.clone());
        a
    }

    /// The frontends an endpoint claims, added to `out`.
    #[allow(clippy::too_many_arguments)]
    fn claims(
        &mut self,
        network: &str,
        ip: Ipv4Addr,
        svc: Option<&ServiceSpec>,
        disabled: bool,
        mac: &str,
        local: bool,
        out: &mut Vec<(Frontend, Member)>,
    ) {
        let Some(svc) = svc else { return };
        if svc.endpoint_mode != EndpointMode::Vip {
            return; // dnsrr: no VIP, nothing to balance
        }
        let Some(vip) = svc.vip else { return };
        let member = Member {
            network: self.intern(network),
            ip,
            local,
            disabled,
            mac: crate::kernel::neigh::parse_mac(mac),
        };
        out.extend(svc.ports.iter().map(|p| {
            let fe = Frontend {
                vip,
                port: p.target_port,
                proto: match p.protocol {
                    Protocol::Tcp => Proto::Tcp,
                    Protocol::Udp => Proto::Udp,
                },
            };
            (fe, member.clone())
        }));
    }

    fn add(&mut self, fe: Frontend, m: Member, dirty: &mut BTreeSet<Frontend>) {
        if let Some(mac) = m.mac {
            *self.mac_refs.entry((m.ip, mac)).or_default() += 1;
            self.set_mac(m.ip);
        }
        self.members.entry(fe).or_default().push(m);
        dirty.insert(fe);
    }

    fn remove(&mut self, fe: Frontend, m: &Member, dirty: &mut BTreeSet<Frontend>) {
        let Some(v) = self.members.get_mut(&fe) else {
            return;
        };
        let Some(i) = v.iter().position(|x| x == m) else {
            return;
        };
        v.swap_remove(i);
        if v.is_empty() {
            self.members.remove(&fe);
        }
        if let Some(mac) = m.mac {
            if let Some(n) = self.mac_refs.get_mut(&(m.ip, mac)) {
                *n -= 1;
                if *n == 0 {
                    self.mac_refs.remove(&(m.ip, mac));
                }
            }
            self.set_mac(m.ip);
        }
        dirty.insert(fe);
    }

    fn set_mac(&mut self, ip: Ipv4Addr) {
        match self.mac_refs.range((ip, [0; 6])..=(ip, [0xff; 6])).next() {
            Some(((_, mac), _)) => self.model.macs.insert(ip, *mac),
            None => self.model.macs.remove(&ip),
        };
    }

    /// Takes the local endpoints (and containers) of `desired` (few: compared as a whole);
    /// returns whether the containers (`model.clients`) changed.
    pub fn set_locals(&mut self, desired: &DesiredState, dirty: &mut BTreeSet<Frontend>) -> bool {
        let mut new = Vec::new();
        for e in desired.endpoints.values() {
            let svc = e.spec.service.as_ref();
            let n = &e.spec.network;
            self.claims(n, e.ip, svc, e.service_disabled, &e.mac, true, &mut new);
        }
        if new != self.locals {
            for (fe, m) in std::mem::take(&mut self.locals) {
                self.remove(fe, &m, dirty);
            }
            for (fe, m) in &new {
                self.add(*fe, m.clone(), dirty);
            }
            self.locals = new;
        }
        let mut clients: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
        for (_, e) in desired.containers() {
            clients
                .entry(e.spec.netns.clone())
                .or_default()
                .insert(e.spec.network.clone());
        }
        let changed = clients != self.model.clients;
        self.model.clients = clients;
        changed
    }

    /// One remote endpoint changed from `old` to `new` (None: absent).
    pub fn change_remote(
        &mut self,
        old: Option<&RemoteEndpointView>,
        new: Option<&RemoteEndpointView>,
        dirty: &mut BTreeSet<Frontend>,
    ) {
        let claims = |ix: &mut LbIndex, e: Option<&RemoteEndpointView>| {
            let mut out = Vec::new();
            if let Some(e) = e.filter(|e| ix.networks.contains(&*e.network)) {
                let svc = e.service.as_deref();
                let n = &e.network;
                ix.claims(n, e.ip, svc, e.service_disabled, &e.mac, false, &mut out);
            }
            out
        };
        let (was, is) = (claims(self, old), claims(self, new));
        if was == is {
            return;
        }
        for (fe, m) in was {
            self.remove(fe, &m, dirty);
        }
        for (fe, m) in is {
            self.add(fe, m, dirty);
        }
    }

    /// Recomputes the services of the `dirty` frontends in `model`.
    pub fn finish(&mut self, dirty: &BTreeSet<Frontend>) {
        for fe in dirty {
            match self.members.get(fe).and_then(|v| service_of(fe, v)) {
                Some(s) => self.model.services.insert(*fe, s),
                None => self.model.services.remove(fe),
            };
        }
    }

    /// [`LbIndex::finish`] in the startup grace, for a model that keeps remote backends (see
    /// [`LbModel::keep_unknown_remotes`]): each `dirty` frontend also keeps the remote backends
    /// it had, so that the model stays what a whole build with those kept would make.
    pub fn finish_keeping(&mut self, dirty: &BTreeSet<Frontend>, local_ips: &BTreeSet<Ipv4Addr>) {
        let before: Vec<(Frontend, Service)> = dirty
            .iter()
            .filter_map(|fe| Some((*fe, self.model.services.get(fe)?.clone())))
            .collect();
        self.finish(dirty);
        self.model
            .keep_unknown_remotes(before.iter().map(|(fe, s)| (fe, s)), local_ips);
    }
}

/// The service of a frontend from its claims.
fn service_of(fe: &Frontend, members: &[Member]) -> Option<Service> {
    let network = members
        .iter()
        .map(|m| (!m.local, &m.network))
        .min()
        .map(|(_, n)| n.clone())?;
    let mut s = Service {
        network: network.to_string(),
        ..Service::default()
    };
    for m in members {
        if m.network != network {
            tracing::warn!(vip = %fe.vip, network = %m.network, winner = %network, "VIP claimed on two networks");
            continue;
        }
        let b = Backend {
            ip: m.ip,
            port: fe.port,
        };
        if m.disabled {
            s.drained.insert(b);
        } else {
            s.backends.insert(b);
        }
    }
    Some(s)
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

    /// The same for a model that changed only in the `changed` frontends since the last call
    /// (and still holds the lingering frontends that call added): updates the lingering
    /// frontends of `changed`, removes expired ones; returns the frontends it changed in
    /// `want` besides `changed`. None (nothing done) before a first `apply`.
    pub fn apply_delta(
        &mut self,
        want: &mut LbModel,
        changed: &BTreeSet<Frontend>,
        now: Instant,
        ttl: Duration,
    ) -> Option<Vec<Frontend>> {
        let prev = self.prev.as_mut()?;
        for fe in changed {
            match want.services.get(fe) {
                Some(s) => {
                    self.since.remove(fe);
                    prev.insert(*fe, s.network.clone());
                }
                None => {
                    if let Some(network) = prev.get(fe) {
                        let (network, _) = self.since.entry(*fe).or_insert((network.clone(), now));
                        want.services.insert(
                            *fe,
                            Service {
                                network: network.clone(),
                                ..Service::default()
                            },
                        );
                    }
                }
            }
        }
        let expired: Vec<Frontend> = self
            .since
            .iter()
            .filter(|(_, (_, t))| now.saturating_duration_since(*t) >= ttl)
            .map(|(fe, _)| *fe)
            .collect();
        for fe in &expired {
            self.since.remove(fe);
            prev.remove(fe);
            want.services.remove(fe);
        }
        Some(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{EndpointSpec, PortSpec, PublishMode};

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
            service: Some(Arc::new(s)),
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
            endpoints: [
                remote(2, svc(EndpointMode::Vip, vip), false),
                remote(3, svc(EndpointMode::Vip, vip), true),
                remote(4, svc(EndpointMode::Dnsrr, None), false),
            ]
            .map(Arc::new)
            .into(),
            ..ClusterView::default()
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
            endpoints: [Arc::new(remote(
                3,
                svc(EndpointMode::Vip, Some("10.1.0.100")),
                false,
            ))]
            .into(),
            ..ClusterView::default()
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
            endpoints: [Arc::new(remote(
                3,
                svc(EndpointMode::Vip, Some("10.1.0.100")),
                true,
            ))]
            .into(),
            ..ClusterView::default()
        };
        let m = LbModel::build(&desired(), &view);
        assert_eq!(m.services.len(), 1);
        assert!(m.services.values().next().unwrap().backends.is_empty());
    }

    /// A random endpoint of a small world (few addresses, VIPs, networks and nodes, so claims
    /// collide: same address twice, a VIP on two networks, drained and enabled).
    fn random_endpoint(x: &mut u64) -> RemoteEndpointView {
        let mut r = |n: u64| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x % n
        };
        let ports = match r(3) {
            0 => vec![(Protocol::Tcp, 80)],
            1 => vec![(Protocol::Udp, 53)],
            _ => vec![(Protocol::Tcp, 80), (Protocol::Udp, 53)],
        };
        let service = match r(5) {
            0 => None,
            1 => Some(svc(EndpointMode::Dnsrr, None)),
            _ => Some(ServiceSpec {
                ports: ports
                    .into_iter()
                    .map(|(protocol, target_port)| PortSpec {
                        protocol,
                        target_port,
                        published_port: None,
                        publish_mode: PublishMode::Ingress,
                        preserve_client_ip: false,
                    })
                    .collect(),
                ..svc(
                    EndpointMode::Vip,
                    Some(["10.1.0.100", "10.1.0.101", "10.1.0.102"][r(3) as usize]),
                )
            }),
        };
        RemoteEndpointView {
            id: format!("e{}", r(12)),
            node: format!("n{}", r(3)).into(),
            network: ["web", "db", "elsewhere"][r(3) as usize].into(),
            ip: Ipv4Addr::new(10, 1, 0, 2 + r(8) as u8),
            mac: ["", "02:00:00:00:00:01", "02:00:00:00:00:02"][r(3) as usize].into(),
            vtep: Ipv4Addr::new(192, 168, 0, 2),
            name: "t".into(),
            aliases: vec![],
            service: service.map(Arc::new),
            service_disabled: r(4) == 0,
        }
    }

    /// The model kept up to date change by change (as a reconcile pass does from the view
    /// changes) equals the one made from scratch, lingering services included.
    #[test]
    fn incremental_model_equals_a_full_rebuild() {
        let mut d = desired();
        d.networks.insert(
            "db".into(),
            serde_json::from_str(r#"{"subnet":"10.2.0.0/24","vni":4098}"#).unwrap(),
        );
        let (t0, ttl) = (Instant::now(), Duration::from_secs(5));
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut views = BTreeMap::new();
        let mut view = ClusterView::default();
        let mut index = LbIndex::build(&d, &view);
        let mut linger = Linger::default();
        linger.apply(&mut index.model, LbModel::default, t0, ttl);
        let mut full_linger = Linger::default();
        full_linger.apply(&mut LbModel::build(&d, &view), LbModel::default, t0, ttl);
        let (mut changed_total, mut lingered) = (0, 0);
        for step in 1..=400u64 {
            let now = t0 + Duration::from_millis(700 * step);
            // 1-3 remote endpoints added, changed or removed.
            for _ in 0..1 + step % 3 {
                let e = random_endpoint(&mut x);
                let k = (e.node.clone(), e.network.clone(), e.id.clone());
                if x.is_multiple_of(4) {
                    views.remove(&k);
                } else {
                    views.insert(k, e);
                }
            }
            // Now and then a local endpoint comes, changes or goes.
            if step.is_multiple_of(7) {
                let e = random_endpoint(&mut x);
                let id = format!("l{}", x % 3);
                if x.is_multiple_of(5) {
                    d.endpoints.remove(&id);
                } else if &*e.network != "elsewhere" {
                    let spec = EndpointSpec {
                        network: e.network.to_string(),
                        netns: format!("/run/netns/{id}").into(),
                        ifname: "eth0".into(),
                        ip: None,
                        mac: None,
                        name: id.clone(),
                        aliases: vec![],
                        service: e.service.as_deref().cloned(),
                        labels: BTreeMap::new(),
                    };
                    let local = crate::state::LocalEndpoint {
                        spec,
                        ip: e.ip,
                        mac: e.mac.clone(),
                        service_disabled: e.service_disabled,
                    };
                    d.endpoints.insert(id, local);
                }
            }
            let new = ClusterView {
                endpoints: views.values().cloned().map(Arc::new).collect(),
                generation: step,
                ..ClusterView::default()
            };
            let changes = crate::gossip::endpoint_changes(&view, &new);
            let mut dirty = BTreeSet::new();
            index.set_locals(&d, &mut dirty);
            for (old, new) in &changes {
                index.change_remote(old.as_deref(), new.as_deref(), &mut dirty);
            }
            index.finish(&dirty);
            let expired = linger
                .apply_delta(&mut index.model, &dirty, now, ttl)
                .expect("applied before");
            changed_total += dirty.len() + expired.len();

            let mut full = LbModel::build(&d, &new);
            full_linger.apply(&mut full, LbModel::default, now, ttl);
            assert_eq!(index.model, full, "step {step}");
            lingered += full
                .services
                .values()
                .filter(|s| s.backends.is_empty() && s.drained.is_empty())
                .count();
            view = new;
        }
        // The sequence did exercise changes and lingering services.
        assert!(
            changed_total > 300 && lingered > 10,
            "{changed_total} {lingered}"
        );
    }

    /// In the startup grace, the model followed change by change (`finish_keeping`) equals
    /// the one a whole pass makes: built from the view, keeping the remote backends applied
    /// before (at first, what the kernel held from before the restart), lingering services
    /// included.
    #[test]
    fn grace_model_followed_equals_a_whole_build_that_keeps() {
        let (t0, ttl) = (Instant::now(), Duration::from_secs(5));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        // What the kernel held from before the restart: a task gossip never brings back, one
        // it does, and one at an address that is now a local endpoint's (not kept).
        let mut kernel = LbModel::default();
        for (vip, ip) in [("10.1.0.101", 200), ("10.1.0.100", 3), ("10.1.0.102", 250)] {
            let fe = Frontend {
                vip: vip.parse().unwrap(),
                port: 80,
                proto: Proto::Tcp,
            };
            let s = kernel.services.entry(fe).or_insert_with(|| Service {
                network: "web".into(),
                ..Service::default()
            });
            s.backends.insert(Backend {
                ip: Ipv4Addr::new(10, 1, 0, ip),
                port: 80,
            });
        }
        let mut d = desired();
        let local = |d: &DesiredState| d.endpoints.values().map(|e| e.ip).collect();
        let local_endpoint = |id: &str, ip: u8, vip: &str| crate::state::LocalEndpoint {
            spec: EndpointSpec {
                network: "web".into(),
                netns: format!("/run/netns/{id}").into(),
                ifname: "eth0".into(),
                ip: None,
                mac: None,
                name: id.into(),
                aliases: vec![],
                service: Some(svc(EndpointMode::Vip, Some(vip))),
                labels: BTreeMap::new(),
            },
            ip: Ipv4Addr::new(10, 1, 0, ip),
            mac: String::new(),
            service_disabled: false,
        };
        d.endpoints
            .insert("l0".into(), local_endpoint("l0", 250, "10.1.0.100"));
        let mut view = ClusterView::default();
        let mut index = LbIndex::build(&d, &view);
        index
            .model
            .keep_unknown_remotes(&kernel.services, &local(&d));
        let mut linger = Linger::default();
        linger.apply(&mut index.model, || kernel.clone(), t0, ttl);
        let (vip_102, old_local) = (
            Frontend {
                vip: "10.1.0.102".parse().unwrap(),
                port: 80,
                proto: Proto::Tcp,
            },
            Backend {
                ip: Ipv4Addr::new(10, 1, 0, 250),
                port: 80,
            },
        );
        assert!(!index.model.services[&vip_102].backends.contains(&old_local));
        let mut applied = index.model.clone();
        let mut full_linger = Linger::default();
        let mut first = LbIndex::build(&d, &view).model;
        first.keep_unknown_remotes(&kernel.services, &local(&d));
        full_linger.apply(&mut first, || kernel.clone(), t0, ttl);
        assert_eq!(first, applied);
        let mut views = BTreeMap::new();
        let (mut changed_steps, mut followed) = (0, 0);
        let mut prev_d = d.clone();
        for step in 1..=400u64 {
            let now = t0 + Duration::from_millis(700 * step);
            for _ in 0..1 + step % 3 {
                let mut e = random_endpoint(&mut x);
                // Many addresses, so that the backends kept keep growing through the test.
                e.ip = Ipv4Addr::new(10, 1, 0, 2 + (x % 96) as u8);
                let k = (e.node.clone(), e.network.clone(), e.id.clone());
                if x.is_multiple_of(3) {
                    views.remove(&k);
                } else {
                    views.insert(k, e);
                }
            }
            // Now and then the local endpoint moves to another address (one a remote task had).
            if step.is_multiple_of(9) {
                let ip = 2 + (x % 96) as u8;
                d.endpoints
                    .insert("l0".into(), local_endpoint("l0", ip, "10.1.0.100"));
            }
            let new = ClusterView {
                endpoints: views.values().cloned().map(Arc::new).collect(),
                generation: step,
                ..ClusterView::default()
            };
            let mut full = LbModel::build(&d, &new);
            full.keep_unknown_remotes(&applied.services, &local(&d));
            full_linger.apply(&mut full, || unreachable!("applied before"), now, ttl);

            if local(&d) == local(&prev_d) {
                let changes = crate::gossip::endpoint_changes(&view, &new);
                let mut dirty = BTreeSet::new();
                index.set_locals(&d, &mut dirty);
                for (old, new) in &changes {
                    index.change_remote(old.as_deref(), new.as_deref(), &mut dirty);
                }
                index.finish_keeping(&dirty, &local(&d));
                linger
                    .apply_delta(&mut index.model, &dirty, now, ttl)
                    .expect("applied before");
                assert_eq!(index.model, full, "step {step}");
                followed += 1;
            } else {
                // The local addresses changed: no backend at those is kept in any frontend,
                // and the pass makes the model whole (as `full`).
                index = LbIndex::build(&d, &new);
                index.model = full.clone();
            }
            prev_d = d.clone();
            changed_steps += usize::from(full != applied);
            applied = full;
            view = new;
        }
        // The sequence did change the model, and kept what gossip never brought back.
        assert!(
            changed_steps > 100 && followed > 300,
            "{changed_steps} {followed}"
        );
        let gone = Backend {
            ip: Ipv4Addr::new(10, 1, 0, 200),
            port: 80,
        };
        assert!(applied
            .services
            .values()
            .any(|s| s.backends.contains(&gone)));
    }

    #[test]
    fn a_vip_claimed_on_two_networks_goes_to_local_endpoints_first() {
        let mut d = desired();
        d.networks.insert(
            "db".into(),
            serde_json::from_str(r#"{"subnet":"10.2.0.0/24","vni":4098}"#).unwrap(),
        );
        let s = svc(EndpointMode::Vip, Some("10.1.0.100"));
        let mut a = remote(2, s.clone(), false);
        a.network = "web".into();
        let mut b = remote(3, s.clone(), false);
        b.network = "db".into();
        let view = ClusterView {
            endpoints: [Arc::new(a), Arc::new(b)].into(),
            ..ClusterView::default()
        };
        let m = LbModel::build(&d, &view);
        assert_eq!(m.services.values().next().unwrap().network, "db");
        d.endpoints.insert(
            "l".into(),
            crate::state::LocalEndpoint {
                spec: EndpointSpec {
                    network: "web".into(),
                    netns: "/run/netns/l".into(),
                    ifname: "eth0".into(),
                    ip: None,
                    mac: None,
                    name: "l".into(),
                    aliases: vec![],
                    service: Some(s),
                    labels: BTreeMap::new(),
                },
                ip: Ipv4Addr::new(10, 1, 0, 9),
                mac: String::new(),
                service_disabled: false,
            },
        );
        let m = LbModel::build(&d, &view);
        let s = m.services.values().next().unwrap();
        assert_eq!(s.network, "web");
        let ips: Vec<_> = s.backends.iter().map(|b| b.ip).collect();
        assert_eq!(
            ips,
            vec![Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 9)]
        );
    }
}
