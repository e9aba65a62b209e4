//! Endpoint tables between nodes: chitchat (Scuttlebutt anti-entropy + phi-accrual failure
//! detection) over a sealed UDP transport.

pub mod claims;
pub mod endpoints;
pub mod follow;
pub mod keyring;
pub mod record;
pub mod transport;

use crate::api::types::{PeerView, RemoteEndpointView, ServiceSpec};
use crate::config::Config;
use anyhow::{Context, Result};
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use follow::{NodeInput, Touched, ViewReader};
use keyring::Keyring;
use record::EndpointRecord;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use transport::{SealedTransport, Stats};

pub struct Gossip {
    handle: ChitchatHandle,
    /// The address in this node's gossip identity (records leave out a VTEP equal to it).
    node_ip: std::net::Ipv4Addr,
    pub keyring: Arc<Keyring>,
    pub stats: Arc<Stats>,
    /// Woken when a key-value of any node is set (chitchat's listener; deletions and liveness
    /// changes are not notified: the watcher still polls for those).
    changed: Arc<tokio::sync::Notify>,
    /// The keys set since the watcher last read (noted under chitchat's lock, taken under it).
    touched: Arc<std::sync::Mutex<Touched>>,
    _listener: chitchat::ListenerHandle,
}

/// What this node knows of the others, at one instant.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub peers: Vec<PeerView>,
    /// Endpoints of live nodes other than this one, by node then gossip key (each shared
    /// between the views it is in, in chunks shared too: a new view copies the chunks its
    /// changes fall in, not records).
    pub endpoints: endpoints::Endpoints,
    /// Number of this view among those the gossip watcher published (it counts views whose
    /// endpoints changed; see [`ViewChanges`]); 0 for a view made otherwise.
    pub generation: u64,
}

/// Makes the endpoints of a view sharing what they have in common: one copy of each node and
/// network name and of each distinct service spec.
#[derive(Debug, Default)]
pub struct ViewInterner {
    names: std::collections::HashSet<Arc<str>>,
    services: std::collections::HashSet<Arc<ServiceSpec>>,
}

impl ViewInterner {
    pub fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(a.clone());
        a
    }

    pub fn service(&mut self, s: ServiceSpec) -> Arc<ServiceSpec> {
        if let Some(a) = self.services.get(&s) {
            return a.clone();
        }
        let a = Arc::new(s);
        self.services.insert(a.clone());
        a
    }

    /// The one copy of a spec equal to `s` (`s` itself if it is the first).
    pub fn shared_service(&mut self, s: Arc<ServiceSpec>) -> Arc<ServiceSpec> {
        if let Some(a) = self.services.get(&s) {
            return a.clone();
        }
        self.services.insert(s.clone());
        s
    }

    /// The view of endpoint `id` of `network` on `node`, published as `rec`.
    pub fn endpoint(
        &mut self,
        node: &str,
        network: &str,
        id: &str,
        mut rec: EndpointRecord,
    ) -> RemoteEndpointView {
        let spec = rec.service.take().map(|s| self.service(s));
        self.endpoint_with(node, network, id, rec, spec)
    }

    /// As [`Self::endpoint`], the service spec (`rec.service` is ignored) already shared.
    pub fn endpoint_with(
        &mut self,
        node: &str,
        network: &str,
        id: &str,
        rec: EndpointRecord,
        service: Option<Arc<ServiceSpec>>,
    ) -> RemoteEndpointView {
        let mut mac = rec.mac;
        mac.shrink_to_fit();
        let mut name = rec.name;
        name.shrink_to_fit();
        RemoteEndpointView {
            id: id.to_string(),
            node: self.name(node),
            network: self.name(network),
            ip: rec.ip,
            mac,
            vtep: rec.vtep,
            name,
            aliases: rec.aliases,
            service,
            service_disabled: rec.disabled,
        }
    }
}

/// A remote endpoint that changed between two views: before and after (None: absent).
pub type EndpointChange = (
    Option<Arc<RemoteEndpointView>>,
    Option<Arc<RemoteEndpointView>>,
);

