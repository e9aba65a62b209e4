//! A network's remote endpoints as the FDB and neighbor entries netd programmed, followed change
//! by change: a pass after a gossip change plans from the view's changes against what netd
//! last programmed, instead of dumping the device's whole FDB and neighbor table and comparing
//! them with the whole view (at 100k remote endpoints, a pass for one change cost a dump of
//! 100k entries of each). The kernel is read back by drift repair (a full pass), which starts
//! this anew.

use crate::api::types::RemoteEndpointView;
use crate::gossip::{ClusterView, EndpointChange};
use crate::kernel::neigh::{self, NeighPlan, Remote};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The remote endpoints of `network` as kernel entries, skipping undecodable MACs and
/// addresses that collide with a local endpoint (a local endpoint always wins on this node).
pub fn wanted(view: &ClusterView, network: &str, local_ips: &BTreeSet<Ipv4Addr>) -> Vec<Remote> {
    let mut v: Vec<Remote> = view
        .endpoints_on(network)
        .filter_map(|e| remote(e, local_ips))
        .collect();
    v.sort();
    v
}

fn remote(e: &RemoteEndpointView, local_ips: &BTreeSet<Ipv4Addr>) -> Option<Remote> {
    if local_ips.contains(&e.ip) {
        return None;
    }
    Some(Remote {
        ip: e.ip,
        mac: neigh::parse_mac(&e.mac)?,
        vtep: e.vtep,
    })
}

/// What netd programmed on one network's VXLAN device (a pass that failed leaves none): the
/// wanted entries of view `generation` with the local addresses `local_ips`. That is all the
/// device holds of remote endpoints, but in the startup grace after a restart, when entries
/// nobody asked for are kept until gossip caught up (the full pass that ends the grace reads
/// the kernel and removes them). Several endpoints may want the same MAC or address (a
/// duplicate in gossip); each is counted, and the kernel entry is the one
/// [`NeighPlan::compute`] picks, the last in address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programmed {
    pub generation: u64,
    pub local_ips: BTreeSet<Ipv4Addr>,
    /// (MAC, address, VTEP) → how many endpoints want it: the FDB entry of a MAC is its last.
    by_mac: BTreeMap<([u8; 6], Ipv4Addr, Ipv4Addr), u32>,
    /// (address, MAC, VTEP) → how many endpoints want it: the neighbor entry of an address is
    /// its last.
    by_ip: BTreeMap<(Ipv4Addr, [u8; 6], Ipv4Addr), u32>,
}

impl Programmed {
    /// After a pass that programmed exactly `want` (sorted, from [`wanted`]).
    pub fn new(generation: u64, local_ips: BTreeSet<Ipv4Addr>, want: &[Remote]) -> Programmed {
        let mut macs: Vec<_> = want.iter().map(|r| (r.mac, r.ip, r.vtep)).collect();
        macs.sort_unstable();
        Programmed {
            generation,
            local_ips,
            by_mac: counted(macs),
            by_ip: counted(want.iter().map(|r| (r.ip, r.mac, r.vtep)).collect()),
        }
    }

    /// The entries to change for `changes` (view by view, oldest first) on `network`, and this
    /// brought to `generation`; with `keep_extra`, entries no longer wanted stay, as
    /// [`NeighPlan::compute`] leaves them. None when the changes do not fit what this holds (an
    /// endpoint removed that was never added): then only a read of the kernel tells.
    pub fn follow(
        &mut self,
        network: &str,
        changes: &[Arc<Vec<EndpointChange>>],
        generation: u64,
        keep_extra: bool,
    ) -> Option<NeighPlan> {
        let mine = |e: &Option<Arc<RemoteEndpointView>>| {
            e.as_deref()
                .filter(|e| *e.network == *network)
                .and_then(|e| remote(e, &self.local_ips))
        };
        let mut gone = Vec::new();
        let mut came = Vec::new();
        for (o, n) in changes.iter().flat_map(|c| c.iter()) {
            let (o, n) = (mine(o), mine(n));
            if o != n {
                gone.extend(o);
                came.extend(n);
            }
        }
        let macs: BTreeSet<[u8; 6]> = gone.iter().chain(&came).map(|r| r.mac).collect();
        let ips: BTreeSet<Ipv4Addr> = gone.iter().chain(&came).map(|r| r.ip).collect();
        let before = self.entries(&macs, &ips);
        // Additions first: a change that moves an endpoint adds before it removes, and the
        // counts never go below zero on the way.
        for r in &came {
            *self.by_mac.entry((r.mac, r.ip, r.vtep)).or_default() += 1;
            *self.by_ip.entry((r.ip, r.mac, r.vtep)).or_default() += 1;
        }
        for r in &gone {
            if !uncount(&mut self.by_mac, (r.mac, r.ip, r.vtep))
                || !uncount(&mut self.by_ip, (r.ip, r.mac, r.vtep))
            {
                return None;
            }
        }
        let after = self.entries(&macs, &ips);
        self.generation = generation;
        Some(plan(before, after, keep_extra))
    }

