//! The cluster view kept up to date from chitchat's state by reading only what changed since the
//! last read: per node, chitchat's versions say which keys are new (every key set or deleted
//! after a read has a version above the node's `max_version` at that read), so a change of one
//! record costs parsing that record, not 100k. Finding those keys needs no scan of the node's
//! keys when chitchat's notifications of keys set ([`Touched`]) account for every version since
//! the last read (see `notified_since`); a deletion is not notified, and is found by the scan.
//!
//! A node's state is read whole instead when the per-key versions cannot be trusted to cover
//! the change: a node seen for the first time or with a new generation (a restart), a state
//! chitchat reset (its `last_gc_version` moved, or `max_version` went back), and a node that
//! came back to life. The first read of a fresh [`ViewReader`] reads every node whole; that is
//! the full pass the watcher still runs periodically, with this same code.

use super::endpoints::{Builder, Endpoints};
use super::record;
use super::{order, ClusterView, EndpointChange, ViewInterner};
use crate::api::types::{PeerView, RemoteEndpointView};
use chitchat::{ChitchatId, NodeState, VersionedValue};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// One node's state in chitchat.
pub struct NodeInput<'a> {
    pub id: &'a ChitchatId,
    pub state: &'a NodeState,
    pub live: bool,
    /// The keys chitchat notified as set for this node since the last read ([`Touched`]);
    /// None when not known.
    pub touched: Option<&'a [String]>,
}

/// The keys chitchat notified as set, by node, since a read last took them: what lets a read
/// skip scanning all of a node's keys (see [`ViewReader::read`]). Bounded: past
/// [`Touched::MAX`] keys it only remembers that it overflowed, and the next read scans.
#[derive(Debug, Default)]
pub struct Touched {
    keys: HashMap<ChitchatId, Vec<String>>,
    count: usize,
    overflowed: bool,
}

impl Touched {
    pub const MAX: usize = 16384;

    pub fn note(&mut self, node: &ChitchatId, key: &str) {
        if self.overflowed {
            return;
        }
        self.count += 1;
        if self.count > Self::MAX {
            self.keys.clear();
            self.overflowed = true;
            return;
        }
        match self.keys.get_mut(node) {
            Some(keys) => keys.push(key.to_string()),
            None => {
                self.keys.insert(node.clone(), vec![key.to_string()]);
            }
        }
    }

    /// The keys noted for `node`; None when they are not all known.
    pub fn of(&self, node: &ChitchatId) -> Option<&[String]> {
        (!self.overflowed).then(|| self.keys.get(node).map_or(&[][..], Vec::as_slice))
    }
}

/// How the reads of a [`ViewReader`] found the changed keys of a node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// From the notified keys alone.
    pub notified: u64,
    /// By scanning all of the node's keys.
    pub scanned: u64,
}

/// What was read of one node.
struct Cursor {
    id: ChitchatId,
    live: bool,
    /// The state's `last_gc_version` and `max_version` when read.
    gc: u64,
    max: u64,
    /// Record keys present but not in the view (undecodable).
    unread: BTreeSet<String>,
}

/// Follows chitchat's state read after read (see the module doc). Works against the view it
/// made last: `read` must be given that view.
pub struct ViewReader {
    nodes: BTreeMap<String, Cursor>,
    interner: ViewInterner,
    /// Endpoints per chunk of the views it makes (see `endpoints`).
    chunk: usize,
    pub stats: ReadStats,
}

impl Default for ViewReader {
    fn default() -> Self {
        ViewReader {
            nodes: BTreeMap::new(),
            interner: ViewInterner::default(),
            chunk: super::endpoints::CHUNK,
            stats: ReadStats::default(),
        }
    }
}

