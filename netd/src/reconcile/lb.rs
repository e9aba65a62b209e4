//! Service VIP load balancing, from the desired state and the cluster view (see `crate::lb`).
//! Runs in every reconcile pass, and alone (`Scope::Lb`, on a thread of its own) after a gossip change;
//! cheap when nothing changed: the model follows the endpoint changes and only the services
//! they touch are looked at (see [`reconcile`]).

use super::Shared;
use crate::gossip::{ClusterView, EndpointChange};
use crate::lb::model::{Frontend, LbIndex, Linger};
use crate::lb::{self, LoadBalancer};
use crate::state::DesiredState;
use anyhow::Result;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The backend, opened on the first pass (one netd per process; both reconcile threads use it).
static LB: Mutex<Option<Box<dyn LoadBalancer>>> = Mutex::new(None);
/// What the last pass applied, kept to follow changes (see [`sync`]).
static STATE: Mutex<Option<State>> = Mutex::new(None);

struct State {
    /// The model applied (with lingering services) and what it was made of.
    index: LbIndex,
    /// The view (generation) the index was made from.
    generation: u64,
    /// Whether the index's model also keeps remote backends applied before it (made in the
    /// startup grace: remote backends found in the kernel stay until gossip caught up), else
    /// it is exactly that of its endpoints plus lingering services. A pass follows changes
    /// from an index of its own kind only: in the grace one that keeps, after it an exact one.
    kept: bool,
    /// The local endpoints' addresses when `kept` was last made whole: no backend at a local
    /// address is kept, in any frontend, so a change of them makes the model whole again.
    local: BTreeSet<Ipv4Addr>,
    /// Services whose last task was deleted, kept refusing for `lb_service_linger_ms`.
    linger: Linger,
    /// The last apply failed (the next pass applies everything again).
    failed: bool,
}

/// LB failures are logged and retried on the next pass; they do not fail the API call that
/// triggered the pass (an endpoint is attached and reachable by address even if its service
/// VIP is not programmed yet).
///
/// A pass brings the model it applied last up to date with the endpoint changes since (the
/// local endpoints compared as a whole, the remote ones from the view changes the gossip watcher
/// published with the view) and applies the frontends that changed: a backend change costs
/// O(its service), not O(cluster). In the startup grace the frontends a pass changes also keep
/// the remote backends applied before (see [`follow`]), as a whole pass in the grace keeps
/// those the kernel holds. When the changes are not known (the first pass, the end of the
/// startup grace, networks added or removed, a consumer too far behind) and on every `full` (drift
/// repair) pass, the model is made from scratch from the whole view instead, with the same code
/// (`LbIndex`), and applied as a whole. On a `full` pass the backend first compares what it
/// programmed with what the kernel holds (a map entry deleted by hand, a stray one) and
/// reprograms the difference.
pub fn reconcile(
    shared: &Shared,
    desired: &DesiredState,
    view: &ClusterView,
    full: bool,
) -> Result<()> {
    if let Err(e) = sync(shared, desired, view, full) {
        tracing::warn!(error = %format!("{e:#}"), "service load balancer");
    }
    Ok(())
}

fn sync(shared: &Shared, desired: &DesiredState, view: &ClusterView, full: bool) -> Result<()> {
    if lb::backend_kind(&shared.cfg) == lb::LbBackendKind::None {
        return Ok(());
    }
    let mut guard = LB.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let Some(opened) = lb::open(&shared.cfg)? else {
            return Ok(());
        };
        tracing::info!(backend = opened.name(), "service load balancer ready");
        *guard = Some(opened);
    }
    let ttl = Duration::from_millis(shared.cfg.lb_service_linger_ms);
    let grace = shared.started.elapsed().as_millis() < shared.cfg.startup_sync_grace_ms as u128;
    if full {
        // Made before taking the lock (see `whole`).
        drop(guard);
        let built = LbIndex::build(desired, view);
        return whole(shared, desired, view, Some(built), true, grace, ttl);
    }
    let lb = guard.as_mut().expect("opened above");
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let local = local_ips(desired);
    if let Some(st) = state
        .as_mut()
        .filter(|st| st.kept == grace && (!grace || st.local == local))
    {
        if st.index.same_networks(desired) {
            // A drift-repair pass may have applied a later view than this pass's.
            let to = view.generation.max(st.generation);
            let changes = shared
                .view_changes
                .lock()
                .expect("view changes lock")
                .between(st.generation, to);
            if let Some(changes) = changes {
                let mut dirty = BTreeSet::new();
                let clients_changed = st.index.set_locals(desired, &mut dirty);
                let keep = grace.then_some(&local);
                follow(&mut st.index, &changes, &mut dirty, keep);
                st.generation = to;
                if let Some(expired) =
                    st.linger
                        .apply_delta(&mut st.index.model, &dirty, Instant::now(), ttl)
                {
                    dirty.extend(expired);
                    let r = if clients_changed || st.failed {
                        // Backends that program each container (nftables) look at all
                        // containers; a failed apply is retried as a whole.
                        lb.apply(&st.index.model)
                    } else if dirty.is_empty() {
                        Ok(())
                    } else {
                        lb.apply_changed(&st.index.model, &dirty)
                    };
                    st.failed = r.is_err();
                    return r;
                }
            }
        }
    }
    drop(state);
    drop(guard);
    whole(shared, desired, view, None, false, grace, ttl)
}

