//! Desired state: what the API asked for on this node. Persisted by `store`; turned into kernel
//! objects by `reconcile`.

pub mod store;

use crate::api::types::{EndpointSpec, NetworkSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Id of the node's own endpoint on the ingress network (its "ingress sandbox" leg, in the
/// node's namespace); reserved, created by netd (see `crate::ingress`).
pub const INGRESS_LEG: &str = "ingress-sbox";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSpec>,
    #[serde(default)]
    pub endpoints: BTreeMap<String, LocalEndpoint>,
    /// IPAM blocks this node holds, per network (confirmed through gossip).
    #[serde(default)]
    pub ipam_blocks: BTreeMap<String, BTreeSet<u32>>,
    /// Egress (gateway bridge) address per container namespace.
    #[serde(default)]
    pub egress: BTreeMap<PathBuf, Ipv4Addr>,
    /// Gossip keys set through the API (override the config's), primary first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_keys: Option<Vec<String>>,
    /// Data-path (IPsec) keys of encrypted networks, primary first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    pub spec: EndpointSpec,
    pub ip: Ipv4Addr,
    pub mac: String,
    #[serde(default)]
    pub service_disabled: bool,
}

impl DesiredState {
    pub fn endpoints_on<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a LocalEndpoint)> + 'a {
        self.endpoints
            .iter()
            .filter(move |(_, e)| e.spec.network == network)
    }

    /// Container namespaces that need an egress leg: those with an endpoint on a
    /// non-internal network.
    pub fn egress_netns(&self) -> BTreeSet<PathBuf> {
        self.endpoints
            .iter()
            .filter(|(id, _)| id.as_str() != INGRESS_LEG)
            .map(|(_, e)| e)
            .filter(|e| {
                self.networks
                    .get(&e.spec.network)
                    .is_some_and(|n| !n.internal)
            })
            .map(|e| e.spec.netns.clone())
            .collect()
    }

    /// The ingress network, if one is defined.
    pub fn ingress_network(&self) -> Option<(&String, &NetworkSpec)> {
        self.networks.iter().find(|(_, n)| n.ingress)
    }

    /// Container endpoints (the node's own ingress leg left out).
    pub fn containers(&self) -> impl Iterator<Item = (&String, &LocalEndpoint)> + '_ {
        self.endpoints
            .iter()
            .filter(|(id, _)| id.as_str() != INGRESS_LEG)
    }
}