impl ViewReader {
    /// The view of the nodes' states (this node, `me`, left out) and the endpoint changes from
    /// `old`, in view order.
    pub fn read<'a>(
        &mut self,
        me: &str,
        nodes: impl IntoIterator<Item = NodeInput<'a>>,
        old: &ClusterView,
    ) -> (ClusterView, Vec<EndpointChange>) {
        // One entry per node name: the newest generation wins (a restarted node).
        let mut newest: BTreeMap<&str, NodeInput> = BTreeMap::new();
        for n in nodes {
            let id: &'a ChitchatId = n.id;
            if *id.node_id == *me {
                continue;
            }
            let older = newest
                .get(&*id.node_id)
                .is_some_and(|e| e.id.generation_id >= id.generation_id);
            if !older {
                newest.insert(&id.node_id, n);
            }
        }
        // Nodes known to the reader, to chitchat, or with endpoints in `old` (a fresh reader
        // must take those of a node chitchat forgot out of the view too).
        let mut names: BTreeSet<String> = self
            .nodes
            .keys()
            .cloned()
            .chain(newest.keys().map(|s| s.to_string()))
            .collect();
        let mut i = 0;
        while let Some(e) = old.endpoints.get(i) {
            names.insert(e.node.to_string());
            i = segment(&old.endpoints, i, &e.node).to;
        }
        let mut changes = Vec::new();
        let mut peers = Vec::new();
        for name in names {
            let seg = segment(&old.endpoints, 0, &name);
            let Some(n) = newest.get(name.as_str()) else {
                // Gone from chitchat's state: all its records go.
                self.nodes.remove(&name);
                changes.extend(seg.iter().map(|e| (Some(e.clone()), None)));
                continue;
            };
            let start = changes.len();
            self.read_node(&name, n, seg, &mut changes);
            let cursor = &self.nodes[&name];
            let endpoints = if n.live {
                let added = changes[start..]
                    .iter()
                    .map(|(o, n)| isize::from(n.is_some()) - isize::from(o.is_some()))
                    .sum::<isize>();
                (seg.len() as isize + added) as usize + cursor.unread.len()
            } else {
                n.state.iter_prefix(record::ENDPOINT_PREFIX).count()
            };
            peers.push(PeerView {
                node: name.clone(),
                gossip_addr: n.id.gossip_advertise_addr.to_string(),
                live: n.live,
                generation: n.id.generation_id,
                endpoints,
                sa_epoch: n
                    .state
                    .get(crate::crypto::epoch::GOSSIP_KEY)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            });
        }
        changes.sort_by(|a, b| order(side(a), side(b)));
        let endpoints = apply(&old.endpoints, &changes, self.chunk);
        (
            ClusterView {
                peers,
                endpoints,
                generation: 0,
            },
            changes,
        )
    }

    /// Brings the view of node `name` (`seg`: its endpoints in the old view) up to date.
    fn read_node(
        &mut self,
        name: &str,
        n: &NodeInput,
        seg: Segment,
        changes: &mut Vec<EndpointChange>,
    ) {
        let st = n.state;
        let whole = match self.nodes.get(name) {
            None => true,
            Some(c) => {
                c.id != *n.id
                    || c.gc != st.last_gc_version()
                    || st.max_version() < c.max
                    || (n.live && !c.live)
            }
        };
        let fresh = |live| Cursor {
            id: n.id.clone(),
            live,
            gc: st.last_gc_version(),
            max: st.max_version(),
            unread: BTreeSet::new(),
        };
        if !n.live {
            // Records of nodes that are not live are not in the view.
            changes.extend(seg.iter().map(|e| (Some(e.clone()), None)));
            self.nodes.insert(name.to_string(), fresh(false));
            return;
        }
        let node_ip = match n.id.gossip_advertise_addr.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        if whole {
            let mut c = fresh(true);
            let mut now = Vec::new();
            for (k, v) in st.iter_prefix(record::ENDPOINT_PREFIX) {
                if let Some(e) = self.decode(&mut c, name, node_ip, k, &v.value) {
                    now.push(e);
                }
            }
            merge(seg.iter(), now, changes);
            self.nodes.insert(name.to_string(), c);
            return;
        }
        let mut c = self.nodes.remove(name).expect("known node");
        if st.max_version() > c.max {
            // Every key set or deleted since the last read (deleted ones are tombstones with
            // a version until chitchat collects them, an hour later).
            let since = c.max;
            let changed: Box<dyn Iterator<Item = (&str, &VersionedValue)>> =
                match notified_since(st, since, n.touched) {
                    Some(keys) => {
                        self.stats.notified += 1;
                        Box::new(keys.into_iter())
                    }
                    None => {
                        self.stats.scanned += 1;
                        Box::new(
                            st.key_values_including_deleted()
                                .filter(move |(_, v)| v.version > since),
                        )
                    }
                };
            for (k, v) in changed.filter(|(k, _)| k.starts_with(record::ENDPOINT_PREFIX)) {
                let value = (!v.is_deleted()).then_some(v.value.as_str());
                c.unread.remove(k);
                let Some((network, id)) = record::parse_endpoint_key(k) else {
                    continue;
                };
                let was = seg.find(|e| key_order(e, network, id));
                let now = value.and_then(|v| self.decode(&mut c, name, node_ip, k, v));
                match (was, now) {
                    (None, None) => {}
                    (Some(o), Some(n)) if **o == n => {}
                    (o, n) => changes.push((o.cloned(), n.map(Arc::new))),
                }
            }
            c.max = st.max_version();
        }
        self.nodes.insert(name.to_string(), c);
    }

    /// The view of record `key` (value `value`) of node `node`; None (noted as unread) when it
    /// cannot be read.
    fn decode(
        &mut self,
        c: &mut Cursor,
        node: &str,
        node_ip: Ipv4Addr,
        key: &str,
        value: &str,
    ) -> Option<RemoteEndpointView> {
        let (network, id) = record::parse_endpoint_key(key)?;
        let Some(rec) = record::decode(value, node_ip) else {
            tracing::warn!(node, key, "ignoring undecodable endpoint record");
            c.unread.insert(key.to_string());
            return None;
        };
        Some(self.interner.endpoint(node, network, id, rec))
    }
}

