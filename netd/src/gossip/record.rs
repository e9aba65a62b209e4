//! What a node publishes in its gossip state: the wire format of endpoint records and IPAM
//! claims. Keys:
//! - `ep:<network>:<endpoint id>` → [`EndpointRecord`] as JSON
//! - `ipam:<network>:<block>` → `claimed` | `confirmed` (see `claims`)
//! - `seen:<node>:<generation>` → highest state version of `<node>` this node holds (claim acknowledgement)

use crate::api::types::ServiceSpec;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub ip: Ipv4Addr,
    pub mac: String,
    pub vtep: Ipv4Addr,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

pub fn endpoint_key(network: &str, id: &str) -> String {
    format!("ep:{network}:{id}")
}

/// `ep:<network>:<id>` → `(network, id)`. Network names cannot contain ':'.
pub fn parse_endpoint_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("ep:")?.split_once(':')
}

pub fn claim_key(network: &str, block: u32) -> String {
    format!("ipam:{network}:{block}")
}

pub fn parse_claim_key(key: &str) -> Option<(&str, u32)> {
    let (n, b) = key.strip_prefix("ipam:")?.rsplit_once(':')?;
    Some((n, b.parse().ok()?))
}

/// Acknowledgement key for one incarnation (generation) of a node: a restarted node starts its
/// versions afresh, so an old acknowledgement must not count for it.
pub fn seen_key(node: &str, generation: u64) -> String {
    format!("seen:{node}:{generation}")
}

pub const CLAIMED: &str = "claimed";
pub const CONFIRMED: &str = "confirmed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        assert_eq!(
            parse_endpoint_key(&endpoint_key("net-a", "ep:1")),
            Some(("net-a", "ep:1"))
        );
        assert_eq!(
            parse_claim_key(&claim_key("net-a", 12)),
            Some(("net-a", 12))
        );
        assert_eq!(parse_claim_key("ipam:x:y"), None);
    }

    #[test]
    fn record_json_is_compact_and_stable() {
        let r = EndpointRecord {
            ip: "10.0.0.2".parse().unwrap(),
            mac: "02:42:0a:00:00:02".into(),
            vtep: "192.168.1.1".parse().unwrap(),
            name: "web".into(),
            aliases: vec![],
            service: None,
            disabled: false,
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"ip":"10.0.0.2","mac":"02:42:0a:00:00:02","vtep":"192.168.1.1","name":"web"}"#
        );
        assert_eq!(serde_json::from_str::<EndpointRecord>(&j).unwrap(), r);
    }
}