    /// The FDB entries of `macs` and the neighbor entries of `ips` this wants.
    fn entries(&self, macs: &BTreeSet<[u8; 6]>, ips: &BTreeSet<Ipv4Addr>) -> Entries {
        let fdb = macs
            .iter()
            .map(|m| {
                let (lo, hi) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
                let last = self.by_mac.range((*m, lo, lo)..=(*m, hi, hi)).next_back();
                (*m, last.map(|((_, _, vtep), _)| *vtep))
            })
            .collect();
        let neigh = ips
            .iter()
            .map(|i| {
                let last = self
                    .by_ip
                    .range(
                        (*i, [0; 6], Ipv4Addr::UNSPECIFIED)..=(*i, [0xff; 6], Ipv4Addr::BROADCAST),
                    )
                    .next_back();
                (*i, last.map(|((_, mac, _), _)| *mac))
            })
            .collect();
        Entries { fdb, neigh }
    }
}

/// Wanted entries of some MACs and addresses (None: no entry).
struct Entries {
    fdb: Vec<([u8; 6], Option<Ipv4Addr>)>,
    neigh: Vec<(Ipv4Addr, Option<[u8; 6]>)>,
}

/// From `before` to `after` (the same keys), as [`NeighPlan::compute`] would plan it: a moved
/// FDB entry is deleted and set anew, and with `keep_extra` nothing else is deleted.
fn plan(before: Entries, after: Entries, keep_extra: bool) -> NeighPlan {
    let mut p = NeighPlan::default();
    for ((mac, old), (_, new)) in before.fdb.into_iter().zip(after.fdb) {
        match (old, new) {
            (Some(o), Some(n)) if o != n => {
                p.fdb_del.push((mac, o));
                p.fdb_set.push((mac, n));
            }
            (None, Some(n)) => p.fdb_set.push((mac, n)),
            (Some(o), None) if !keep_extra => p.fdb_del.push((mac, o)),
            _ => {}
        }
    }
    for ((ip, old), (_, new)) in before.neigh.into_iter().zip(after.neigh) {
        match (old, new) {
            (o, Some(n)) if o != Some(n) => p.neigh_set.push((ip, n)),
            (Some(_), None) if !keep_extra => p.neigh_del.push(ip),
            _ => {}
        }
    }
    p
}

/// A map of counts from sorted keys.
fn counted<K: Ord + Copy>(sorted: Vec<K>) -> BTreeMap<K, u32> {
    let mut v: Vec<(K, u32)> = Vec::with_capacity(sorted.len());
    for k in sorted {
        match v.last_mut() {
            Some((last, n)) if *last == k => *n += 1,
            _ => v.push((k, 1)),
        }
    }
    v.into_iter().collect()
}

