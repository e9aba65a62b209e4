//! The one path from desired state to kernel. API calls, gossip updates, restarts and the
//! periodic drift repair all end here, as jobs on a dedicated thread (kernel changes are
//! serialized, and namespace-switching commands never run on async runtime workers); service
//! LB jobs after gossip changes have a second one (see [`Reconciler`]).

pub mod crypto;
mod dns;
mod egress;
mod ingress;
mod lb;
mod network;
mod remotes;

/// Names of the per-network kernel objects (read by `netd inspect`).
pub use network::{host_end, vxlan_name, BRIDGE};

use crate::config::Config;
use crate::gossip::ClusterView;
use crate::state::DesiredState;
use anyhow::Result;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::oneshot;

/// Facts about this node, found once at start.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub underlay_dev: String,
    pub underlay_mtu: u32,
}

/// What reconcile reads: the desired state and the cluster view.
pub struct Shared {
    pub cfg: Config,
    pub dns: crate::dns::DnsService,
    pub facts: NodeFacts,
    pub desired: RwLock<DesiredState>,
    /// Shared, so that a pass takes it without copying 100k endpoints. Published after the DNS
    /// names are rebuilt from it, so that what the API lists resolves.
    pub view: RwLock<Arc<ClusterView>>,
    /// The newest view, published before the DNS names are rebuilt from it (O(view)): what
    /// reconcile passes read, so a gossip change reaches the kernel (LB, FDB) without waiting
    /// for DNS. Never older than `view` (the gossip watcher writes both, this one first).
    pub reconcile_view: RwLock<Arc<ClusterView>>,
    /// The endpoint changes between the last views (published with them).
    pub view_changes: std::sync::Mutex<crate::gossip::ViewChanges>,
    pub started: Instant,
    /// Infrastructure (sandbox bridge/VXLAN, egress bridge/rules) checked since the last full
    /// pass: event-driven passes skip re-checking it, the periodic full pass re-checks all.
    pub verified: std::sync::Mutex<std::collections::HashSet<String>>,
    /// By sandbox: the remote endpoints' FDB and neighbor entries netd programmed there, which
    /// passes after a gossip change plan against (drift repair reads the kernel).
    pub programmed_remotes:
        std::sync::Mutex<std::collections::HashMap<String, remotes::Programmed>>,
    /// What the DNS index holds: the local state and the view generation it was made from
    /// (none before the first build). Serializes index changes.
    pub dns_rebuild: std::sync::Mutex<Option<(DesiredState, u64)>>,
    /// Changes for `GET /v1/events` (drift repaired here, the rest by the daemon and watcher).
    pub events: crate::events::Events,
    /// The epoch of the SAs this node sends with, and its publication to gossip.
    pub sa_epoch: std::sync::Mutex<crate::crypto::epoch::SaEpoch>,
    pub sa_epoch_published: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    /// Brings the DNS names up to date with the desired state and the cluster view (`publish`,
    /// else the current one): change by change when the changes since the index's last update
    /// are known (local endpoints, view changes, same networks), else rebuilt whole. With
    /// `publish`, then makes that view the current one. Serialized, so an update never
    /// overwrites a newer one with an older view; the view is published after its names, so an
    /// endpoint the API lists is also resolvable.
    pub fn rebuild_dns(&self, publish: Option<Arc<ClusterView>>) {
        let mut indexed = self.dns_rebuild.lock().expect("dns rebuild lock");
        let desired = self.desired.read().expect("desired lock").clone();
        let view = match &publish {
            Some(v) => v.clone(),
            None => self.view.read().expect("view lock").clone(),
        };
        // Follow the changes since what the index holds when they are all known (the local
        // endpoints by diff, the view's from the watcher's log); else build it anew.
        let changes = indexed
            .as_ref()
            .filter(|(d, _)| d.networks == desired.networks)
            .and_then(|(_, g)| {
                self.view_changes
                    .lock()
                    .expect("view changes lock")
                    .between(*g, view.generation)
            });
        match (indexed.as_ref(), changes) {
            (Some((old, _)), Some(changes)) => {
                let mut idx = self.dns.index_mut();
                idx.change_local(old, &desired);
                for c in &changes {
                    idx.change_remote(c);
                }
                idx.finish();
            }
            _ => self
                .dns
                .set_index(crate::dns::index::DnsIndex::build(&desired, &view)),
        }
        *indexed = Some((desired, view.generation));
        if let Some(v) = publish {
            *self.view.write().expect("view lock") = v;
        }
    }

