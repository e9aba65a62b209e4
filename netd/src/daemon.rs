//! The running node: desired state, gossip and the reconciler wired together, and the
//! operations the API exposes. Every operation validates first, then persists, then
//! reconciles; a failed reconcile rolls the desired state back, so bad input changes nothing.

use crate::api::error::ApiError;
use crate::api::types::*;
use crate::config::Config;
use crate::gossip::record::{claim_key, EndpointRecord, CONFIRMED};
use crate::gossip::{keyring::MAX_KEYS, Gossip};
use crate::ipam;
use crate::kernel::link;
use crate::reconcile::{NodeFacts, Reconciler, Scope, Shared};
use crate::state::{store::Store, DesiredState, LocalEndpoint, INGRESS_LEG};
use crate::validate;
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub struct Daemon {
    pub shared: Arc<Shared>,
    pub gossip: Gossip,
    pub reconciler: Reconciler,
    store: Store,
    /// Serializes mutating operations (allocation, persistence, reconcile).
    pub(crate) ops: Mutex<()>,
}

pub const DNS_NAMESERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    pub async fn start(cfg: Config) -> Result<Arc<Daemon>> {
        let (underlay_dev, underlay_mtu) = link::underlay_for(cfg.advertise_addr)?;
        crate::lb::preflight(&cfg)?;
        let store = Store::open(&cfg.state_dir)?;
        let desired = store.load().context("loading desired state")?;
        let keys = desired
            .gossip_keys
            .clone()
            .unwrap_or_else(|| cfg.gossip_keys.clone());
        if desired.endpoints.contains_key(INGRESS_LEG) {
            // /run/netns is a tmpfs: after a reboot the node's ingress leg needs the name again.
            crate::ingress::name_node_namespace(&cfg.node_name)?;
        }
        let sa_epoch = crate::crypto::epoch::SaEpoch::load(&cfg.state_dir)?;
        let mut initial = initial_gossip_state(&cfg, &desired);
        initial.push((
            crate::crypto::epoch::GOSSIP_KEY.to_string(),
            sa_epoch.value().to_string(),
        ));
        let (sa_epoch_published, _) = tokio::sync::watch::channel(sa_epoch.value());
        let gossip = Gossip::start(&cfg, &keys, initial).await?;
        tracing::info!(node = %cfg.node_name, %underlay_dev, underlay_mtu, networks = desired.networks.len(),
            endpoints = desired.endpoints.len(), "netd starting");
        let forwarder = crate::dns::forward::Forwarder::new(
            cfg.dns_upstreams()?,
            Duration::from_millis(cfg.dns_upstream_timeout_ms),
            cfg.dns_max_inflight,
        );
        let dns =
            crate::dns::DnsService::new(forwarder, cfg.dns_ttl, tokio::runtime::Handle::current());
        let shared = Arc::new(Shared {
            dns,
            cfg,
            facts: NodeFacts {
                underlay_dev,
                underlay_mtu,
            },
            desired: std::sync::RwLock::new(desired),
            view: std::sync::RwLock::new(Default::default()),
            reconcile_view: std::sync::RwLock::new(Default::default()),
            view_changes: Default::default(),
            started: Instant::now(),
            verified: Default::default(),
            programmed_remotes: Default::default(),
            dns_rebuild: Default::default(),
            events: Default::default(),
            sa_epoch: std::sync::Mutex::new(sa_epoch),
            sa_epoch_published,
        });
        shared.rebuild_dns(None);
        let reconciler = Reconciler::spawn(shared.clone());
        // Adopt what the kernel already has; repair what is missing or wrong.
        if let Err(e) = reconciler
            .run(Scope::All {
                verify_containers: true,
            })
            .await
        {
            tracing::warn!(error = %e, "initial reconcile incomplete; will retry");
        }
        Ok(Arc::new(Daemon {
            shared,
            gossip,
            reconciler,
            store,
            ops: Mutex::new(()),
        }))
    }

    pub(crate) fn desired(&self) -> DesiredState {
        self.shared.desired.read().expect("desired lock").clone()
    }

    /// Persists `next` and makes it the desired state.
    pub(crate) fn commit(&self, next: DesiredState) -> Result<(), ApiError> {
        self.store
            .save(&next)
            .map_err(|e| ApiError::internal(format!("persisting state: {e:#}")))?;
        *self.shared.desired.write().expect("desired lock") = next;
        self.shared.rebuild_dns(None);
        Ok(())
    }

    // ---- networks ----

    pub fn network_view(&self, name: &str) -> Option<NetworkView> {
        let d = self.desired();
        let spec = d.networks.get(name)?.clone();
        let view = self.shared.view.read().expect("view lock");
        Some(NetworkView {
            name: name.to_string(),
            effective_gateway: validate::spec_gateway(&spec),
            effective_mtu: self.shared.network_mtu(spec.mtu, spec.encrypted),
            sandbox: self.shared.cfg.sandbox_name(spec.vni),
            local_endpoints: d.endpoints_on(name).count(),
            remote_endpoints: view.endpoints_on(name).count(),
            spec,
        })
    }

    pub fn networks(&self) -> Vec<NetworkView> {
        let names: Vec<String> = self.desired().networks.keys().cloned().collect();
        names.iter().filter_map(|n| self.network_view(n)).collect()
    }

    /// Returns whether the network was created (vs. already identical or updated).
    pub async fn put_network(
        &self,
        name: &str,
        spec: NetworkSpec,
    ) -> Result<(NetworkView, bool), ApiError> {
        let _g = self.ops.lock().await;
        let mut d = self.desired();
        validate::network(&d, name, &spec)?;
        if spec.encrypted {
            crate::crypto::support::require()?;
        }
        let created = !d.networks.contains_key(name);
        let ingress = spec.ingress;
        if d.networks.get(name) != Some(&spec) {
            d.networks.insert(name.to_string(), spec);
            self.commit(d)?;
            self.reconciler
                .run(Scope::Network(name.to_string()))
                .await
                .map_err(ApiError::internal)?;
            let kind = if created {
                "network_created"
            } else {
                "network_updated"
            };
            self.shared.events.emit(kind, Some(name), name, "");
        }
        drop(_g);
        if ingress && !self.desired().endpoints.contains_key(INGRESS_LEG) {
            let leg = crate::ingress::leg_spec(&self.shared.cfg.node_name, name)
                .map_err(|e| ApiError::internal(format!("ingress leg: {e:#}")))?;
            self.attach(INGRESS_LEG, leg).await?;
        } else if !ingress
            && (self.desired().endpoints.get(INGRESS_LEG)).is_some_and(|e| e.spec.network == name)
        {
            self.detach(INGRESS_LEG).await?; // no longer the ingress network
        }
        Ok((self.network_view(name).expect("just stored"), created))
    }

    pub async fn delete_network(&self, name: &str, force: bool) -> Result<(), ApiError> {
        let _g = self.ops.lock().await;
        let mut d = self.desired();
        if !d.networks.contains_key(name) {
            return Ok(());
        }
        let eps: Vec<String> = d.endpoints_on(name).map(|(id, _)| id.clone()).collect();
        let containers = eps.iter().filter(|id| *id != INGRESS_LEG).count();
        if containers > 0 && !force {
            return Err(ApiError::conflict(
                "name",
                format!("network {name:?} still has {containers} endpoint(s); delete them first or use ?force=true"),
            ));
        }
        for id in &eps {
            d.endpoints.remove(id);
        }
        d.networks.remove(name);
        let blocks = d.ipam_blocks.remove(name).unwrap_or_default();
        prune_egress(&mut d);
        self.commit(d)?;
        for id in &eps {
            self.gossip.withdraw_endpoint(name, id).await;
        }
        for b in blocks {
            self.gossip.release_block(name, b).await;
        }
        self.reconciler
            .run(Scope::Network(name.to_string()))
            .await
            .map_err(ApiError::internal)?;
        for id in &eps {
            self.shared
                .events
                .emit("endpoint_left", Some(name), id, "network removed");
        }
        self.shared
            .events
            .emit("network_removed", Some(name), name, "");
        Ok(())
    }

    // ---- endpoints ----

    pub fn endpoint_view(&self, id: &str) -> Option<EndpointView> {
        let d = self.shared.desired.read().expect("desired lock");
        self.endpoint_view_in(&d, id)
    }

    fn endpoint_view_in(&self, d: &DesiredState, id: &str) -> Option<EndpointView> {
        let ep = d.endpoints.get(id)?;
        let net = d.networks.get(&ep.spec.network)?;
        let gateway = validate::spec_gateway(net);
        let egress_address = d
            .egress
            .get(&ep.spec.netns)
            .filter(|_| !net.internal)
            .and_then(|ip| {
                ipnet::Ipv4Net::new(*ip, self.shared.cfg.gwbridge_subnet.prefix_len()).ok()
            });
        let mut routes = vec![Route {
            dst: net.subnet,
            gw: None,
        }];
        if egress_address.is_some() {
            routes.push(Route {
                dst: "0.0.0.0/0".parse().expect("valid"),
                gw: Some(ipam::default_gateway(&self.shared.cfg.gwbridge_subnet)),
            });
        }
        Some(EndpointView {
            id: id.to_string(),
            // ip and mac are the view's own fields: not repeated from the request.
            spec: EndpointSpec {
                ip: None,
                mac: None,
                ..ep.spec.clone()
            },
            address: ipnet::Ipv4Net::new(ep.ip, net.subnet.prefix_len()).ok()?,
            ip: ep.ip,
            mac: ep.mac.clone(),
            gateway,
            mtu: self.shared.network_mtu(net.mtu, net.encrypted),
            routes,
            dns: DnsConfig {
                nameservers: vec![DNS_NAMESERVER],
                search: vec![],
                options: vec!["ndots:0".into()],
            },
            service_disabled: ep.service_disabled,
            egress_mac: egress_address.map(|a| ipam::mac_for(a.addr())),
            egress_address,
        })
    }

    /// Every local endpoint, from one snapshot of the desired state (one view per endpoint,
    /// not one copy of the state per endpoint: `netd inspect` lists thousands).
    pub fn endpoints(&self) -> Vec<EndpointView> {
        let d = self.shared.desired.read().expect("desired lock");
        d.endpoints
            .keys()
            .filter_map(|i| self.endpoint_view_in(&d, i))
            .collect()
    }

    pub async fn put_endpoint(
        &self,
        id: &str,
        spec: EndpointSpec,
    ) -> Result<(EndpointView, bool), ApiError> {
        if id == INGRESS_LEG {
            return Err(ApiError::invalid(
                "id",
                format!("id: {INGRESS_LEG:?} is reserved for the node's ingress leg"),
            ));
        }
        self.attach(id, spec).await
    }

    async fn attach(
        &self,
        id: &str,
        mut spec: EndpointSpec,
    ) -> Result<(EndpointView, bool), ApiError> {
        let started = Instant::now();
        let _g = self.ops.lock().await;
        let mut d = self.desired();
        validate::endpoint(&d, id, &spec)?;
        match d.endpoints.get(id) {
            Some(existing) => crate::ingress::publish::same_numbers(&existing.spec, &mut spec),
            None => {
                let view = self.shared.view.read().expect("view lock").clone();
                crate::ingress::publish::prepare(&d, &view, &mut spec)?;
            }
        }
        if let Some(existing) = d.endpoints.get(id) {
            let same = EndpointSpec {
                ip: spec.ip.or(Some(existing.ip)),
                mac: spec.mac.clone().or(Some(existing.mac.clone())),
                ..spec.clone()
            };
            let have = EndpointSpec {
                ip: Some(existing.ip),
                mac: Some(existing.mac.clone()),
                ..existing.spec.clone()
            };
            if same == have {
                return Ok((self.endpoint_view(id).expect("exists"), false));
            }
            return Err(ApiError::conflict(
                "id",
                format!("endpoint {id:?} exists with a different definition; delete it first"),
            ));
        }
        let net = d.networks[&spec.network].clone();
        let gateway = validate::spec_gateway(&net);
        let view = self.shared.view.read().expect("view lock").clone();
        let mut used: HashSet<Ipv4Addr> =
            d.endpoints_on(&spec.network).map(|(_, e)| e.ip).collect();
        used.extend(view.endpoints_on(&spec.network).map(|e| e.ip));
        let ip = match spec.ip {
            Some(ip) => {
                if used.contains(&ip) {
                    return Err(ApiError::conflict(
                        "ip",
                        format!("ip: {ip} is already in use on network {}", spec.network),
                    ));
                }
                ip
            }
            None => {
                let mine = d
                    .ipam_blocks
                    .get(&spec.network)
                    .cloned()
                    .unwrap_or_default();
                match ipam::allocate(&net.subnet, gateway, mine.iter().copied(), &used) {
                    Some(ip) => ip,
                    None => {
                        let b = self
                            .gossip
                            .claim_block(&spec.network, &net.subnet, CLAIM_TIMEOUT)
                            .await
                            .map_err(|e| ApiError::unavailable(format!("ip: {e:#}")))?;
                        d.ipam_blocks
                            .entry(spec.network.clone())
                            .or_default()
                            .insert(b);
                        // Persist the block at once: it is ours even if this attach fails.
                        self.commit(d.clone())?;
                        ipam::allocate(&net.subnet, gateway, [b], &used).ok_or_else(|| {
                            ApiError::unavailable("ip: newly claimed block is full")
                        })?
                    }
                }
            }
        };
        let mac = spec.mac.clone().unwrap_or_else(|| ipam::mac_for(ip));
        let ep = LocalEndpoint {
            spec: spec.clone(),
            ip,
            mac,
            service_disabled: false,
        };
        let before = d.clone();
        d.endpoints.insert(id.to_string(), ep.clone());
        if !net.internal && id != INGRESS_LEG && !d.egress.contains_key(&spec.netns) {
            let ip = self.allocate_egress(&d)?;
            d.egress.insert(spec.netns.clone(), ip);
        }
        self.commit(d)?;
        let committed = started.elapsed();
        if let Err(e) = self
            .reconciler
            .run(Scope::Locals(spec.network.clone()))
            .await
        {
            // Roll back: nothing of a failed attach stays in the kernel or on disk.
            self.commit(before)?;
            let _ = self
                .reconciler
                .run(Scope::Network(spec.network.clone()))
                .await;
            if e.contains("File exists") {
                return Err(ApiError::conflict(
                    "ifname",
                    format!(
                        "ifname: {} already exists in {}",
                        spec.ifname,
                        spec.netns.display()
                    ),
                ));
            }
            return Err(ApiError::internal(format!("attaching endpoint: {e}")));
        }
        let reconciled = started.elapsed();
        self.gossip
            .publish_endpoint(&spec.network, id, &self.record(&ep))
            .await;
        tracing::debug!(id, ?committed, ?reconciled, total = ?started.elapsed(), "endpoint attached");
        self.shared.events.emit(
            "endpoint_joined",
            Some(&spec.network),
            id,
            format!("{} {ip} {}", spec.name, ep.mac),
        );
        Ok((self.endpoint_view(id).expect("just stored"), true))
    }

    fn allocate_egress(&self, d: &DesiredState) -> Result<Ipv4Addr, ApiError> {
        let subnet = self.shared.cfg.gwbridge_subnet;
        let gw = ipam::default_gateway(&subnet);
        let used: HashSet<Ipv4Addr> = d.egress.values().copied().collect();
        let blocks = 0..ipam::block_count(&subnet);
        ipam::allocate(&subnet, gw, blocks, &used)
            .ok_or_else(|| ApiError::unavailable(format!("gwbridge_subnet {subnet} is full")))
    }

    fn record(&self, ep: &LocalEndpoint) -> EndpointRecord {
        record_of(self.shared.cfg.advertise_addr, ep)
    }

    pub async fn delete_endpoint(&self, id: &str) -> Result<(), ApiError> {
        if id == INGRESS_LEG {
            return Err(ApiError::invalid(
                "id",
                format!("id: {INGRESS_LEG:?} is the node's ingress leg; it goes with the ingress network"),
            ));
        }
        self.detach(id).await
    }

    async fn detach(&self, id: &str) -> Result<(), ApiError> {
        let _g = self.ops.lock().await;
        let mut d = self.desired();
        let Some(ep) = d.endpoints.remove(id) else {
            return Ok(());
        };
        prune_egress(&mut d);
        self.commit(d)?;
        self.gossip.withdraw_endpoint(&ep.spec.network, id).await;
        self.reconciler
            .run(Scope::Locals(ep.spec.network.clone()))
            .await
            .map_err(ApiError::internal)?;
        self.shared.events.emit(
            "endpoint_left",
            Some(&ep.spec.network),
            id,
            format!("{} {}", ep.spec.name, ep.ip),
        );
        Ok(())
    }

    pub async fn patch_endpoint(
        &self,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<EndpointView, ApiError> {
        let _g = self.ops.lock().await;
        let mut d = self.desired();
        let Some(ep) = d.endpoints.get_mut(id) else {
            return Err(ApiError::not_found(
                Some("id"),
                format!("endpoint {id:?} does not exist"),
            ));
        };
        ep.service_disabled = patch.service_disabled;
        let ep = ep.clone();
        self.commit(d)?;
        self.gossip
            .publish_endpoint(&ep.spec.network, id, &self.record(&ep))
            .await;
        // DNS answers changed with the commit; what the kernel holds that depends on a task
        // being drained is its LB backend and published-port backend: the LB thread's pass
        // (which never waits for a full pass on the other thread) brings both up to date.
        self.reconciler
            .run(Scope::Lb)
            .await
            .map_err(ApiError::internal)?;
        let kind = if ep.service_disabled {
            "endpoint_drained"
        } else {
            "endpoint_enabled"
        };
        self.shared.events.emit(
            kind,
            Some(&ep.spec.network),
            id,
            format!("{} {}", ep.spec.name, ep.ip),
        );
        Ok(self.endpoint_view(id).expect("exists"))
    }

    // ---- cluster ----

    pub async fn set_gossip_keys(&self, keys: GossipKeys) -> Result<(), ApiError> {
        let _g = self.ops.lock().await;
        if keys.keys.is_empty() || keys.keys.len() > MAX_KEYS {
            return Err(ApiError::invalid(
                "keys",
                format!("keys: give 1 to {MAX_KEYS} keys, primary first"),
            ));
        }
        if let Some(i) = keys.keys.iter().position(|k| k.len() < 8) {
            return Err(ApiError::invalid(
                format!("keys[{i}]"),
                "keys: each key must be at least 8 characters",
            ));
        }
        let mut d = self.desired();
        d.gossip_keys = Some(keys.keys.clone());
        self.commit(d)?;
        self.gossip.keyring.set(&keys.keys);
        Ok(())
    }

    pub fn node_view(&self) -> NodeView {
        let d = self.desired();
        let v = self.shared.view.read().expect("view lock").clone();
        let cfg = &self.shared.cfg;
        NodeView {
            node: cfg.node_name.clone(),
            advertise_addr: cfg.advertise_addr,
            data_port: cfg.data_port,
            gossip_addr: cfg.gossip_bind().to_string(),
            underlay_mtu: self.shared.facts.underlay_mtu,
            networks: d.networks.len(),
            local_endpoints: d.endpoints.len(),
            remote_endpoints: v.endpoints.len(),
            peers: v.peers.clone(),
            gossip_key_tags: self.gossip.keyring.tags(),
            dns: {
                let f = &self.shared.dns.shared.forwarder;
                let ld =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                DnsStats {
                    upstreams: f.upstreams().iter().map(|u| u.to_string()).collect(),
                    served_containers: self.shared.dns.served().len(),
                    forwarded: ld(&f.stats.forwarded),
                    cache_hits: ld(&f.stats.cache_hits),
                    failures: ld(&f.stats.failures),
                    dropped: ld(&f.stats.dropped),
                }
            },
            gossip_rejected: self
                .gossip
                .stats
                .rejected
                .load(std::sync::atomic::Ordering::Relaxed),
            ready: true,
            lb_backend: crate::lb::kind_name(crate::lb::backend_kind(cfg)).into(),
            lb_pin_dir: (crate::lb::backend_kind(cfg) == crate::lb::LbBackendKind::Ebpf)
                .then(|| crate::lb::pin_dir(cfg).display().to_string()),
        }
    }

    pub fn remote_endpoints(&self) -> Vec<Arc<RemoteEndpointView>> {
        self.shared
            .view
            .read()
            .expect("view lock")
            .endpoints
            .iter()
            .cloned()
            .collect()
    }
}