/// The keys of `st` set or deleted after version `since`, from the keys notified as set
/// (`touched`), when those account for every version since: a node numbers each of its
/// mutations (set, delete) with the next version, and a key holds the version of its last one,
/// so when the notified keys hold all of the `max_version - since` versions, no other key
/// changed. A deletion is not notified: its version is missing, and None sends the caller to
/// scan all keys (100k keys: ~2 ms under chitchat's lock, on every change).
fn notified_since<'a>(
    st: &'a NodeState,
    since: u64,
    touched: Option<&'a [String]>,
) -> Option<Vec<(&'a str, &'a VersionedValue)>> {
    let span = st.max_version().checked_sub(since)?;
    let touched = touched?;
    if (touched.len() as u64) < span {
        return None;
    }
    let mut found: BTreeMap<u64, (&str, &VersionedValue)> = BTreeMap::new();
    for k in touched {
        if let Some(v) = st.get_versioned(k).filter(|v| v.version > since) {
            found.insert(v.version, (k.as_str(), v));
        }
    }
    (found.len() as u64 == span).then(|| found.into_values().collect())
}

/// The endpoint a change is about.
fn side(c: &EndpointChange) -> &RemoteEndpointView {
    c.0.as_deref()
        .or(c.1.as_deref())
        .expect("a change has a side")
}

/// The endpoints of one node in a view: `all[from..to]`.
#[derive(Clone, Copy)]
struct Segment<'a> {
    all: &'a Endpoints,
    from: usize,
    to: usize,
}

impl<'a> Segment<'a> {
    fn len(&self) -> usize {
        self.to - self.from
    }

    fn iter(&self) -> impl Iterator<Item = &'a Arc<RemoteEndpointView>> + 'a {
        self.all.range(self.from, self.to)
    }

    /// The endpoint `cmp` finds equal (binary search: `cmp` orders the segment).
    fn find(
        &self,
        cmp: impl Fn(&RemoteEndpointView) -> Ordering,
    ) -> Option<&'a Arc<RemoteEndpointView>> {
        let i = self
            .all
            .partition_point(self.from, self.to, |e| cmp(e).is_lt());
        (i < self.to)
            .then(|| &self.all[i])
            .filter(|e| cmp(e).is_eq())
    }
}

