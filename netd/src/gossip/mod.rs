//! Endpoint tables between nodes: chitchat (Scuttlebutt anti-entropy + phi-accrual failure
//! detection) over a sealed UDP transport.

pub mod claims;
pub mod keyring;
pub mod record;
pub mod transport;

use crate::api::types::{PeerView, RemoteEndpointView};
use crate::config::Config;
use anyhow::{Context, Result};
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use keyring::Keyring;
use record::{parse_endpoint_key, EndpointRecord};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use transport::{SealedTransport, Stats};

pub struct Gossip {
    handle: ChitchatHandle,
    pub keyring: Arc<Keyring>,
    pub stats: Arc<Stats>,
}

/// What this node knows of the others, at one instant.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub peers: Vec<PeerView>,
    /// Endpoints of live nodes other than this one.
    pub endpoints: Vec<RemoteEndpointView>,
    /// Number of this view among those the gossip watcher published (it counts views whose
    /// endpoints changed; see [`ViewChanges`]); 0 for a view made otherwise.
    pub generation: u64,
}

/// A remote endpoint that changed between two views: before and after (None: absent).
pub type EndpointChange = (Option<RemoteEndpointView>, Option<RemoteEndpointView>);

/// The endpoint changes of the last views published, for what follows the view change by
/// change instead of re-reading all of it (the LB): entry `g` leads from view `g - 1` to `g`.
#[derive(Debug, Default)]
pub struct ViewChanges {
    log: std::collections::VecDeque<(u64, Arc<Vec<EndpointChange>>)>,
}

impl ViewChanges {
    /// Views remembered; a consumer further behind re-reads the whole view.
    const KEEP: usize = 256;

    pub fn push(&mut self, generation: u64, changes: Vec<EndpointChange>) {
        if self.log.len() == Self::KEEP {
            self.log.pop_front();
        }
        self.log.push_back((generation, Arc::new(changes)));
    }

    /// The changes from view `from` to view `to`, if all are still known.
    pub fn between(&self, from: u64, to: u64) -> Option<Vec<Arc<Vec<EndpointChange>>>> {
        if to < from {
            return None;
        }
        let out: Vec<_> = self
            .log
            .iter()
            .filter(|(g, _)| *g > from && *g <= to)
            .map(|(_, c)| c.clone())
            .collect();
        (out.len() as u64 == to - from).then_some(out)
    }
}

/// The endpoint changes from `old` to `new` (endpoints by node, network and id).
pub fn endpoint_changes(old: &ClusterView, new: &ClusterView) -> Vec<EndpointChange> {
    fn key(e: &RemoteEndpointView) -> (&str, &str, &str) {
        (&e.node, &e.network, &e.id)
    }
    let mut was: std::collections::HashMap<_, &RemoteEndpointView> =
        old.endpoints.iter().map(|e| (key(e), e)).collect();
    let mut out = Vec::new();
    for e in &new.endpoints {
        match was.remove(&key(e)) {
            Some(o) if o == e => {}
            o => out.push((o.cloned(), Some(e.clone()))),
        }
    }
    out.extend(was.into_values().map(|o| (Some(o.clone()), None)));
    out
}

impl ClusterView {
    pub fn endpoints_on<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = &'a RemoteEndpointView> + 'a {
        self.endpoints.iter().filter(move |e| e.network == network)
    }
}