/// The endpoint changes of the last views published, for what follows the view change by
/// change instead of re-reading all of it (LB, DNS names, FDB and neighbor entries): entry `g`
/// leads from view `g - 1` to `g`. Bounded by the size of the view (see [`ViewChanges::push`]):
/// a change bigger than that is remembered as "too big", and old entries go; a consumer that
/// needs those re-reads the whole view.
#[derive(Debug, Default)]
pub struct ViewChanges {
    log: std::collections::VecDeque<(u64, Option<Arc<Vec<EndpointChange>>>)>,
    /// Changes held in `log`.
    held: usize,
}

impl ViewChanges {
    /// Endpoint changes remembered at least, however small the view.
    const KEEP: usize = 4096;

    /// Remembers the changes that led to view `generation`, which holds `view_len` endpoints.
    ///
    /// The log holds up to as many changes as that view has endpoints (at least [`Self::KEEP`]):
    /// following fewer changes than the view has endpoints costs a consumer less than reading
    /// the view whole, and a consumer that fell behind while it read one view whole can follow
    /// again. With a fixed bound of 4096, a sync of 100k records outran every consumer: a view
    /// made from one gossip delta can bring thousands of records, and a consumer that read the
    /// view whole once (for the FDB a dump, up to ~1 s at 100k) fell further behind than the
    /// bound, so that each of its passes read the view whole again.
    ///
    /// Memory: a change is two pointers to records the views share; only records no longer in
    /// the view (changed or removed since) are kept alive by the log alone, at most one per
    /// change held.
    pub fn push(&mut self, generation: u64, changes: Vec<EndpointChange>, view_len: usize) {
        let bound = view_len.max(Self::KEEP);
        let n = changes.len();
        let entry = (n <= bound).then(|| Arc::new(changes));
        self.held += if entry.is_some() { n } else { 0 };
        self.log.push_back((generation, entry));
        while self.held > bound || self.log.len() > bound {
            let Some((_, c)) = self.log.pop_front() else {
                break;
            };
            self.held -= c.map_or(0, |c| c.len());
        }
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
            .collect::<Option<_>>()?;
        (out.len() as u64 == to - from).then_some(out)
    }
}

/// The order of endpoints in a view: by node, then by gossip key (`ep:<network>:<id>`).
fn order(a: &RemoteEndpointView, b: &RemoteEndpointView) -> std::cmp::Ordering {
    fn key(e: &RemoteEndpointView) -> impl Iterator<Item = u8> + '_ {
        let (n, i) = (e.network.as_bytes(), e.id.as_bytes());
        n.iter().chain(b":").chain(i).copied()
    }
    a.node.cmp(&b.node).then_with(|| {
        if a.network == b.network {
            a.id.cmp(&b.id)
        } else {
            key(a).cmp(key(b))
        }
    })
}

