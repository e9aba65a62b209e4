//! Published ports (Docker's routing mesh, `--publish`): what a service's `ports` with a
//! `published_port` make every node do.
//!
//! - `ingress` mode: every node answers on `<node address>:published_port` (and on localhost)
//!   and spreads flows over the service's enabled tasks on the ingress network, local or
//!   remote. The node reaches them through its own leg on the ingress network (endpoint
//!   [`crate::state::INGRESS_LEG`] in the node's namespace), over VXLAN like any endpoint.
//!   nftables in the node's namespace DNATs with `jhash(saddr . sport)` into the service's
//!   Maglev table ([`crate::lb::maglev`]): the same table and hash on every node, so a flow
//!   that an external balancer moves to another node keeps its backend. Default: SNAT to the
//!   node's leg address; `preserve_client_ip` keeps the client's address and routes replies
//!   back through the ingress node (policy routing by connmark in the task's namespace).
//! - `host` mode: only nodes with a local task answer, DNAT straight to the task's egress
//!   leg (`netd_gw`), no SNAT.
//!
//! [`model`] derives all of it from the desired state and the cluster view; [`ports`] holds
//! the node's port reservations and finds who holds a port.

pub mod model;
pub mod ports;
pub mod publish;

use crate::api::error::ApiError;
use crate::api::types::{EndpointMode, EndpointSpec, PortSpec, PublishMode};

/// Rules of one published port (no side effects).
pub fn validate_port(i: usize, p: &PortSpec, mode: EndpointMode) -> Result<(), ApiError> {
    let field = |f: &str| format!("service.ports[{i}].{f}");
    if p.published_port == Some(0) {
        return Err(ApiError::invalid(
            field("published_port"),
            "published_port: must be 1-65535 (leave it out to get one assigned)",
        ));
    }
    match p.publish_mode {
        PublishMode::Host if p.published_port.is_none() => Err(ApiError::invalid(
            field("published_port"),
            "published_port: required with publish_mode host",
        )),
        PublishMode::Host if p.preserve_client_ip => Err(ApiError::invalid(
            field("preserve_client_ip"),
            "preserve_client_ip: host mode always preserves the client address; the option is for ingress mode",
        )),
        PublishMode::Ingress if mode == EndpointMode::Dnsrr && p.published_port.is_some() => {
            Err(ApiError::invalid(
                field("publish_mode"),
                "publish_mode: ingress needs endpoint_mode vip (a dnsrr service can publish in host mode)",
            ))
        }
        _ => Ok(()),
    }
}

/// Interface name of the node's leg on the ingress network, in the node's namespace.
pub const LEG_IFNAME: &str = "netd_ingress";

/// Names the node's namespace (where netd runs) under /run/netns, for its ingress leg.
pub fn name_node_namespace(node: &str) -> anyhow::Result<String> {
    let ns = crate::kernel::ingress::node_netns_name(node);
    crate::kernel::ingress::name_node_netns(&ns)?;
    Ok(ns)
}

/// The node's own endpoint on the ingress network `network` (created when the network is
/// defined, on every node): a veth from the ingress sandbox's bridge into the node namespace,
/// which gets the namespace a name first.
pub fn leg_spec(node: &str, network: &str) -> anyhow::Result<EndpointSpec> {
    let ns = name_node_namespace(node)?;
    Ok(EndpointSpec {
        network: network.to_string(),
        netns: std::path::Path::new("/run/netns").join(ns),
        ifname: LEG_IFNAME.to_string(),
        ip: None,
        mac: None,
        name: format!("{node}-ingress"),
        aliases: vec![],
        service: None,
        labels: [("owner".to_string(), "netd".to_string())].into(),
    })
}
