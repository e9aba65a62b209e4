//! Background loops: turn gossip changes into reconcile jobs, and repair drift periodically.

use crate::daemon::Daemon;
use crate::events::Events;
use crate::gossip::follow::ViewReader;
use crate::gossip::ClusterView;
use crate::reconcile::crypto::PeerInputs;
use crate::reconcile::Scope;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wakes on gossip key changes (and polls the gossip state's fingerprint, cheap) and, when it changes, brings the cluster view up
/// to date (reading only the records that changed, see `gossip::follow`) and queues a reconcile
/// for every network whose remote endpoints changed. Every [`WHOLE_READ_EVERY`] reconcile
/// intervals the view is read whole instead (a fresh reader, the same code): a safety net for
/// the incremental reading, not drift repair (gossip state does not drift from what was read;
/// the kernel's does, see [`periodic`]). A whole read holds chitchat's lock while it decodes
/// every record (~160 ms at 100k), which stalls gossip meanwhile, so it is rare and spaced
/// like drift repair ([`drift_pause`]); the reads run on a blocking thread, never on a runtime
/// worker.
/// The new view goes to reconcile passes at once (`Shared::reconcile_view`); the DNS names are
/// rebuilt from it and it is published to the API (`Shared::view`) on a task of their own
/// ([`names_follow`]), so the next change is read while a rebuild runs.
pub async fn gossip_to_reconcile(d: Arc<Daemon>) {
    let (to_names, views) = tokio::sync::watch::channel(None);
    tokio::spawn(names_follow(d.clone(), views));
    let mut last_fp = 0u64;
    let mut reader = ViewReader::default();
    // What the peers are made of, followed with the view (which starts empty, like this).
    let mut peer_inputs = PeerInputs::default();
    let period = Duration::from_millis(d.shared.cfg.reconcile_interval_ms) * WHOLE_READ_EVERY;
    let mut last_whole = Instant::now();
    let mut whole_pause = period;
    // A key set anywhere wakes the watcher at once; deletions and liveness changes are not
    // notified by chitchat, so the fingerprint (a few hashes per node: cheap) is also polled,
    // which bounds the time those wait before they are read.
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = d.gossip.key_set() => {}
        }
        let fp = d.gossip.fingerprint().await;
        let whole = last_whole.elapsed() >= whole_pause;
        if fp == last_fp && !whole {
            continue;
        }
        if whole {
            reader = ViewReader::default();
            last_whole = Instant::now();
        }
        let current = d
            .shared
            .reconcile_view
            .read()
            .expect("reconcile view lock")
            .clone();
        let (r, mut view, changes, read_fp) = {
            let (d, current) = (d.clone(), current.clone());
            tokio::task::spawn_blocking(move || {
                let (view, changes, fp) = d.gossip.read_view(&mut reader, &current);
                (reader, view, changes, fp)
            })
            .await
            .expect("gossip read panicked")
        };
        reader = r;
        if whole {
            whole_pause = drift_pause(period, last_whole.elapsed());
        }
        // Compared as read: the state may have moved since `fp` was taken.
        let unchanged = read_fp == last_fp;
        last_fp = read_fp;
        if !unchanged {
            d.gossip.acknowledge_claims().await;
        }
        if unchanged && !changes.is_empty() {
            // Nothing changed in gossip since the last read, so the reads before missed these.
            tracing::warn!(
                changes = changes.len(),
                "the periodic full read of the gossip state found endpoint changes"
            );
        }
        emit_changes(&d.shared.events, &current, &view, &changes);
        // Networks whose remote FDB/neighbor entries (address, MAC, VTEP) changed.
        let fdb = |e: &Option<Arc<crate::api::types::RemoteEndpointView>>| {
            e.as_ref().map(|e| (e.ip, e.mac.clone(), e.vtep))
        };
        let changed: BTreeSet<String> = changes
            .iter()
            .filter(|(o, n)| fdb(o) != fdb(n))
            .flat_map(|(o, n)| o.iter().chain(n).map(|e| e.network.to_string()))
            .collect();
        let records_changed = !changes.is_empty();
        let peers_changed = if whole {
            // Made again with the view, the safety net for the followed inputs too.
            peer_inputs = PeerInputs::of(&view);
            crate::reconcile::crypto::peers(&current) != crate::reconcile::crypto::peers(&view)
        } else {
            peer_inputs.changed(&current, &view, &changes)
        };
        view.generation = current.generation + u64::from(records_changed);
        drop(current);
        let view = Arc::new(view);
        if records_changed {
            // The changes first: a pass that sees the view finds how it came about.
            d.shared
                .view_changes
                .lock()
                .expect("view changes lock")
                .push(view.generation, changes, view.endpoints.len());
        }
        // Reconcile passes get the view at once; the API once its DNS names are rebuilt.
        *d.shared
            .reconcile_view
            .write()
            .expect("reconcile view lock") = view.clone();
        if peers_changed {
            // SAs and policies follow the set of live nodes.
            d.reconciler.request(Scope::Crypto);
        }
        if records_changed {
            // Service backends (any record field may matter: address, service, drained).
            d.reconciler.request(Scope::Lb);
        }
        let local: BTreeSet<String> = d
            .shared
            .desired
            .read()
            .expect("desired lock")
            .networks
            .keys()
            .cloned()
            .collect();
        for n in &changed {
            if local.contains(n) {
                d.reconciler.request(Scope::Remotes(n.clone()));
            }
        }
        to_names.send_replace(Some(view));
    }
}