/// The endpoint changes from `old` to `new` (endpoints by node, network and id).
pub fn endpoint_changes(old: &ClusterView, new: &ClusterView) -> Vec<EndpointChange> {
    let sorted = |v: &endpoints::Endpoints| v.iter().is_sorted_by(|a, b| order(a, b).is_lt());
    let mut out = Vec::new();
    if sorted(&old.endpoints) && sorted(&new.endpoints) {
        // Views as `ViewReader` makes them: one merge pass, no hashing.
        let (mut a, mut b) = (
            old.endpoints.iter().peekable(),
            new.endpoints.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(o), None) => {
                    out.push((Some((*o).clone()), None));
                    a.next();
                }
                (None, Some(n)) => {
                    out.push((None, Some((*n).clone())));
                    b.next();
                }
                (Some(o), Some(n)) => match order(o, n) {
                    std::cmp::Ordering::Less => {
                        out.push((Some((*o).clone()), None));
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        out.push((None, Some((*n).clone())));
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if o != n {
                            out.push((Some((*o).clone()), Some((*n).clone())));
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        return out;
    }
    fn key(e: &RemoteEndpointView) -> (&str, &str, &str) {
        (&e.node, &e.network, &e.id)
    }
    let mut was: std::collections::HashMap<_, &Arc<RemoteEndpointView>> =
        old.endpoints.iter().map(|e| (key(e), e)).collect();
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
        self.endpoints
            .iter()
            .map(|e| &**e)
            .filter(move |e| *e.network == *network)
    }
}

/// What this node publishes for its endpoints on (re)start: `(network, id, record)` →
/// key-values.
pub fn initial_endpoint_state(
    cfg: &Config,
    eps: impl IntoIterator<Item = (String, String, EndpointRecord)>,
) -> Vec<(String, String)> {
    let node_ip = match advertise_addr(cfg).ip() {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
    };
    eps.into_iter()
        .map(|(network, id, rec)| {
            (
                record::endpoint_key(&network, &id),
                record::encode(&rec, node_ip),
            )
        })
        .collect()
}

/// The gossip address in this node's identity.
fn advertise_addr(cfg: &Config) -> SocketAddr {
    let bind = cfg.gossip_bind();
    if bind.ip().is_unspecified() {
        SocketAddr::new(cfg.advertise_addr.into(), bind.port())
    } else {
        bind
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
        let advertise = advertise_addr(cfg);
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
            // Whenever a live node's max_version moves (every round that brings a change),
            // chitchat 0.11 copies the whole state of every live node into its live-nodes watch
            // channel (`update_nodes_liveness`), and that channel keeps the last copy: at 100k
            // records, ~60 MB held and tens of ms of copying under the state lock per change.
            // netd never reads that channel (it reads `live_nodes()`, which this predicate does
            // not affect: chitchat consults it only to fill the channel), so nothing is copied.
            extra_liveness_predicate: Some(Box::new(|_| false)),
        };
        let transport = SealedTransport {
            keyring: keyring.clone(),
            stats: stats.clone(),
        };
        let handle = spawn_chitchat(config, initial, &transport)
            .await
            .context("starting gossip")?;
        let changed = Arc::new(tokio::sync::Notify::new());
        let touched = Arc::new(std::sync::Mutex::new(Touched::default()));
        let (wake, note) = (changed.clone(), touched.clone());
        // Called under chitchat's state lock for every key set: a wake-up and a note of the key.
        let listener = handle
            .chitchat()
            .lock()
            .await
            .subscribe_event("", move |ev| {
                note.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .note(ev.node, ev.key);
                wake.notify_one()
            });
        Ok(Gossip {
            handle,
            node_ip: match advertise.ip() {
                std::net::IpAddr::V4(a) => a,
                std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
            },
            keyring,
            stats,
            changed,
            touched,
            _listener: listener,
        })
    }

    /// Returns when a key-value was set in gossip (by any node) since the last return.
    pub async fn key_set(&self) {
        self.changed.notified().await
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
        let v = record::encode(rec, self.node_ip);
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
        fingerprint_of(&*self.handle.chitchat().lock().await)
    }

    /// The view brought up to date by `reader` from `old` (the view it made last), and the
    /// endpoint changes from `old`, and the fingerprint of the state read; a fresh reader reads
    /// everything (see [`follow`]).
    ///
    /// Blocks on chitchat's lock and does CPU work proportional to what changed (all of it for
    /// a fresh reader): call it from a blocking thread, not from a runtime worker.
    pub fn read_view(
        &self,
        reader: &mut ViewReader,
        old: &ClusterView,
    ) -> (ClusterView, Vec<EndpointChange>, u64) {
        let cc = self.handle.chitchat();
        let g = cc.blocking_lock();
        // The fingerprint of exactly the state read (it may have moved since the caller's).
        let fp = fingerprint_of(&g);
        let touched = std::mem::take(&mut *self.touched.lock().unwrap_or_else(|e| e.into_inner()));
        let live: std::collections::HashSet<&ChitchatId> = g.live_nodes().collect();
        let nodes = g.node_states().iter().map(|(id, state)| NodeInput {
            id,
            state,
            live: live.contains(id),
            touched: touched.of(id),
        });
        let (view, changes) = reader.read(&g.self_chitchat_id().node_id, nodes, old);
        (view, changes, fp)
    }
}

/// See [`Gossip::fingerprint`].
fn fingerprint_of(g: &chitchat::Chitchat) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(node: &str, network: &str, id: &str, ip: u8) -> RemoteEndpointView {
        let rec = EndpointRecord {
            ip: std::net::Ipv4Addr::new(10, 0, 0, ip),
            mac: String::new(),
            vtep: std::net::Ipv4Addr::new(192, 168, 0, 1),
            name: id.into(),
            aliases: vec![],
            service: None,
            disabled: false,
        };
        ViewInterner::default().endpoint(node, network, id, rec)
    }

    /// Sorted views (as `ViewReader` makes them) take the merge path, others the hash path:
    /// both find the same changes.
    #[test]
    fn endpoint_changes_of_sorted_and_unsorted_views_agree() {
        let old = vec![
            ep("a", "n", "1", 1),
            ep("a", "n", "2", 2),
            ep("a", "n-x", "1", 3),
            ep("b", "n", "1", 4),
        ];
        let mut new = old.clone();
        new.remove(1); // gone
        new[1].ip = std::net::Ipv4Addr::new(10, 0, 0, 9); // changed
        new.push(ep("c", "n", "7", 7)); // new
        let view = |v: Vec<RemoteEndpointView>| ClusterView {
            endpoints: v.into_iter().map(Arc::new).collect(),
            ..ClusterView::default()
        };
        let norm = |mut c: Vec<EndpointChange>| {
            c.sort_by_key(|(o, n)| format!("{o:?}{n:?}"));
            c
        };
        let sorted = endpoint_changes(&view(old.clone()), &view(new.clone()));
        assert_eq!(sorted.len(), 3);
        let (mut o, mut n) = (old.clone(), new.clone());
        o.reverse();
        n.reverse();
        let unsorted = endpoint_changes(&view(o), &view(n));
        assert_eq!(norm(sorted), norm(unsorted));
        assert!(endpoint_changes(&view(old.clone()), &view(old)).is_empty());
    }

    #[test]
    fn view_changes_are_known_only_without_gaps() {
        let mut log = ViewChanges::default();
        let add = |i: usize| (None, Some(Arc::new(ep("a", "n", &i.to_string(), 1))));
        log.push(1, vec![add(0)], 1);
        log.push(2, vec![], 1);
        assert_eq!(log.between(0, 2).map(|v| v.len()), Some(2));
        assert_eq!(log.between(2, 2).map(|v| v.len()), Some(0));
        // Too big to remember in a small view: whoever needs it re-reads the view.
        let big = (0..=ViewChanges::KEEP).map(add).collect();
        log.push(3, big, ViewChanges::KEEP);
        assert!(log.between(2, 3).is_none());
        log.push(4, vec![], ViewChanges::KEEP);
        assert!(log.between(3, 4).is_some());
        // Old entries go once more changes than the bound arrived.
        for g in 5..5 + ViewChanges::KEEP as u64 {
            log.push(g, vec![(None, None)], 1);
        }
        assert!(log.between(0, 2).is_none());
    }

    /// The bound grows with the view: a sync of a big view, in many changes, stays followable
    /// from its start.
    #[test]
    fn view_changes_are_kept_up_to_the_view_size() {
        let mut log = ViewChanges::default();
        let per = 1000;
        let views = 20;
        for g in 1..=views {
            let changes = (0..per)
                .map(|i| (None, Some(Arc::new(ep("a", "n", &format!("{g}.{i}"), 1)))))
                .collect();
            log.push(g as u64, changes, g * per);
        }
        let all = log.between(0, views as u64).expect("all kept");
        assert_eq!(all.iter().map(|c| c.len()).sum::<usize>(), views * per);
        // One change as big as the view it makes is kept too; one bigger than it is not.
        let n = views * per + 1;
        let big: Vec<_> = (0..n).map(|_| (None, None)).collect();
        log.push(views as u64 + 1, big.clone(), n);
        assert!(log.between(views as u64, views as u64 + 1).is_some());
        // It pushed the older entries out: more changes than the view's size are not held.
        assert!(log.between(0, views as u64 + 1).is_none());
        log.push(views as u64 + 2, big, n - 1);
        assert!(log.between(views as u64 + 1, views as u64 + 2).is_none());
    }
}