    /// Takes what `sandbox` holds of remote endpoints out, and puts `now` in its place.
    fn swap_programmed_remotes(
        &self,
        sandbox: &str,
        now: Option<remotes::Programmed>,
    ) -> Option<remotes::Programmed> {
        let mut m = self
            .programmed_remotes
            .lock()
            .expect("programmed remotes lock");
        match now {
            Some(p) => m.insert(sandbox.to_string(), p),
            None => m.remove(sandbox),
        }
    }

    pub fn is_verified(&self, key: &str) -> bool {
        self.verified.lock().expect("verified lock").contains(key)
    }
    pub fn set_verified(&self, key: &str, ok: bool) {
        let mut v = self.verified.lock().expect("verified lock");
        if ok {
            v.insert(key.to_string());
        } else {
            v.remove(key);
        }
    }
}

impl Shared {
    /// MTU handed to containers of a network.
    /// Encrypted networks also leave room for ESP.
    pub fn network_mtu(&self, spec_mtu: Option<u32>, encrypted: bool) -> u32 {
        let esp = if encrypted {
            crate::crypto::support::ESP_OVERHEAD
        } else {
            0
        };
        spec_mtu.unwrap_or(self.facts.underlay_mtu - VXLAN_OVERHEAD_V4 - esp)
    }
}

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One network (plus the egress legs, DNS sockets and the sandbox sweep).
    Network(String),
    /// One network's local attachments after an API change (remote entries are left to
    /// gossip-driven passes once the sandbox exists).
    Locals(String),
    /// One network's remote entries after a gossip change: FDB and neighbor entries only.
    Remotes(String),
    /// Everything; `verify_containers` also re-checks every container-side interface.
    All { verify_containers: bool },
    /// Encryption only (data-path keys changed).
    Crypto,
    /// Service load balancing (from the view's endpoint changes when it can: see
    /// `lb::reconcile`) and published ports, after a gossip change.
    Lb,
}

struct Job {
    scope: Scope,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Two threads: one for every scope, and one for [`Scope::Lb`] alone, so that a gossip change
/// of a service backend reaches the LB while a long pass runs (a full pass checks every remote
/// FDB and neighbor entry: seconds at 100k). The LB itself is serialized by its own lock (see
/// `lb::reconcile`); a full pass applies it too.
#[derive(Clone)]
pub struct Reconciler {
    tx: mpsc::Sender<Job>,
    lb: mpsc::Sender<Job>,
}

impl Reconciler {
    pub fn spawn(shared: Arc<Shared>) -> Reconciler {
        let (tx, rx) = mpsc::channel::<Job>();
        let (lb, lb_rx) = mpsc::channel::<Job>();
        for (name, rx) in [("reconcile", rx), ("reconcile-lb", lb_rx)] {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(shared, rx))
                .expect("spawning reconcile thread");
        }
        Reconciler { tx, lb }
    }

    fn queue(&self, scope: &Scope) -> &mpsc::Sender<Job> {
        if *scope == Scope::Lb {
            &self.lb
        } else {
            &self.tx
        }
    }

    /// Queues a reconcile and waits for its outcome.
    pub async fn run(&self, scope: Scope) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        self.queue(&scope)
            .send(Job {
                scope,
                done: Some(done),
            })
            .map_err(|_| "reconcile thread is gone".to_string())?;
        rx.await
            .map_err(|_| "reconcile thread is gone".to_string())?
    }

    /// Queues a reconcile without waiting.
    pub fn request(&self, scope: Scope) {
        let _ = self.queue(&scope).send(Job { scope, done: None });
    }
}

fn run(shared: Arc<Shared>, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        // Coalesce what queued up meanwhile: one pass per distinct scope.
        let mut jobs = vec![first];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let mut scopes: Vec<Scope> = Vec::new();
        for j in &jobs {
            if !scopes.contains(&j.scope) {
                scopes.push(j.scope.clone());
            }
        }
        // Full passes last: what an API call or gossip change asked for does not wait for one.
        scopes.sort_by_key(|s| matches!(s, Scope::All { .. }));
        let mut results = Vec::new();
        for s in &scopes {
            let r = reconcile(&shared, s).map_err(|e| format!("{e:#}"));
            if let Err(e) = &r {
                tracing::warn!(scope = ?s, error = %e, "reconcile failed");
            }
            results.push((s.clone(), r));
            if matches!(s, Scope::All { .. }) {
                release_freed_memory();
            }
        }
        for j in jobs {
            if let Some(done) = j.done {
                let r = results
                    .iter()
                    .find(|(s, _)| *s == j.scope)
                    .map(|(_, r)| r.clone())
                    .unwrap_or(Ok(()));
                let _ = done.send(r);
            }
        }
    }
}