/// The endpoints of node `node` in a view (sorted by node first), looked for from `from` on.
fn segment<'a>(all: &'a Endpoints, from: usize, node: &str) -> Segment<'a> {
    let from = all.partition_point(from, all.len(), |e| *e.node < *node);
    let to = all.partition_point(from, all.len(), |e| *e.node == *node);
    Segment { all, from, to }
}

/// Where endpoint `e` sorts against the record of endpoint `id` of `network` on the same node
/// (gossip key order, `<network>:<id>`).
fn key_order(e: &RemoteEndpointView, network: &str, id: &str) -> Ordering {
    if *e.network == *network {
        e.id.as_str().cmp(id)
    } else {
        let a = e.network.bytes().chain(*b":").chain(e.id.bytes());
        let b = network.bytes().chain(*b":").chain(id.bytes());
        a.cmp(b)
    }
}

/// The changes from `was` to `now` (both sorted, one node's): unchanged endpoints produce none.
fn merge<'a>(
    was: impl Iterator<Item = &'a Arc<RemoteEndpointView>>,
    now: Vec<RemoteEndpointView>,
    changes: &mut Vec<EndpointChange>,
) {
    let mut a = was.peekable();
    let mut b = now.into_iter().peekable();
    loop {
        let o = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(o), Some(n)) => order(o, n),
        };
        match o {
            Ordering::Less => changes.push((a.next().cloned(), None)),
            Ordering::Greater => changes.push((None, b.next().map(Arc::new))),
            Ordering::Equal => {
                let (o, n) = (a.next().expect("peeked"), b.next().expect("peeked"));
                if **o != n {
                    changes.push((Some(o.clone()), Some(Arc::new(n))));
                }
            }
        }
    }
}

