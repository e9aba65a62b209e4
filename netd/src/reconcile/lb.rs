//! Service VIP load balancing, from the desired state and the cluster view (see `crate::lb`).
//! Runs on the reconcile thread after every pass; cheap when nothing changed (the model is
//! compared with what is programmed, and only differing services are touched).

use super::Shared;
use crate::gossip::ClusterView;
use crate::lb::model::{LbModel, Linger};
use crate::lb::{self, LoadBalancer};
use crate::state::DesiredState;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The backend, opened on the first pass (one netd per process, one reconcile thread).
static LB: Mutex<Option<Box<dyn LoadBalancer>>> = Mutex::new(None);
/// Services whose last task was deleted, kept refusing for `lb_service_linger_ms`.
static LINGER: Mutex<Option<Linger>> = Mutex::new(None);

/// LB failures are logged and retried on the next pass; they do not fail the API call that
/// triggered the pass (an endpoint is attached and reachable by address even if its service
/// VIP is not programmed yet).
///
/// On a `full` (drift repair) pass the backend first compares what it programmed with what the
/// kernel holds (a map entry deleted by hand, a stray one) and reprograms the difference.
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
    let lb = guard.as_mut().expect("opened above");
    let drift = if full {
        lb.verify_kernel().unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "reading back the LB maps");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let mut want = LbModel::build(desired, view);
    // Right after a start, keep remote backends already programmed until gossip caught up.
    if shared.started.elapsed().as_millis() < shared.cfg.startup_sync_grace_ms as u128 {
        let local: BTreeSet<_> = desired.endpoints.values().map(|e| e.ip).collect();
        want.keep_unknown_remotes(&lb.current(), &local);
    }
    let ttl = Duration::from_millis(shared.cfg.lb_service_linger_ms);
    let mut linger = LINGER.lock().unwrap_or_else(|e| e.into_inner());
    linger.get_or_insert_with(Linger::default).apply(
        &mut want,
        || lb.current(),
        Instant::now(),
        ttl,
    );
    lb.apply(&want)?;
    for d in drift {
        shared.events.emit("drift_repaired", None, lb.name(), d);
    }
    Ok(())
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
