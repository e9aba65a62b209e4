//! The API's wire types: JSON bodies of `/v1` requests and responses.
//!
//! Requests are parsed strictly (`deny_unknown_fields`): a mistyped option is an error, never
//! silently ignored. Semantic validation lives in `crate::validate`.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

/// `PUT /v1/networks/{name}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    pub vni: u32,
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The ingress network (Docker's `ingress`): at most one; carries published ports between
    /// nodes, and every node gets a leg on it (see `crate::ingress`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ingress: bool,
}

/// A network as netd reports it: the spec plus what netd derived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkView {
    pub name: String,
    #[serde(flatten)]
    pub spec: NetworkSpec,
    /// Gateway actually used (the spec's, or the subnet's first host).
    pub effective_gateway: Ipv4Addr,
    /// MTU handed to containers (the spec's, or underlay MTU minus VXLAN overhead).
    pub effective_mtu: u32,
    /// Sandbox namespace name on this node (present once a local endpoint exists).
    pub sandbox: String,
    pub local_endpoints: usize,
    pub remote_endpoints: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    #[serde(default)]
    pub protocol: Protocol,
    pub target_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_port: Option<u16>,
    #[serde(default)]
    pub publish_mode: PublishMode,
    /// Ingress mode: the task sees the client's address (no SNAT), also when the connection
    /// entered the cluster on another node; replies are routed back through that node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_client_ip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
}

/// `PUT /v1/endpoints/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub network: String,
    /// Path of the container's network namespace (e.g. `/run/netns/c1`, `/proc/PID/ns/net`).
    pub netns: PathBuf,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Free-form labels (e.g. `owner: cni`, so CNI GC only touches its own attachments).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `PATCH /v1/endpoints/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub service_disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub nameservers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// Response of `PUT`/`GET /v1/endpoints/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub id: String,
    #[serde(flatten)]
    pub spec: EndpointSpec,
    /// Address with prefix, e.g. `10.1.0.2/24`.
    pub address: Ipv4Net,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub routes: Vec<Route>,
    pub dns: DnsConfig,
    pub service_disabled: bool,
    /// Address on the node's gateway bridge (egress), absent on `internal` networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_address: Option<Ipv4Net>,
    /// MAC of the egress interface (`netdgw0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_mac: Option<String>,
}

/// An endpoint of another node, learnt by gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpointView {
    pub id: String,
    /// Node and network names and the service spec are shared by the endpoints of a view
    /// (100k endpoints hold a few copies, not 100k).
    pub node: Arc<str>,
    pub network: Arc<str>,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub vtep: Ipv4Addr,
    pub name: String,
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Arc<ServiceSpec>>,
    pub service_disabled: bool,
}

/// `PUT /v1/cluster/keys` body: gossip keys, primary first (1 to 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipKeys {
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    pub node: String,
    pub gossip_addr: String,
    pub live: bool,
    pub generation: u64,
    pub endpoints: usize,
    /// The epoch of the SAs this node sends with (0: none published; see crypto::epoch).
    #[serde(default)]
    pub sa_epoch: u64,
}

/// `GET /v1/node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub advertise_addr: Ipv4Addr,
    pub data_port: u16,
    pub gossip_addr: String,
    pub underlay_mtu: u32,
    pub networks: usize,
    pub local_endpoints: usize,
    pub remote_endpoints: usize,
    pub peers: Vec<PeerView>,
    /// Key tags (first 8 hex digits of SHA-256 of each key), never key material.
    pub gossip_key_tags: Vec<String>,
    /// Gossip datagrams dropped because they did not authenticate with any cluster key.
    pub gossip_rejected: u64,
    pub dns: DnsStats,
    pub ready: bool,
    /// Service LB data plane in effect: `ebpf`, `nftables` or `none`.
    pub lb_backend: String,
    /// Where the eBPF LB pins its maps (eBPF backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_pin_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsStats {
    pub upstreams: Vec<String>,
    pub served_containers: usize,
    pub forwarded: u64,
    pub cache_hits: u64,
    pub failures: u64,
    pub dropped: u64,
}

/// Every error body: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable kind: `invalid`, `conflict`, `not_found`, `unavailable`, `internal`.
    pub code: String,
    /// The request field the error is about, when there is one (`subnet`, `service.vip`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}
