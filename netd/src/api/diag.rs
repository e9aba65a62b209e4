//! Wire types of the read-only diagnostic views (`GET /v1/services`, `GET /v1/dns`), used by
//! `netd inspect`. Field names are stable: scripts read them (`netd inspect --json`).

use super::types::{EndpointMode, PortSpec};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A service as this node sees it: from its local tasks and the tasks gossip told it about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub id: String,
    pub endpoint_mode: EndpointMode,
    /// One VIP per network the service is on (none in `dnsrr` mode).
    pub vips: Vec<ServiceVip>,
    pub ports: Vec<PortSpec>,
    pub tasks: Vec<TaskView>,
    /// What the load balancer of this node should hold (empty in `dnsrr` mode).
    pub frontends: Vec<FrontendView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceVip {
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub endpoint_id: String,
    pub node: String,
    /// On this node.
    pub local: bool,
    pub network: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// `active` or `draining` (`service_disabled`: no new connections).
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontendView {
    /// `VIP:port/proto`.
    pub frontend: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub network: String,
    /// Enabled backends, `ip:port`, sorted.
    pub backends: Vec<String>,
    /// Drained backends, `ip:port`: keep their flows, get no new ones.
    pub draining: Vec<String>,
}

/// `GET /v1/dns?container=&name=`: the names a container can resolve, and an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsView {
    /// The container asked about (endpoint id, name or netns), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Networks whose names are visible (the container's, or every network of this node).
    pub networks: Vec<String>,
    pub records: Vec<DnsRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<DnsAnswerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsRecord {
    pub network: String,
    pub name: String,
    pub ips: Vec<Ipv4Addr>,
    /// Answered shuffled per query (`dnsrr`, `tasks.`).
    pub round_robin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsAnswerView {
    pub name: String,
    /// `netd` (answered from the endpoint tables), `forwarded` (to the upstreams), `nxdomain`.
    pub source: String,
    pub ips: Vec<Ipv4Addr>,
    pub round_robin: bool,
    pub reason: String,
}