/// Gives the pages the allocator holds free back to the kernel. A full pass at scale makes and
/// drops large transient structures (dumps of 100k FDB and neighbor entries, models), and glibc
/// keeps what they freed in its per-thread arenas; without this, RSS stays at the high-water
/// mark of every thread's busiest pass.
fn release_freed_memory() {
    // SAFETY: malloc_trim(3) has no preconditions; it only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn reconcile(shared: &Shared, scope: &Scope) -> Result<()> {
    let desired = shared.desired.read().expect("desired lock").clone();
    let view = shared
        .reconcile_view
        .read()
        .expect("reconcile view lock")
        .clone();
    // Right after a start, remote entries already in the kernel stay until gossip caught up.
    let keep_extra =
        shared.started.elapsed().as_millis() < shared.cfg.startup_sync_grace_ms as u128;
    if matches!(scope, Scope::All { .. }) {
        shared.verified.lock().expect("verified lock").clear();
    }
    let mut first_err: Option<anyhow::Error> = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            if first_err.is_none() {
                first_err = Some(e);
            } else {
                tracing::warn!(error = %format!("{e:#}"), "reconcile error");
            }
        }
    };
    if *scope == Scope::Lb {
        let r = lb::reconcile(shared, &desired, &view, false);
        // Published ports have the same backends (a remote task drained or enabled changes
        // no FDB entry, so no `Remotes` pass follows); after the LB, which is what waits.
        if ingress::in_play(&desired) {
            note(ingress::reconcile(&desired, &view, false, keep_extra));
        }
        return r.and(first_err.map_or(Ok(()), Err));
    }
    // Encryption first: drop rules for encrypted VNIs exist before any of their traffic can.
    note(crypto::reconcile(shared, &desired, &view, keep_extra));
    if *scope == Scope::Crypto {
        return first_err.map_or(Ok(()), Err);
    }
    let full = matches!(scope, Scope::All { .. });
    note(lb::reconcile(shared, &desired, &view, full));
    if let Scope::Remotes(name) = scope {
        let parts = network::Parts {
            locals: false,
            remotes: true,
            verify_containers: false,
            repair: false,
        };
        note(network::reconcile(
            shared, &desired, &view, name, parts, keep_extra,
        ));
        // Published ports have remote backends; nothing else depends on remote endpoints.
        note(ingress::reconcile(&desired, &view, false, keep_extra));
        return first_err.map_or(Ok(()), Err);
    }
    // The overlay legs (sandboxes) and the egress legs (node bridge) touch different links:
    // they are reconciled side by side, which halves an attach's or a detach's latency.
    let verify_egress = matches!(
        scope,
        Scope::All {
            verify_containers: true
        }
    );
    let (network_results, egress_result) = std::thread::scope(|s| {
        let egress = s.spawn(|| egress::reconcile(shared, &desired, verify_egress));
        let mut results = Vec::new();
        match scope {
            Scope::Network(name) | Scope::Locals(name) => {
                let parts = network::Parts {
                    locals: true,
                    remotes: matches!(scope, Scope::Network(_)),
                    verify_containers: false,
                    repair: false,
                };
                results.push(network::reconcile(
                    shared, &desired, &view, name, parts, keep_extra,
                ));
            }
            Scope::All { verify_containers } => {
                for name in desired.networks.keys() {
                    let parts = network::Parts {
                        locals: true,
                        remotes: true,
                        verify_containers: *verify_containers,
                        repair: !keep_extra,
                    };
                    results.push(network::reconcile(
                        shared, &desired, &view, name, parts, keep_extra,
                    ));
                }
            }
            Scope::Remotes(_) | Scope::Crypto | Scope::Lb => unreachable!("handled above"),
        }
        let egress = egress
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("egress reconcile panicked")));
        (results, egress)
    });
    for r in network_results {
        note(r);
    }
    note(egress_result);
    note(network::sweep_sandboxes(shared, &desired));
    note(lb::reconcile_devices(shared, &desired));
    note(dns::reconcile(shared, &desired));
    // After the networks' pass: the node's ingress leg exists.
    note(ingress::reconcile(
        &desired,
        &view,
        matches!(scope, Scope::All { .. }),
        keep_extra,
    ));
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