impl Gossip {
    pub async fn start(
        cfg: &Config,
        keys: &[String],
        initial: Vec<(String, String)>,
    ) -> Result<Gossip> {
        let keyring = Arc::new(Keyring::new(keys));
        let stats = Arc::new(Stats::default());
        let bind = cfg.gossip_bind();
        let advertise = if bind.ip().is_unspecified() {
            SocketAddr::new(cfg.advertise_addr.into(), bind.port())
        } else {
            bind
        };
        // A new generation on every start: peers then replace our old state instead of merging.
        let generation = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        let interval = Duration::from_millis(cfg.gossip_interval_ms);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(cfg.node_name.clone(), generation, advertise),
            cluster_id: "netd".into(),
            gossip_interval: interval,
            listen_addr: bind,
            seed_nodes: cfg.seeds.clone(),
            // chitchat's phi is (silence / mean heartbeat interval), the mean smoothed towards
            // `initial_interval` with weight 5. A one-sample window keeps the mean close to that
            // prior (0.43-0.47 s for 0.5 s), so a node is declared dead after a near-constant
            // ~2.8 s of silence, whatever the heartbeat rate (which grows with cluster size and
            // nudges): short enough for the 5 s bound, long enough not to flap under load.
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 6.0,
                sampling_window_size: 1,
                max_interval: Duration::from_secs(2),
                initial_interval: Duration::from_millis(500),
                dead_node_grace_period: Duration::from_secs(24 * 3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let transport = SealedTransport {
            keyring: keyring.clone(),
            stats: stats.clone(),
        };
        let handle = spawn_chitchat(config, initial, &transport)
            .await
            .context("starting gossip")?;
        Ok(Gossip {
            handle,
            keyring,
            stats,
        })
    }

    pub async fn set(&self, key: String, value: String) {
        let cc = self.handle.chitchat();
        cc.lock().await.self_node_state().set(key, value);
        self.nudge().await;
    }

    pub async fn delete(&self, key: &str) {
        let cc = self.handle.chitchat();
        let mut g = cc.lock().await;
        if g.self_node_state().get(key).is_some() {
            g.self_node_state().delete(key);
        }
        drop(g);
        self.nudge().await;
    }

    pub async fn publish_endpoint(&self, network: &str, id: &str, rec: &EndpointRecord) {
        let v = serde_json::to_string(rec).expect("record serializes");
        self.set(record::endpoint_key(network, id), v).await;
    }

    pub async fn withdraw_endpoint(&self, network: &str, id: &str) {
        self.delete(&record::endpoint_key(network, id)).await;
    }

    /// Gossips right away with every live peer instead of waiting for the next round: a local
    /// change reaches the others in one round trip.
    pub async fn nudge(&self) {
        let cc = self.handle.chitchat();
        let addrs: Vec<SocketAddr> = {
            let g = cc.lock().await;
            let me = g.self_chitchat_id().clone();
            g.live_nodes()
                .filter(|id| **id != me)
                .map(|id| id.gossip_advertise_addr)
                .chain(g.seed_nodes())
                .collect()
        };
        for a in addrs {
            let _ = self.handle.gossip(a);
        }
    }

    /// Cheap fingerprint of everything a view depends on: changes when any node's state version
    /// or the set of live nodes changes.
    pub async fn fingerprint(&self) -> u64 {
        let cc = self.handle.chitchat();
        let g = cc.lock().await;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let live: Vec<&ChitchatId> = g.live_nodes().collect();
        for (id, st) in g.node_states() {
            id.node_id.hash(&mut h);
            id.generation_id.hash(&mut h);
            st.max_version().hash(&mut h);
            live.contains(&id).hash(&mut h);
        }
        h.finish()
    }

    pub async fn view(&self) -> ClusterView {
        let cc = self.handle.chitchat();
        let g = cc.lock().await;
        let me = g.self_chitchat_id().clone();
        let live: Vec<ChitchatId> = g.live_nodes().cloned().collect();
        let mut view = ClusterView::default();
        // One entry per node name: the newest generation wins (a restarted node).
        let mut newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
        for id in g.node_states().keys() {
            let e = newest.entry(&id.node_id).or_insert(id);
            if id.generation_id > e.generation_id {
                *e = id;
            }
        }
        for id in newest.values() {
            if id.node_id == me.node_id {
                continue;
            }
            let Some(st) = g.node_state(id) else { continue };
            let is_live = live.contains(id);
            let mut count = 0;
            for (key, value) in st.key_values() {
                let Some((network, eid)) = parse_endpoint_key(key) else {
                    continue;
                };
                count += 1;
                if !is_live {
                    continue;
                }
                let Ok(rec) = serde_json::from_str::<EndpointRecord>(value) else {
                    tracing::warn!(node = %id.node_id, key, "ignoring undecodable endpoint record");
                    continue;
                };
                view.endpoints.push(RemoteEndpointView {
                    id: eid.to_string(),
                    node: id.node_id.to_string(),
                    network: network.to_string(),
                    ip: rec.ip,
                    mac: rec.mac,
                    vtep: rec.vtep,
                    name: rec.name,
                    aliases: rec.aliases,
                    service: rec.service,
                    service_disabled: rec.disabled,
                });
            }
            view.peers.push(PeerView {
                node: id.node_id.to_string(),
                gossip_addr: id.gossip_advertise_addr.to_string(),
                live: is_live,
                generation: id.generation_id,
                endpoints: count,
            });
        }
        view
    }
}