/// Brings `index` (made from one view) forward with the endpoint changes of later views (and
/// the `dirty` frontends its caller changed). With `keep` (the local addresses, in the startup
/// grace), each changed frontend also keeps the remote backends it had, as the whole pass in
/// the grace does with those the kernel holds: the model stays what the whole pass would make.
fn follow(
    index: &mut LbIndex,
    changes: &[Arc<Vec<EndpointChange>>],
    dirty: &mut BTreeSet<Frontend>,
    keep: Option<&BTreeSet<Ipv4Addr>>,
) {
    for (old, new) in changes.iter().flat_map(|c| c.iter()) {
        index.change_remote(old.as_deref(), new.as_deref(), dirty);
    }
    match keep {
        Some(local) => index.finish_keeping(dirty, local),
        None => index.finish(dirty),
    }
}

/// The addresses of the local endpoints.
fn local_ips(desired: &DesiredState) -> BTreeSet<Ipv4Addr> {
    desired.endpoints.values().map(|e| e.ip).collect()
}

/// Makes the model whole from `view` (or takes `built`, made from it) and applies it whole;
/// with `verify`, the backend first compares what it programmed with the kernel (drift repair).
///
/// A drift-repair pass makes its model before taking the LB's lock (at 10k services x 10 tasks
/// ~60-120 ms that changes followed on the LB thread would wait for) and verifies apart from
/// the apply, a slice per hold of the lock ([`read_back`]). Meanwhile the LB thread may have
/// applied a later view: the model made is brought forward to it with the same changes the LB
/// thread followed, so that a drift-repair pass never applies an older view over a newer one.
fn whole(
    shared: &Shared,
    desired: &DesiredState,
    view: &ClusterView,
    built: Option<LbIndex>,
    verify: bool,
    grace: bool,
    ttl: Duration,
) -> Result<()> {
    let drift = if verify { read_back() } else { Vec::new() };
    let mut guard = LB.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lb) = guard.as_mut() else {
        return Ok(());
    };
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let mut generation = view.generation;
    let mut index = built.unwrap_or_else(|| LbIndex::build(desired, view));
    if let Some(ahead) = state
        .as_ref()
        .map(|st| st.generation)
        .filter(|g| *g > generation)
    {
        let changes = shared
            .view_changes
            .lock()
            .expect("view changes lock")
            .between(generation, ahead);
        match changes {
            Some(changes) => {
                follow(&mut index, &changes, &mut BTreeSet::new(), None);
                generation = ahead;
            }
            None => {
                // Too far behind to follow: the newest view (at least as new), whole.
                let newest = shared
                    .reconcile_view
                    .read()
                    .expect("reconcile view lock")
                    .clone();
                index = LbIndex::build(desired, &newest);
                generation = newest.generation;
            }
        }
    }
    // Right after a start, keep remote backends already programmed until gossip caught up.
    let local = local_ips(desired);
    if grace {
        index
            .model
            .keep_unknown_remotes(&lb.current().services, &local);
    }
    let mut linger = state.take().map(|st| st.linger).unwrap_or_default();
    linger.apply(&mut index.model, || lb.current(), Instant::now(), ttl);
    let r = lb.apply(&index.model);
    *state = Some(State {
        index,
        generation,
        kept: grace,
        local,
        linger,
        failed: r.is_err(),
    });
    r?;
    for d in drift {
        shared.events.emit("drift_repaired", None, lb.name(), d);
    }
    Ok(())
}

/// Drift repair's comparison of what the backend programmed with the kernel, a slice per hold
/// of the LB's lock: a change on the LB thread waits for one slice, not for the whole
/// read-back (40-60 ms at 10k services).
fn read_back() -> Vec<String> {
    let mut drift = Vec::new();
    loop {
        let mut guard = LB.lock().unwrap_or_else(|e| e.into_inner());
        let Some(lb) = guard.as_mut() else {
            return drift;
        };
        match lb.verify_kernel() {
            Ok((found, done)) => {
                drift.extend(found);
                if done {
                    return drift;
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reading back the LB maps");
                return drift;
            }
        }
    }
}

/// After the networks' pass (the veths exist): the backend's per-device programs on the host
/// end of every local container's veth (ARP and ICMP echo for VIPs). Logged, retried next pass.
pub fn reconcile_devices(shared: &Shared, desired: &DesiredState) -> Result<()> {
    let mut guard = LB.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lb) = guard.as_mut() else {
        return Ok(());
    };
    let devices: BTreeSet<(PathBuf, String)> = desired
        .endpoints
        .iter()
        .filter_map(|(id, e)| {
            let net = desired.networks.get(&e.spec.network)?;
            Some((
                PathBuf::from("/run/netns").join(shared.cfg.sandbox_name(net.vni)),
                super::network::host_end(id),
            ))
        })
        .collect();
    if let Err(e) = lb.attach_devices(&devices) {
        tracing::warn!(error = %format!("{e:#}"), "service load balancer devices");
    }
    Ok(())
}