/// Takes one off `k`'s count; false when it had none.
fn uncount<K: Ord>(m: &mut BTreeMap<K, u32>, k: K) -> bool {
    match m.get_mut(&k) {
        Some(1) => {
            m.remove(&k);
            true
        }
        Some(n) => {
            *n -= 1;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small world, so that entries collide: few addresses, MACs and VTEPs, two networks,
    /// some MACs undecodable.
    struct World(u64);
    impl World {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn endpoint(&mut self, id: usize) -> Arc<RemoteEndpointView> {
            let mac = match self.next(8) {
                0 => "zz:00".to_string(),
                m => format!("02:00:00:00:00:{m:02x}"),
            };
            Arc::new(RemoteEndpointView {
                id: format!("e{id}"),
                node: "n".into(),
                network: ["a", "b"][self.next(2) as usize].into(),
                ip: Ipv4Addr::new(10, 0, 0, self.next(10) as u8),
                mac,
                vtep: Ipv4Addr::new(192, 168, 0, self.next(3) as u8),
                name: String::new(),
                aliases: vec![],
                service: None,
                service_disabled: false,
            })
        }
    }

    fn view(slots: &[Option<Arc<RemoteEndpointView>>], generation: u64) -> ClusterView {
        ClusterView {
            endpoints: slots.iter().flatten().cloned().collect::<Vec<_>>().into(),
            generation,
            ..Default::default()
        }
    }

    /// What the kernel holds after a pass that dumped it and planned with `NeighPlan::compute`.
    fn programmed_whole(want: &[Remote]) -> Kernel {
        let mut k = Kernel::default();
        k.apply(&NeighPlan::compute(
            want,
            &BTreeMap::new(),
            &BTreeMap::new(),
            false,
        ));
        k
    }

    /// The FDB and neighbor entries of a device, changed as `neigh::apply` changes them.
    #[derive(Debug, Default, PartialEq)]
    struct Kernel {
        fdb: BTreeMap<[u8; 6], Ipv4Addr>,
        neigh: BTreeMap<Ipv4Addr, [u8; 6]>,
    }
    impl Kernel {
        fn apply(&mut self, p: &NeighPlan) {
            for (m, v) in &p.fdb_del {
                assert_eq!(
                    self.fdb.remove(m),
                    Some(*v),
                    "deleting an FDB entry not held"
                );
            }
            self.fdb.extend(p.fdb_set.iter().copied());
            for i in &p.neigh_del {
                assert!(
                    self.neigh.remove(i).is_some(),
                    "deleting a neighbor not held"
                );
            }
            self.neigh.extend(p.neigh_set.iter().copied());
        }
    }

    /// Random changes, a few views at a time, on two networks, in phases that start with a
    /// pass that reads the kernel (as netd's full pass does), with other local addresses; in
    /// every third phase (a startup grace) the kernel holds extra entries first, which stay.
    /// After each pass, the followed plan leaves the kernel as a plan from the whole view
    /// would, and what is followed equals what a fresh start from the view holds.
    #[test]
    fn following_changes_programs_what_a_whole_pass_would() {
        let mut w = World(0x9e37_79b9_7f4a_7c15);
        let mut slots: Vec<Option<Arc<RemoteEndpointView>>> = vec![None; 24];
        let mut local_ips = BTreeSet::new();
        let mut generation = 0;
        let mut kernel = Kernel::default();
        let mut followed = Programmed::new(0, local_ips.clone(), &[]);
        // In a grace: the kernel as passes that read it and kept extras would leave it.
        let mut reference = Kernel::default();
        let (mut plans, mut graces) = (0, 0);
        for step in 0..3000 {
            let mut changes = Vec::new();
            for _ in 0..1 + w.next(3) {
                let mut c = Vec::new();
                for _ in 0..1 + w.next(4) {
                    let i = w.next(slots.len() as u64) as usize;
                    let new = (w.next(4) != 0).then(|| w.endpoint(i));
                    let old = std::mem::replace(&mut slots[i], new.clone());
                    if old.is_some() || new.is_some() {
                        c.push((old, new));
                    }
                }
                changes.push(Arc::new(c));
            }
            generation += changes.len() as u64;
            let v = view(&slots, generation);
            let grace = (step / 50) % 3 == 0;
            if step % 50 == 0 {
                local_ips = BTreeSet::from([Ipv4Addr::new(10, 0, 0, w.next(10) as u8)]);
                if grace {
                    for _ in 0..4 {
                        let (n, mac) = (w.next(10) as u8, [2, 0, 0, 0, 0, w.next(8) as u8]);
                        kernel.fdb.insert(mac, Ipv4Addr::new(192, 168, 1, n));
                        kernel.neigh.insert(Ipv4Addr::new(10, 0, 0, n), mac);
                    }
                    graces += 1;
                }
                let want = wanted(&v, "a", &local_ips);
                kernel.apply(&NeighPlan::compute(
                    &want,
                    &kernel.fdb,
                    &kernel.neigh,
                    grace,
                ));
                reference = Kernel {
                    fdb: kernel.fdb.clone(),
                    neigh: kernel.neigh.clone(),
                };
                followed = Programmed::new(generation, local_ips.clone(), &want);
                continue;
            }
            let want = wanted(&v, "a", &local_ips);
            let plan = followed
                .follow("a", &changes, generation, grace)
                .expect("changes fit what is followed");
            plans += usize::from(!plan.is_empty());
            kernel.apply(&plan);
            if grace {
                let whole = NeighPlan::compute(&want, &reference.fdb, &reference.neigh, true);
                reference.apply(&whole);
                assert_eq!(kernel, reference, "step {step}");
            } else {
                assert_eq!(kernel, programmed_whole(&want), "step {step}");
            }
            assert_eq!(
                followed,
                Programmed::new(generation, local_ips.clone(), &want),
                "step {step}"
            );
        }
        assert!(
            plans > 1000 && graces > 10,
            "{plans} plans, {graces} graces"
        );
    }

    /// Removing what was never added does not fit: the pass must read the kernel.
    #[test]
    fn a_change_that_does_not_fit_is_refused() {
        let mut w = World(7);
        let e = loop {
            let e = w.endpoint(0);
            if *e.network == *"a" && !e.mac.starts_with("zz") {
                break e;
            }
        };
        let mut p = Programmed::new(0, BTreeSet::new(), &[]);
        let gone = [Arc::new(vec![(Some(e), None)])];
        assert_eq!(p.follow("a", &gone, 1, false), None);
    }
}

/// A pass for one remote endpoint change at 100k on the real kernel, whole against followed.
#[cfg(test)]
#[path = "remotes_bench.rs"]
mod bench;
