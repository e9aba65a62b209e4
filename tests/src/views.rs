//! The parts of netd's API responses the tests read (mirrors of `netd/src/api/types.rs`).
//! Unknown fields are ignored on purpose: the tests pin the contract they rely on, not
//! every field netd may add; a missing or mistyped field here fails the parse loudly.

use serde::Deserialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Deserialize)]
pub struct EndpointView {
    pub id: String,
    pub network: String,
    pub netns: String,
    pub ifname: String,
    pub name: String,
    /// `a.b.c.d/len`.
    pub address: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    #[serde(default)]
    pub egress_address: Option<String>,
    pub service_disabled: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RemoteEndpointView {
    pub id: String,
    pub node: String,
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub vtep: Ipv4Addr,
    pub name: String,
    pub service_disabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NetworkView {
    pub name: String,
    pub subnet: String,
    pub vni: u32,
    pub internal: bool,
    pub effective_gateway: Ipv4Addr,
    pub effective_mtu: u32,
    pub sandbox: String,
    pub local_endpoints: usize,
    pub remote_endpoints: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeerView {
    pub node: String,
    pub gossip_addr: String,
    pub live: bool,
    pub generation: u64,
    pub endpoints: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub advertise_addr: Ipv4Addr,
    pub data_port: u16,
    pub underlay_mtu: u32,
    pub local_endpoints: usize,
    pub remote_endpoints: usize,
    pub peers: Vec<PeerView>,
    pub gossip_key_tags: Vec<String>,
    pub ready: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    #[serde(default)]
    pub field: Option<String>,
    pub message: String,
}
