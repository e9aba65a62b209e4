//! The names a container can resolve, from the endpoint tables (local desired state plus the
//! gossiped view). Lookups are scoped to the networks the asking container is attached to:
//! network isolation holds in DNS too.
//!
//! The index follows the endpoint changes one by one ([`DnsIndex::change`], then
//! [`DnsIndex::finish`]): each network keeps what every name is made of (the addresses that
//! carry it, the services that claim it), and a change recomputes only the names and reverse
//! entries it touches, so one task coming or going at 100k endpoints costs microseconds, not a
//! rebuild. [`DnsIndex::build`] is the same code fed every endpoint. Rules, whatever the order
//! the endpoints came in:
//! - a name claimed by a service (its name, `tasks.<name>`, its tasks' aliases) answers for the
//!   service (the VIP, or the enabled tasks for DNSRR; `tasks.<name>` always the tasks); claimed
//!   by several services, the last by name wins; otherwise the addresses of the endpoints
//!   named so (and aliases of endpoints without a service), sorted;
//! - a service whose tasks disagree on the spec uses the one most of them carry (ties: the
//!   lowest VIP, then id);
//! - reverse: a service VIP names its service (the last by name); an endpoint address the
//!   smallest `<name>.<network>.` of the endpoints holding it.

use crate::api::types::{EndpointMode, ServiceSpec};
use crate::gossip::{ClusterView, EndpointChange};
use crate::state::DesiredState;
use smallvec::SmallVec;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

/// One endpoint as DNS sees it, whichever node it lives on.
#[derive(Debug, Clone)]
pub struct DnsEndpoint<'a> {
    pub network: &'a str,
    pub ip: Ipv4Addr,
    pub name: &'a str,
    pub aliases: &'a [String],
    pub service: Option<&'a ServiceSpec>,
    pub disabled: bool,
}