/// Rebuilds the DNS names from the views the watcher makes (when their endpoints changed) and
/// then publishes each to the API, in order; a rebuild is O(view), and views that came during
/// one are skipped for the newest.
async fn names_follow(
    d: Arc<Daemon>,
    mut views: tokio::sync::watch::Receiver<Option<Arc<ClusterView>>>,
) {
    let mut built = 0u64;
    while views.changed().await.is_ok() {
        let Some(view) = views.borrow_and_update().clone() else {
            continue;
        };
        if view.generation == built {
            *d.shared.view.write().expect("view lock") = view;
            continue;
        }
        built = view.generation;
        let d = d.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || d.shared.rebuild_dns(Some(view))).await
        {
            tracing::warn!(error = %e, "rebuilding DNS names");
        }
    }
}

/// Full reconcile (drift repair) every `reconcile_interval_ms`, and once right after the
/// startup grace so that entries kept across a restart but no longer wanted are removed. A full
/// pass checks every remote FDB and neighbor entry (seconds at 100k endpoints) and holds the
/// reconcile thread meanwhile, so the next one starts no sooner than [`DRIFT_SPACING`] times
/// the last one's duration after its start: drift repair takes at most ~10% of the thread.
pub async fn periodic(d: Arc<Daemon>) {
    let grace = Duration::from_millis(d.shared.cfg.startup_sync_grace_ms);
    let period = Duration::from_millis(d.shared.cfg.reconcile_interval_ms);
    tokio::time::sleep(
        grace.saturating_sub(d.shared.started.elapsed()) + Duration::from_millis(50),
    )
    .await;
    loop {
        let t = Instant::now();
        let _ = d
            .reconciler
            .run(Scope::All {
                verify_containers: false,
            })
            .await;
        let took = t.elapsed();
        let next = drift_pause(period, took);
        if next > period {
            tracing::debug!(
                ?took,
                ?next,
                "drift repair spaced out: full passes are long"
            );
        }
        tokio::time::sleep(next.saturating_sub(took)).await;
    }
}

/// The gossip watcher reads the view whole once every this many reconcile intervals.
const WHOLE_READ_EVERY: u32 = 12;

/// A full pass starts no sooner than this many times the last one's duration after it.
const DRIFT_SPACING: u32 = 10;

/// Time from the start of a full pass that took `took` to the start of the next.
fn drift_pause(period: Duration, took: Duration) -> Duration {
    period.max(took * DRIFT_SPACING)
}

/// Gossips this node's SA epoch whenever the reconcile loop moves to a new one.
pub async fn publish_sa_epoch(d: Arc<Daemon>) {
    let mut rx = d.shared.sa_epoch_published.subscribe();
    while rx.changed().await.is_ok() {
        let epoch = *rx.borrow_and_update();
        d.gossip
            .set(
                crate::crypto::epoch::GOSSIP_KEY.to_string(),
                epoch.to_string(),
            )
            .await;
    }
}

/// Membership and remote endpoint changes between two views, as events (`changes`: the
/// endpoint changes from `old` to `new`).
fn emit_changes(
    ev: &Events,
    old: &ClusterView,
    new: &ClusterView,
    changes: &[crate::gossip::EndpointChange],
) {
    let peers = |v: &ClusterView| -> BTreeMap<String, bool> {
        v.peers.iter().map(|p| (p.node.clone(), p.live)).collect()
    };
    let (op, np) = (peers(old), peers(new));
    for (node, live) in &np {
        match (op.get(node), live) {
            (None, _) => ev.emit(
                "peer_joined",
                None,
                node,
                if *live { "live" } else { "dead" },
            ),
            (Some(false), true) => ev.emit("peer_live", None, node, ""),
            (Some(true), false) => ev.emit("peer_dead", None, node, "failure detector"),
            _ => {}
        }
    }
    for node in op.keys().filter(|n| !np.contains_key(*n)) {
        ev.emit("peer_left", None, node, "");
    }
    // Endpoints by network and id (an endpoint that moved to another node is neither new nor
    // gone), from the changed ones only.
    let eps = |new: bool| -> BTreeMap<(&str, &str), (bool, String)> {
        changes
            .iter()
            .filter_map(|(o, n)| if new { n.as_ref() } else { o.as_ref() })
            .map(|e| {
                (
                    (&*e.network, e.id.as_str()),
                    (
                        e.service_disabled,
                        format!("{} {} on {}", e.name, e.ip, e.node),
                    ),
                )
            })
            .collect()
    };
    let (oe, ne) = (eps(false), eps(true));
    for ((net, id), (disabled, what)) in &ne {
        match oe.get(&(*net, *id)) {
            None => ev.emit("remote_endpoint_joined", Some(net), *id, what.clone()),
            Some((was, _)) if was != disabled => {
                let kind = if *disabled {
                    "remote_endpoint_drained"
                } else {
                    "remote_endpoint_enabled"
                };
                ev.emit(kind, Some(net), *id, what.clone());
            }
            _ => {}
        }
    }
    for ((net, id), (_, what)) in &oe {
        if !ne.contains_key(&(*net, *id)) {
            ev.emit("remote_endpoint_left", Some(net), *id, what.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_repair_is_spaced_out_when_passes_are_long() {
        let period = Duration::from_secs(5);
        assert_eq!(drift_pause(period, Duration::from_millis(80)), period);
        assert_eq!(
            drift_pause(period, Duration::from_secs(10)),
            Duration::from_secs(100)
        );
    }
}