/// `old` with `changes` (in view order, found against `old`) applied: one pass over the
/// chunks, those no change falls in shared with `old` (see `endpoints`).
fn apply(old: &Endpoints, changes: &[EndpointChange], chunk: usize) -> Endpoints {
    let mut out = Builder::new(chunk);
    let chunks = old.chunks();
    let mut at = 0;
    for (k, chunk) in chunks.iter().enumerate() {
        // The changes up to this chunk's last endpoint (after the last chunk: all the rest).
        let end = if k + 1 == chunks.len() {
            changes.len()
        } else {
            let last = chunk.last().expect("chunks are not empty");
            at + changes[at..].partition_point(|c| order(side(c), last).is_le())
        };
        if end == at {
            out.share(chunk);
            continue;
        }
        let mut i = 0;
        for c in &changes[at..end] {
            let e = side(c);
            while i < chunk.len() && order(&chunk[i], e).is_lt() {
                out.push(chunk[i].clone());
                i += 1;
            }
            if c.0.is_some() {
                debug_assert!(i < chunk.len() && order(&chunk[i], e).is_eq());
                i += 1;
            }
            if let Some(n) = &c.1 {
                out.push(n.clone());
            }
        }
        for e in &chunk[i..] {
            out.push(e.clone());
        }
        at = end;
    }
    // Into an empty view: all of them are additions.
    for c in &changes[at..] {
        if let Some(n) = &c.1 {
            out.push(n.clone());
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{EndpointMode, PortSpec, Protocol, PublishMode, ServiceSpec};
    use crate::gossip::record::{encode, endpoint_key, EndpointRecord};
    use crate::reconcile::crypto::{self, PeerInputs};

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    struct Node {
        id: ChitchatId,
        state: NodeState,
        live: bool,
        /// Keys set since the last read, as chitchat's listeners are told.
        touched: Vec<String>,
    }

    fn id(name: &str, generation: u64, host: u8) -> ChitchatId {
        ChitchatId::new(
            name.to_string(),
            generation,
            format!("192.168.0.{host}:7946").parse().unwrap(),
        )
    }

    fn spec(s: u64) -> ServiceSpec {
        ServiceSpec {
            name: format!("svc{s}"),
            id: format!("svc{s}"),
            vip: Some(Ipv4Addr::new(10, 200, 0, s as u8)),
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                target_port: 80 + s as u16,
                published_port: None,
                publish_mode: PublishMode::Ingress,
                preserve_client_ip: false,
            }],
            endpoint_mode: EndpointMode::Vip,
        }
    }

    /// Publishes (or replaces) a random record of node `n`.
    fn publish(rng: &mut Rng, n: &mut Node) {
        let host = match n.id.gossip_advertise_addr.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        };
        let e = rng.next(12);
        let rec = EndpointRecord {
            ip: Ipv4Addr::new(10, 0, rng.next(4) as u8, e as u8 + 2),
            mac: if rng.next(3) == 0 {
                "02:00:00:00:00:09".into()
            } else {
                String::new()
            },
            vtep: if rng.next(5) == 0 {
                Ipv4Addr::new(172, 16, 0, 1)
            } else {
                host
            },
            name: format!("t{e}"),
            aliases: (0..rng.next(2)).map(|a| format!("a{a}")).collect(),
            service: (rng.next(3) > 0).then(|| spec(rng.next(3))),
            disabled: rng.next(4) == 0,
        };
        let rec = EndpointRecord {
            mac: if rec.mac.is_empty() {
                crate::ipam::mac_for(rec.ip)
            } else {
                rec.mac
            },
            ..rec
        };
        let v = encode(&rec, host);
        let net = ["n", "n-x", "o"][rng.next(3) as usize];
        let (key, before) = (endpoint_key(net, &format!("e{e}")), n.state.max_version());
        n.state.set(key.clone(), v);
        if n.state.max_version() > before {
            n.touched.push(key);
        }
    }

    fn delete(rng: &mut Rng, n: &mut Node) {
        let keys: Vec<String> = n
            .state
            .iter_prefix(record::ENDPOINT_PREFIX)
            .map(|(k, _)| k.to_string())
            .collect();
        if !keys.is_empty() {
            let k = &keys[rng.next(keys.len() as u64) as usize];
            n.state.delete(k);
        }
    }

    /// The nodes as a read sees them; `touched`: whether the keys set are known.
    fn inputs(nodes: &[Node], touched: bool) -> impl Iterator<Item = NodeInput<'_>> {
        nodes.iter().map(move |n| NodeInput {
            id: &n.id,
            state: &n.state,
            live: n.live,
            touched: touched.then_some(n.touched.as_slice()),
        })
    }

    /// Over random sequences of record changes, deletions, spec changes, node deaths and
    /// revivals, restarts (new generation), state resets and nodes leaving, the view read
    /// incrementally equals the one read whole from the same state, and the changes reported
    /// lead from each view to the next.
    #[test]
    fn incremental_read_equals_full_read() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut nodes: Vec<Node> = (0..4)
            .map(|i| Node {
                id: id(&format!("n{i}"), 1, i as u8 + 1),
                state: NodeState::for_test(),
                live: true,
                touched: Vec::new(),
            })
            .collect();
        // This node: left out of the view.
        nodes[0].id = id("me", 1, 1);
        // Chunks of 3: views of a few dozen endpoints cross many chunk borders.
        let mut reader = ViewReader {
            chunk: 3,
            ..ViewReader::default()
        };
        let mut view = ClusterView::default();
        let (mut total, mut most) = (0, 0);
        let mut peer_inputs = PeerInputs::default();
        let (mut peers_moved, mut peers_kept) = (0, 0);
        let mut shared = 0;
        for step in 0..3000 {
            let k = rng.next(nodes.len() as u64) as usize;
            let many = nodes.len() > 2;
            let mut reset = false;
            let n = &mut nodes[k];
            match rng.next(100) {
                0..=49 => publish(&mut rng, n),
                50..=74 => delete(&mut rng, n),
                75..=79 => n.live = !n.live,
                80..=81 => {
                    // A restart: a new generation with fresh state (the old one still known).
                    let name = n.id.node_id.clone();
                    let generation = nodes
                        .iter()
                        .filter(|m| m.id.node_id == name)
                        .map(|m| m.id.generation_id)
                        .max()
                        .unwrap_or(0);
                    nodes.push(Node {
                        id: id(&name, generation + 1, k as u8 + 1),
                        state: NodeState::for_test(),
                        live: true,
                        touched: Vec::new(),
                    });
                }
                82 if reader
                    .nodes
                    .get(&*n.id.node_id)
                    .is_some_and(|c| c.id == n.id && c.max > 1) =>
                {
                    // chitchat reset the state (a delta after a GC it had missed): max_version
                    // goes back, other keys. (chitchat also moves `last_gc_version` up then,
                    // which NodeState::for_test cannot; read before max_version grows back.)
                    n.state = NodeState::for_test();
                    publish(&mut rng, n);
                    reset = true;
                }
                83 if many => {
                    // A node garbage-collected by chitchat (dead long enough).
                    nodes.remove(k);
                }
                _ => {
                    // Several changes between two reads.
                    for _ in 0..rng.next(5) {
                        publish(&mut rng, n)
                    }
                }
            }
            if !reset && rng.next(3) == 0 {
                continue; // changes pile up between reads
            }
            // Now and then the keys set are not known (too many for `Touched`).
            let known = step % 8 != 0;
            let (next, changes) = reader.read("me", inputs(&nodes, known), &view);
            for n in &mut nodes {
                n.touched.clear();
            }
            let n_changes = changes.len();
            let (whole, _) = ViewReader::default().read("me", inputs(&nodes, false), &view);
            let (scratch, all) =
                ViewReader::default().read("me", inputs(&nodes, false), &ClusterView::default());
            assert_eq!(next.endpoints, whole.endpoints, "step {step}");
            assert_eq!(next.endpoints, scratch.endpoints, "step {step}");
            assert_eq!(all.len(), scratch.endpoints.len());
            let peers = |v: &ClusterView| format!("{:?}", v.peers);
            assert_eq!(peers(&next), peers(&scratch), "step {step}");
            // The peers' inputs followed change by change tell exactly when the peers changed.
            let peers_changed = crypto::peers(&view) != crypto::peers(&next);
            assert_eq!(
                peer_inputs.changed(&view, &next, &changes),
                peers_changed,
                "step {step}"
            );
            assert_eq!(peer_inputs, PeerInputs::of(&next), "step {step}");
            peers_moved += usize::from(peers_changed);
            peers_kept += usize::from(!peers_changed && !changes.is_empty());
            // The changes are those a comparison of the two views finds.
            let norm = |mut c: Vec<EndpointChange>| {
                c.sort_by_key(|(o, n)| format!("{o:?}{n:?}"));
                c
            };
            assert_eq!(
                norm(changes),
                norm(crate::gossip::endpoint_changes(&view, &next)),
                "step {step}"
            );
            assert!(next
                .endpoints
                .iter()
                .is_sorted_by(|a, b| order(a, b).is_lt()));
            // Chunks stay small and those no change fell in are shared with the last view.
            assert!(next.endpoints.chunks().iter().all(|c| c.len() < 2 * 3));
            shared += next
                .endpoints
                .chunks()
                .iter()
                .filter(|c| view.endpoints.chunks().iter().any(|o| Arc::ptr_eq(o, c)))
                .count();
            total += n_changes;
            most = most.max(next.endpoints.len());
            view = next;
        }
        // The sequence did exercise the reader.
        assert!(
            total > 500 && most > 20,
            "{total} changes, at most {most} endpoints"
        );
        assert!(shared > 1000, "{shared} chunks shared");
        // Both ways of finding a node's changed keys were taken, each many times.
        let ReadStats { notified, scanned } = reader.stats;
        assert!(notified > 150 && scanned > 50, "{:?}", reader.stats);
        assert!(
            peers_moved > 50 && peers_kept > 200,
            "peers changed {peers_moved} times, endpoints alone {peers_kept} times"
        );
    }
}