impl<'a> DnsEndpoint<'a> {
    pub fn of_remote(e: &'a crate::api::types::RemoteEndpointView) -> DnsEndpoint<'a> {
        DnsEndpoint {
            network: &e.network,
            ip: e.ip,
            name: &e.name,
            aliases: &e.aliases,
            service: e.service.as_deref(),
            disabled: e.service_disabled,
        }
    }

    pub fn of_local(e: &'a crate::state::LocalEndpoint) -> DnsEndpoint<'a> {
        DnsEndpoint {
            network: &e.spec.network,
            ip: e.ip,
            name: &e.spec.name,
            aliases: &e.spec.aliases,
            service: e.spec.service.as_ref(),
            disabled: e.service_disabled,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub ips: Vec<Ipv4Addr>,
    /// DNSRR: the order is shuffled on every query.
    pub shuffle: bool,
}

/// One service on one network, from its tasks.
#[derive(Debug, Clone, Default)]
struct Group {
    /// The specs the tasks carry, with how many carry each.
    specs: Vec<(ServiceSpec, usize)>,
    /// (address, drained) of each task (a multiset: a task leaves as it came).
    tasks: Vec<(Ipv4Addr, bool)>,
    /// The tasks' aliases, lower case (a multiset).
    aliases: Vec<String>,
    /// What the group answers, as last resolved: the names it claims (sorted; a slice, not a
    /// `BTreeSet`, whose node is ~280 bytes for the usual two names) and its VIP.
    claimed: Box<[String]>,
    vip: Option<Ipv4Addr>,
}

impl Group {
    fn spec(&self) -> Option<&ServiceSpec> {
        self.specs
            .iter()
            .max_by(|(a, n), (b, m)| {
                n.cmp(m)
                    .then_with(|| b.vip.cmp(&a.vip))
                    .then_with(|| b.id.cmp(&a.id))
            })
            .map(|(s, _)| s)
    }

    fn enabled(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .tasks
            .iter()
            .filter(|(_, d)| !d)
            .map(|(ip, _)| *ip)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Removes one `x` from the multiset `v`.
fn take<T: PartialEq>(v: &mut Vec<T>, x: &T) {
    if let Some(i) = v.iter().position(|y| y == x) {
        v.swap_remove(i);
    }
}

/// Adds (`add`) or removes `name` to or from the sorted set of `key` in `map`, dropping emptied
/// entries; `owned` makes the key when it is new.
fn set_in<K, Q>(
    map: &mut HashMap<K, Few<Box<str>>>,
    key: &Q,
    owned: impl FnOnce() -> K,
    name: &str,
    add: bool,
) where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let at = |v: &Few<Box<str>>| v.binary_search_by(|x| (**x).cmp(name));
    if add {
        match map.get_mut(key) {
            Some(v) => {
                if let Err(i) = at(v) {
                    v.insert(i, name.into());
                }
            }
            None => {
                map.insert(owned(), smallvec::smallvec![name.into()]);
            }
        }
    } else if let Some(v) = map.get_mut(key) {
        if let Ok(i) = at(v) {
            v.remove(i);
        }
        if v.is_empty() {
            map.remove(key);
        }
    }
}

/// A small multiset held inline: nearly every name has one address and every address one
/// name, and 100k one-element `Vec`s would each cost a heap block (of capacity 4).
type Few<T> = SmallVec<[T; 1]>;

/// Adds (`add`) or removes one `x` to or from the multiset of `key` in `map`, dropping emptied
/// entries; `owned` makes the key when it is new.
fn count_in<K, Q, T>(
    map: &mut HashMap<K, Few<T>>,
    key: &Q,
    owned: impl FnOnce() -> K,
    x: T,
    add: bool,
) where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    T: PartialEq,
{
    if add {
        match map.get_mut(key) {
            Some(v) => v.push(x),
            None => {
                map.insert(owned(), smallvec::smallvec![x]);
            }
        }
    } else if let Some(v) = map.get_mut(key) {
        if let Some(i) = v.iter().position(|y| *y == x) {
            v.swap_remove(i);
        }
        if v.is_empty() {
            map.remove(key);
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NetRecords {
    pub internal: bool,
    /// Endpoints on this network.
    count: usize,
    /// Answers of the names services claim, kept resolved; other names (and reverse names) are
    /// resolved when asked, from `plain` (and `ptr_eps`, `vips`): one copy of each, not two.
    names: HashMap<String, Answer>,
    /// Name → addresses of the endpoints carrying it (a multiset).
    plain: HashMap<Arc<str>, Few<Ipv4Addr>>,
    /// Names (lower case) of the endpoints holding each address (a multiset); the reverse
    /// name is `<name>.<network>.`.
    ptr_eps: HashMap<Ipv4Addr, Few<Arc<str>>>,
    /// Services by lower-case name.
    services: BTreeMap<String, Group>,
    /// Name → services claiming it; VIP → services with it.
    claims: HashMap<Box<str>, Few<Box<str>>>,
    vips: HashMap<Ipv4Addr, Few<Box<str>>>,
}

/// What a change left to recompute, per network.
#[derive(Debug, Default)]
struct Dirty {
    groups: BTreeSet<String>,
    names: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct DnsIndex {
    nets: HashMap<String, NetRecords>,
    /// Container namespace → networks it is attached to.
    attachments: HashMap<PathBuf, Vec<String>>,
    /// Networks marked `internal` (no forwarding).
    internal: BTreeSet<String>,
    dirty: HashMap<String, Dirty>,
}

impl DnsIndex {
    pub fn build(desired: &DesiredState, view: &ClusterView) -> DnsIndex {
        let mut idx = DnsIndex {
            internal: desired
                .networks
                .iter()
                .filter(|(_, s)| s.internal)
                .map(|(n, _)| n.clone())
                .collect(),
            ..DnsIndex::default()
        };
        for e in desired.endpoints.values() {
            idx.change(None, Some(&DnsEndpoint::of_local(e)));
        }
        for e in &view.endpoints {
            idx.change(None, Some(&DnsEndpoint::of_remote(e)));
        }
        idx.finish();
        idx.set_attachments(desired);
        idx
    }

    pub fn from_endpoints(all: &[DnsEndpoint], internal: impl Fn(&str) -> bool) -> DnsIndex {
        let mut idx = DnsIndex {
            internal: all
                .iter()
                .filter(|e| internal(e.network))
                .map(|e| e.network.to_string())
                .collect(),
            ..DnsIndex::default()
        };
        for e in all {
            idx.change(None, Some(e));
        }
        idx.finish();
        idx
    }

    /// Takes endpoint `old` out and puts `new` in (either may be absent); names are recomputed
    /// by [`DnsIndex::finish`]. Which networks are internal is fixed when the index is built
    /// (networks are local state: a change of them rebuilds the index).
    pub fn change(&mut self, old: Option<&DnsEndpoint>, new: Option<&DnsEndpoint>) {
        if let Some(o) = old {
            self.contribute(o, false);
        }
        if let Some(n) = new {
            self.contribute(n, true);
        }
    }

    /// Applies the view changes `changes` (old and new record of each endpoint).
    pub fn change_remote(&mut self, changes: &[EndpointChange]) {
        for (o, n) in changes {
            let o = o.as_deref().map(DnsEndpoint::of_remote);
            let n = n.as_deref().map(DnsEndpoint::of_remote);
            self.change(o.as_ref(), n.as_ref());
        }
    }

    /// Applies the change of the local endpoints from `old` to `new` and takes the attachments
    /// from `new`.
    pub fn change_local(&mut self, old: &DesiredState, new: &DesiredState) {
        for (id, o) in &old.endpoints {
            match new.endpoints.get(id) {
                Some(n) if n == o => {}
                n => {
                    let n = n.map(DnsEndpoint::of_local);
                    self.change(Some(&DnsEndpoint::of_local(o)), n.as_ref());
                }
            }
        }
        for (id, n) in &new.endpoints {
            if !old.endpoints.contains_key(id) {
                self.change(None, Some(&DnsEndpoint::of_local(n)));
            }
        }
        self.set_attachments(new);
    }

    fn set_attachments(&mut self, desired: &DesiredState) {
        self.attachments.clear();
        for e in desired.endpoints.values() {
            self.attachments
                .entry(e.spec.netns.clone())
                .or_default()
                .push(e.spec.network.clone());
        }
    }

    fn contribute(&mut self, e: &DnsEndpoint, add: bool) {
        let internal = self.internal.contains(e.network);
        let net = self
            .nets
            .entry(e.network.to_string())
            .or_insert_with(|| NetRecords {
                internal,
                ..Default::default()
            });
        let dirty = self.dirty.entry(e.network.to_string()).or_default();
        if add {
            net.count += 1;
        } else {
            net.count = net.count.saturating_sub(1);
        }
        // One copy of the name for both maps (a heap block each would be ~3 MB at 100k).
        let name: Arc<str> = e.name.to_ascii_lowercase().into();
        count_in(&mut net.plain, &*name, || name.clone(), e.ip, add);
        if e.service.is_none() {
            for a in e.aliases.iter().map(|a| a.to_ascii_lowercase()) {
                count_in(&mut net.plain, a.as_str(), || a.as_str().into(), e.ip, add);
            }
        }
        count_in(&mut net.ptr_eps, &e.ip, || e.ip, name, add);
        let Some(svc) = e.service else {
            return;
        };
        let key = svc.name.to_ascii_lowercase();
        let g = net.services.entry(key.clone()).or_default();
        let aliases = e.aliases.iter().map(|a| a.to_ascii_lowercase());
        if add {
            match g.specs.iter_mut().find(|(s, _)| s == svc) {
                Some((_, n)) => *n += 1,
                None => {
                    // Nearly always the one spec of the service: room for one, not four (a
                    // spec is ~100 bytes, at 10k services that is ~3 MB).
                    g.specs.reserve_exact(1);
                    g.specs.push((svc.clone(), 1));
                }
            }
            g.tasks.push((e.ip, e.disabled));
            g.aliases.extend(aliases);
        } else {
            if let Some(i) = g.specs.iter().position(|(s, _)| s == svc) {
                g.specs[i].1 -= 1;
                if g.specs[i].1 == 0 {
                    g.specs.swap_remove(i);
                }
            }
            take(&mut g.tasks, &(e.ip, e.disabled));
            for a in aliases {
                take(&mut g.aliases, &a);
            }
        }
        dirty.groups.insert(key);
    }

    /// Recomputes what the changes since the last call touched.
    pub fn finish(&mut self) {
        for (network, mut dirty) in std::mem::take(&mut self.dirty) {
            let Some(net) = self.nets.get_mut(&network) else {
                continue;
            };
            // Services first: what they claim now, and what they claimed before, is dirty.
            for key in &dirty.groups {
                let Some(g) = net.services.get_mut(key) else {
                    continue;
                };
                let (claimed, vip) = match g.spec() {
                    Some(spec) if !g.tasks.is_empty() => {
                        let mut c: BTreeSet<String> = g.aliases.iter().cloned().collect();
                        c.insert(key.clone());
                        c.insert(format!("tasks.{key}"));
                        let vip = (spec.endpoint_mode == EndpointMode::Vip)
                            .then_some(spec.vip)
                            .flatten();
                        (c, vip)
                    }
                    _ => (BTreeSet::new(), None),
                };
                for n in g.claimed.iter().filter(|n| !claimed.contains(*n)) {
                    set_in(
                        &mut net.claims,
                        n.as_str(),
                        || n.as_str().into(),
                        key,
                        false,
                    );
                }
                for n in claimed
                    .iter()
                    .filter(|n| g.claimed.binary_search(n).is_err())
                {
                    set_in(&mut net.claims, n.as_str(), || n.as_str().into(), key, true);
                }
                // Every claimed name: the answer may have changed (tasks, drained, VIP).
                dirty
                    .names
                    .extend(g.claimed.iter().chain(&claimed).cloned());
                if g.vip != vip {
                    for (ip, add) in [(g.vip, false), (vip, true)] {
                        let Some(ip) = ip else { continue };
                        set_in(&mut net.vips, &ip, || ip, key, add);
                    }
                }
                g.claimed = claimed.into_iter().collect();
                g.vip = vip;
                if g.tasks.is_empty() {
                    net.services.remove(key);
                }
            }
            for n in dirty.names {
                match net.claimed_answer(&n) {
                    Some(a) => net.names.insert(n, a),
                    None => net.names.remove(&n),
                };
            }
            if net.count == 0 {
                self.nets.remove(&network);
            }
        }
    }

    /// Records that the container in `netns` is attached to `network`.
    pub fn with_attachment(mut self, netns: &std::path::Path, network: &str) -> DnsIndex {
        self.attachments
            .entry(netns.to_path_buf())
            .or_default()
            .push(network.to_string());
        self
    }

    /// Networks the container in `netns` is attached to.
    pub fn networks_of(&self, netns: &std::path::Path) -> &[String] {
        self.attachments
            .get(netns)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether queries from these networks may be forwarded: not when all are `internal`.
    pub fn may_forward(&self, nets: &[String]) -> bool {
        nets.iter()
            .any(|n| self.nets.get(n).is_none_or(|r| !r.internal))
    }

    /// `name` (any case, with or without the trailing dot) as seen from `nets`.
    pub fn lookup(&self, nets: &[String], name: &str) -> Option<Answer> {
        let q = name.trim_end_matches('.').to_ascii_lowercase();
        // `<name>.<network>`: restricted to that network (if the asker is on it).
        if let Some((head, net)) = q.rsplit_once('.') {
            if nets.iter().any(|n| n.eq_ignore_ascii_case(net)) {
                if let Some(a) = self.nets.get(net).and_then(|r| r.answer(head)) {
                    return Some(a);
                }
            }
        }
        let mut found: Option<Answer> = None;
        for n in nets {
            if let Some(a) = self.nets.get(n).and_then(|r| r.answer(&q)) {
                let f = found.get_or_insert_with(Answer::default);
                for ip in &a.ips {
                    if !f.ips.contains(ip) {
                        f.ips.push(*ip);
                    }
                }
                f.shuffle |= a.shuffle;
            }
        }
        found
    }

    /// Every name of `nets` with its answer, sorted by network and name (for `netd inspect`).
    pub fn records(&self, nets: &[String]) -> Vec<(String, String, Answer)> {
        let mut v: Vec<(String, String, Answer)> = nets
            .iter()
            .filter_map(|n| Some((n, self.nets.get(n)?)))
            .flat_map(|(n, r)| {
                r.names
                    .keys()
                    .map(String::as_str)
                    .chain(
                        r.plain
                            .keys()
                            .map(|k| &**k)
                            .filter(|k| !r.names.contains_key(*k)),
                    )
                    .filter_map(move |name| Some((n.clone(), name.to_string(), r.answer(name)?)))
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// Names for a reverse lookup of `ip`, from the asker's networks.
    pub fn reverse(&self, nets: &[String], ip: Ipv4Addr) -> Vec<String> {
        nets.iter()
            .filter_map(|n| self.nets.get(n)?.reverse(n, ip))
            .collect()
    }
}

impl NetRecords {
    /// The answer for `name` (lower case) from what it is made of (see the module doc).
    fn answer(&self, name: &str) -> Option<Answer> {
        if let Some(a) = self.names.get(name) {
            return Some(a.clone());
        }
        let mut ips = self.plain.get(name)?.to_vec();
        ips.sort();
        ips.dedup();
        Some(Answer {
            ips,
            shuffle: false,
        })
    }

    /// The reverse name of `ip` on this network (`network`).
    fn reverse(&self, network: &str, ip: Ipv4Addr) -> Option<String> {
        match self.vips.get(&ip).and_then(|s| s.last()) {
            Some(svc) => Some(format!("{svc}.{network}.")),
            // The smallest `<name>.<network>.`: names compared with the dot that follows them.
            None => self
                .ptr_eps
                .get(&ip)?
                .iter()
                .min_by(|a, b| a.bytes().chain([b'.']).cmp(b.bytes().chain([b'.'])))
                .map(|name| format!("{name}.{network}.")),
        }
    }

    /// The answer for a name services claim (the last claimer by name answers).
    fn claimed_answer(&self, name: &str) -> Option<Answer> {
        if let Some(key) = self.claims.get(name).and_then(|s| s.last()) {
            let key: &str = key;
            let g = &self.services[key];
            let tasks = g.enabled();
            let own = name == key || g.aliases.iter().any(|a| a == name);
            return Some(match (own, g.vip) {
                (true, Some(vip)) => Answer {
                    ips: vec![vip],
                    shuffle: false,
                },
                _ => Answer {
                    ips: tasks,
                    shuffle: true,
                },
            });
        }
        None
    }
}

/// `d.c.b.a.in-addr.arpa` → `a.b.c.d`.
pub fn parse_reverse(name: &str) -> Option<Ipv4Addr> {
    let q = name.trim_end_matches('.').to_ascii_lowercase();
    let head = q.strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = head
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, mode: EndpointMode, vip: Option<&str>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            id: format!("id-{name}"),
            vip: vip.map(|v| v.parse().unwrap()),
            ports: vec![],
            endpoint_mode: mode,
        }
    }

    fn ep<'a>(
        network: &'a str,
        ip: &str,
        name: &'a str,
        service: Option<&'a ServiceSpec>,
        disabled: bool,
    ) -> DnsEndpoint<'a> {
        DnsEndpoint {
            network,
            ip: ip.parse().unwrap(),
            name,
            aliases: &[],
            service,
            disabled,
        }
    }

    fn ips(a: Option<Answer>) -> Vec<String> {
        let mut v: Vec<String> = a
            .map(|a| a.ips)
            .unwrap_or_default()
            .iter()
            .map(|i| i.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn names_services_tasks_and_scoping() {
        let web = svc("web", EndpointMode::Vip, Some("10.0.0.100"));
        let rr = svc("rr", EndpointMode::Dnsrr, None);
        let aliases = vec!["db-alias".to_string()];
        let mut db = ep("a", "10.0.0.9", "db", None, false);
        db.aliases = &aliases;
        let all = vec![
            ep("a", "10.0.0.2", "web.1", Some(&web), false),
            ep("a", "10.0.0.3", "web.2", Some(&web), false),
            ep("a", "10.0.0.4", "web.3", Some(&web), true), // drained
            ep("a", "10.0.0.5", "rr.1", Some(&rr), false),
            ep("a", "10.0.0.6", "rr.2", Some(&rr), false),
            db,
            ep("b", "10.1.0.2", "other", None, false),
        ];
        let idx = DnsIndex::from_endpoints(&all, |_| false);
        let a = vec!["a".to_string()];
        assert_eq!(ips(idx.lookup(&a, "web")), ["10.0.0.100"]);
        assert_eq!(
            ips(idx.lookup(&a, "WEB.")),
            ["10.0.0.100"],
            "case-insensitive, trailing dot"
        );
        assert_eq!(
            ips(idx.lookup(&a, "tasks.web")),
            ["10.0.0.2", "10.0.0.3"],
            "drained task gone"
        );
        assert_eq!(ips(idx.lookup(&a, "rr")), ["10.0.0.5", "10.0.0.6"]);
        assert!(idx.lookup(&a, "rr").unwrap().shuffle);
        assert_eq!(ips(idx.lookup(&a, "db-alias")), ["10.0.0.9"]);
        assert_eq!(
            ips(idx.lookup(&a, "web.1.a")),
            ["10.0.0.2"],
            "<name>.<network>"
        );
        assert!(
            idx.lookup(&a, "other").is_none(),
            "isolation: not on network b"
        );
        assert!(
            idx.lookup(&a, "other.b").is_none(),
            "isolation: not on network b"
        );
        assert_eq!(idx.reverse(&a, "10.0.0.100".parse().unwrap()), ["web.a."]);
        assert_eq!(idx.reverse(&a, "10.0.0.2".parse().unwrap()), ["web.1.a."]);
        assert!(idx.reverse(&a, "10.1.0.2".parse().unwrap()).is_empty());
    }

    /// Several endpoints on one address: the reverse name is the smallest `<name>.<network>.`
    /// as a whole ("a-b.n." sorts before "a.n.", though "a" sorts before "a-b"), whatever the
    /// order they came and went in; a name claimed by two services answers for the last by
    /// name, and for the other once that one is gone.
    #[test]
    fn reverse_and_claim_ties() {
        let (x, y) = (
            svc("x", EndpointMode::Vip, Some("10.0.0.100")),
            svc("y", EndpointMode::Vip, Some("10.0.0.101")),
        );
        let shared = vec!["both".to_string()];
        let mut tx = ep("n", "10.0.0.3", "x.1", Some(&x), false);
        tx.aliases = &shared;
        let mut ty = ep("n", "10.0.0.4", "y.1", Some(&y), false);
        ty.aliases = &shared;
        let a = ep("n", "10.0.0.2", "a", None, false);
        let ab = ep("n", "10.0.0.2", "a-b", None, false);
        let n = vec!["n".to_string()];
        let ip = "10.0.0.2".parse().unwrap();
        for order in [[&a, &ab, &tx, &ty], [&ty, &ab, &tx, &a]] {
            let mut idx = DnsIndex::default();
            for e in order {
                idx.contribute(e, true);
            }
            idx.finish();
            assert_eq!(idx.reverse(&n, ip), ["a-b.n."]);
            assert_eq!(ips(idx.lookup(&n, "both")), ["10.0.0.101"], "y claims last");
            idx.contribute(&ab, false);
            idx.contribute(&ty, false);
            idx.finish();
            assert_eq!(idx.reverse(&n, ip), ["a.n."]);
            assert_eq!(
                ips(idx.lookup(&n, "both")),
                ["10.0.0.100"],
                "x once y is gone"
            );
            idx.contribute(&a, false);
            idx.finish();
            assert!(idx.reverse(&n, ip).is_empty());
        }
    }

    /// Everything the index answers, comparable.
    fn dump(idx: &DnsIndex) -> Vec<String> {
        let mut nets: Vec<String> = idx.nets.keys().cloned().collect();
        nets.sort();
        let mut out: Vec<String> = idx
            .records(&nets)
            .into_iter()
            .map(|(n, name, a)| format!("{n} {name} {:?} {}", a.ips, a.shuffle))
            .collect();
        for n in &nets {
            let r = &idx.nets[n];
            let mut ptr: Vec<String> = r
                .ptr_eps
                .keys()
                .chain(r.vips.keys())
                .map(|ip| format!("{n} ptr {ip} {:?}", r.reverse(n, *ip)))
                .collect();
            ptr.sort();
            ptr.dedup();
            out.extend(ptr);
            out.push(format!("{n} internal {}", r.internal));
        }
        out
    }

    /// Changes applied one by one (random adds, removals and updates, applied in batches)
    /// leave the index answering exactly what one built from the final endpoints answers.
    #[test]
    fn following_changes_matches_a_fresh_build() {
        #[derive(Clone, PartialEq)]
        struct Ep {
            network: String,
            ip: Ipv4Addr,
            name: String,
            aliases: Vec<String>,
            service: Option<ServiceSpec>,
            disabled: bool,
        }
        fn view(e: &Ep) -> DnsEndpoint<'_> {
            DnsEndpoint {
                network: &e.network,
                ip: e.ip,
                name: &e.name,
                aliases: &e.aliases,
                service: e.service.as_ref(),
                disabled: e.disabled,
            }
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        // Few networks, names, addresses and services: collisions of every kind happen.
        let services = [
            svc("web", EndpointMode::Vip, Some("10.9.0.1")),
            svc("web", EndpointMode::Vip, Some("10.9.0.2")), // tasks disagreeing on the VIP
            svc("Web", EndpointMode::Dnsrr, None),
            svc("db", EndpointMode::Dnsrr, None),
            svc("api", EndpointMode::Vip, Some("10.9.0.3")),
            svc("tasks.db", EndpointMode::Vip, Some("10.0.0.7")), // VIP = a task address
        ];
        let names = ["web", "db", "api", "x", "Web.1", "tasks.web", "db.1"];
        let random_ep = |rnd: &mut dyn FnMut(u64) -> u64| Ep {
            network: ["a", "b"][rnd(2) as usize].to_string(),
            ip: Ipv4Addr::new(10, 0, 0, rnd(8) as u8),
            name: names[rnd(names.len() as u64) as usize].to_string(),
            aliases: (0..rnd(3))
                .map(|_| names[rnd(names.len() as u64) as usize].to_string())
                .collect(),
            service: (rnd(3) > 0).then(|| services[rnd(services.len() as u64) as usize].clone()),
            disabled: rnd(4) == 0,
        };
        for round in 0..200 {
            let mut live: Vec<Ep> = Vec::new();
            let mut idx = DnsIndex::default();
            for _ in 0..(1 + round % 7) {
                for _ in 0..(1 + rnd(6)) {
                    match rnd(3) {
                        0 if !live.is_empty() => {
                            let e = live.swap_remove(rnd(live.len() as u64) as usize);
                            idx.change(Some(&view(&e)), None);
                        }
                        1 if !live.is_empty() => {
                            let i = rnd(live.len() as u64) as usize;
                            let mut n = live[i].clone();
                            match rnd(4) {
                                0 => n.disabled = !n.disabled,
                                1 => n.ip = Ipv4Addr::new(10, 0, 0, rnd(8) as u8),
                                2 => n.service = None,
                                _ => n = random_ep(&mut rnd),
                            }
                            idx.change(Some(&view(&live[i])), Some(&view(&n)));
                            live[i] = n;
                        }
                        _ => {
                            let e = random_ep(&mut rnd);
                            idx.change(None, Some(&view(&e)));
                            live.push(e);
                        }
                    }
                }
                idx.finish();
                let all: Vec<DnsEndpoint> = live.iter().map(view).collect();
                let fresh = DnsIndex::from_endpoints(&all, |_| false);
                assert_eq!(dump(&idx), dump(&fresh), "round {round}");
            }
            // All gone: nothing left.
            for e in live.drain(..) {
                idx.change(Some(&view(&e)), None);
            }
            idx.finish();
            assert!(idx.nets.is_empty(), "round {round}: {:?}", dump(&idx));
        }
    }

    /// A container attached (a local change followed, not a rebuild) to an internal network
    /// is not forwarded; one on a plain network is.
    #[test]
    fn internal_networks_hold_when_followed() {
        let mut old = DesiredState::default();
        for (n, internal) in [("sealed", true), ("open", false)] {
            old.networks.insert(
                n.into(),
                serde_json::from_value(serde_json::json!({
                    "subnet": "10.62.0.0/24", "vni": 4100, "internal": internal
                }))
                .unwrap(),
            );
        }
        let mut idx = DnsIndex::build(&old, &ClusterView::default());
        let mut new = old.clone();
        for (id, n) in [("a", "sealed"), ("b", "open")] {
            new.endpoints.insert(
                id.into(),
                serde_json::from_value(serde_json::json!({
                    "spec": {"network": n, "netns": format!("/run/netns/{id}"), "ifname": "eth0", "name": id},
                    "ip": "10.62.0.2", "mac": "02:42:0a:3e:00:02"
                }))
                .unwrap(),
            );
        }
        idx.change_local(&old, &new);
        idx.finish();
        let sealed = idx
            .networks_of(std::path::Path::new("/run/netns/a"))
            .to_vec();
        assert_eq!(sealed, ["sealed"]);
        assert!(!idx.may_forward(&sealed));
        let open = idx
            .networks_of(std::path::Path::new("/run/netns/b"))
            .to_vec();
        assert!(idx.may_forward(&open));
        assert_eq!(ips(idx.lookup(&sealed, "a")), ["10.62.0.2"]);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            parse_reverse("4.3.2.10.in-addr.arpa."),
            Some("10.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_reverse("3.2.10.in-addr.arpa."), None);
        assert_eq!(parse_reverse("x.3.2.10.in-addr.arpa"), None);
    }
}
