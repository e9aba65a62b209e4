//! Published ports of an endpoint being attached: automatic numbers for ports published
//! without one, and conflicts with other services and host processes (409 naming the port and
//! its holder). Runs before anything is committed: a refused request changes nothing.

use super::model::{proto_of, published_ports, Published};
use super::ports;
use crate::api::error::ApiError;
use crate::api::types::{EndpointMode, EndpointSpec, PublishMode};
use crate::gossip::ClusterView;
use crate::state::DesiredState;

/// Fills in missing `published_port`s of ingress-mode ports (same number as other tasks of the
/// service already have, else from [`ports::AUTO_RANGE`]) and checks every published port.
pub fn prepare(
    desired: &DesiredState,
    view: &ClusterView,
    spec: &mut EndpointSpec,
) -> Result<(), ApiError> {
    let on_ingress = desired
        .ingress_network()
        .is_some_and(|(n, _)| *n == spec.network);
    // Host mode reaches the task through its egress leg on the node bridge.
    let has_egress = desired
        .networks
        .get(&spec.network)
        .is_some_and(|n| !n.internal)
        || desired.egress.contains_key(&spec.netns);
    let Some(svc) = spec.service.as_mut() else {
        return Ok(());
    };
    let known = published_ports(desired, view);
    let siblings = sibling_ports(desired, view, &svc.id);
    for (i, p) in svc.ports.iter_mut().enumerate() {
        let field = format!("service.ports[{i}].published_port");
        let counts = match p.publish_mode {
            PublishMode::Ingress => on_ingress && svc.endpoint_mode == EndpointMode::Vip,
            PublishMode::Host => true,
        };
        if !counts {
            continue; // an ingress port on a non-ingress network only serves the VIP
        }
        if p.publish_mode == PublishMode::Host && !has_egress {
            return Err(ApiError::invalid(
                format!("service.ports[{i}].publish_mode"),
                "publish_mode: host needs the task on a non-internal network (the node reaches it through its egress leg)",
            ));
        }
        let proto = proto_of(p.protocol);
        if p.published_port.is_none() {
            let again = siblings
                .iter()
                .find(|(t, pr, _)| *t == p.target_port && *pr == proto)
                .map(|(_, _, port)| *port);
            let port = match again {
                Some(port) => port,
                None => ports::auto_assign(&svc.id, p.target_port, proto, |q| {
                    known.contains_key(&q) || ports::host_holder(q).is_some()
                })
                .ok_or_else(|| {
                    ApiError::unavailable(format!(
                        "{field}: no free port left in {}-{}",
                        ports::AUTO_RANGE.start(),
                        ports::AUTO_RANGE.end()
                    ))
                })?,
            };
            p.published_port = Some(port);
        }
        let published = Published {
            proto,
            port: p.published_port.expect("set above"),
        };
        if let Some((other_id, other_name)) = known.get(&published) {
            if *other_id != svc.id {
                return Err(ApiError::conflict(
                    field.clone(),
                    format!("{field}: port {published} is already published by service {other_name:?} ({other_id})"),
                ));
            }
        }
        if let Some(who) = ports::host_holder(published) {
            return Err(ApiError::conflict(
                field.clone(),
                format!("{field}: port {published} is in use on this node by {who}"),
            ));
        }
    }
    Ok(())
}

/// A repeated PUT of an attached endpoint: ports it left without a number get the ones
/// assigned the first time (so an identical request stays idempotent).
pub fn same_numbers(existing: &EndpointSpec, spec: &mut EndpointSpec) {
    let (Some(old), Some(new)) = (&existing.service, spec.service.as_mut()) else {
        return;
    };
    for (o, n) in old.ports.iter().zip(new.ports.iter_mut()) {
        if n.published_port.is_none() && (o.target_port, o.protocol) == (n.target_port, n.protocol)
        {
            n.published_port = o.published_port;
        }
    }
}

/// Ports already published by other tasks of the service: (target port, protocol, port).
fn sibling_ports(
    desired: &DesiredState,
    view: &ClusterView,
    service_id: &str,
) -> Vec<(u16, crate::lb::model::Proto, u16)> {
    let local = desired
        .containers()
        .filter_map(|(_, e)| e.spec.service.as_ref());
    let remote = view.endpoints.iter().filter_map(|e| e.service.as_deref());
    local
        .chain(remote)
        .filter(|s| s.id == service_id)
        .flat_map(|s| s.ports.iter())
        .filter(|p| p.publish_mode == PublishMode::Ingress)
        .filter_map(|p| Some((p.target_port, proto_of(p.protocol), p.published_port?)))
        .collect()
}