/// Egress addresses of namespaces that no longer need one are freed.
fn prune_egress(d: &mut DesiredState) {
    let need = d.egress_netns();
    d.egress.retain(|ns, _| need.contains(ns));
}

/// The gossip record of a local endpoint.
fn record_of(vtep: Ipv4Addr, ep: &LocalEndpoint) -> EndpointRecord {
    EndpointRecord {
        ip: ep.ip,
        mac: ep.mac.clone(),
        vtep,
        name: ep.spec.name.clone(),
        aliases: ep.spec.aliases.clone(),
        service: ep.spec.service.clone(),
        disabled: ep.service_disabled,
    }
}

/// What this node publishes on (re)start: its endpoints and confirmed IPAM blocks.
fn initial_gossip_state(cfg: &Config, d: &DesiredState) -> Vec<(String, String)> {
    let mut kv = crate::gossip::initial_endpoint_state(
        cfg,
        d.endpoints.iter().map(|(id, ep)| {
            (
                ep.spec.network.clone(),
                id.clone(),
                record_of(cfg.advertise_addr, ep),
            )
        }),
    );
    for (net, blocks) in &d.ipam_blocks {
        for b in blocks {
            kv.push((claim_key(net, *b), CONFIRMED.to_string()));
        }
    }
    kv
}
