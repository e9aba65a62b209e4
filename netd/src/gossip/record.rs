//! What a node publishes in its gossip state: the wire format of endpoint records and IPAM
//! claims. Keys:
//! - `ep:<network>:<endpoint id>` → an endpoint record (see [`encode`])
//! - `ipam:<network>:<block>` → `claimed` | `confirmed` (see `claims`)
//! - `seen:<node>:<generation>` → highest state version of `<node>` this node holds (claim acknowledgement)
//!
//! Every node holds every node's records (100k at 10k services x 10 tasks), so a record is
//! JSON with one-letter names and defaults left out: `{"i": ip, "m": mac, "v": vtep, "n": name,
//! "a": aliases, "s": service, "d": drained}`, the service `{"n": name, "i": id, "v": vip,
//! "p": ports, "m": endpoint mode}`, a port `{"t": target, "p": published, "r": protocol,
//! "x": publish mode, "c": preserve client ip}`. `m` is left out when it is the MAC derived from
//! the address (`02:42:` + the address), `v` when it is the node's own gossip address. The
//! service spec stays in the record: tasks of a service are spread over the nodes, so a node
//! rarely holds two of one service and a per-node spec key would cost more than it saves.
//! Records of the earlier format (long names) are still read; nodes of earlier versions cannot
//! read these.

use crate::api::types::{EndpointMode, PortSpec, Protocol, PublishMode, ServiceSpec};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub ip: Ipv4Addr,
    pub mac: String,
    pub vtep: Ipv4Addr,
    pub name: String,
    pub aliases: Vec<String>,
    pub service: Option<ServiceSpec>,
    pub disabled: bool,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The record as gossiped; the long names are the earlier format's (read, not written).
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    #[serde(rename = "i", alias = "ip")]
    ip: Ipv4Addr,
    #[serde(
        rename = "m",
        alias = "mac",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    mac: String,
    #[serde(
        rename = "v",
        alias = "vtep",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    vtep: Option<Ipv4Addr>,
    #[serde(rename = "n", alias = "name")]
    name: String,
    #[serde(
        rename = "a",
        alias = "aliases",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    aliases: Vec<String>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    service: Option<WireService>,
    /// The earlier format's service spec.
    #[serde(rename = "service", default, skip_serializing)]
    long_service: Option<ServiceSpec>,
    #[serde(
        rename = "d",
        alias = "disabled",
        default,
        skip_serializing_if = "is_default"
    )]
    disabled: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireService {
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "i")]
    id: String,
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    vip: Option<Ipv4Addr>,
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    ports: Vec<WirePort>,
    #[serde(rename = "m", default, skip_serializing_if = "is_default")]
    mode: EndpointMode,
}

#[derive(Debug, Serialize, Deserialize)]
struct WirePort {
    #[serde(rename = "t")]
    target: u16,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    published: Option<u16>,
    #[serde(rename = "r", default, skip_serializing_if = "is_default")]
    protocol: Protocol,
    #[serde(rename = "x", default, skip_serializing_if = "is_default")]
    mode: PublishMode,
    #[serde(rename = "c", default, skip_serializing_if = "is_default")]
    preserve_client_ip: bool,
}

impl From<&ServiceSpec> for WireService {
    fn from(s: &ServiceSpec) -> Self {
        WireService {
            name: s.name.clone(),
            id: s.id.clone(),
            vip: s.vip,
            ports: s
                .ports
                .iter()
                .map(|p| WirePort {
                    target: p.target_port,
                    published: p.published_port,
                    protocol: p.protocol,
                    mode: p.publish_mode,
                    preserve_client_ip: p.preserve_client_ip,
                })
                .collect(),
            mode: s.endpoint_mode,
        }
    }
}

impl From<WireService> for ServiceSpec {
    fn from(s: WireService) -> Self {
        ServiceSpec {
            name: s.name,
            id: s.id,
            vip: s.vip,
            ports: s
                .ports
                .into_iter()
                .map(|p| PortSpec {
                    protocol: p.protocol,
                    target_port: p.target,
                    published_port: p.published,
                    publish_mode: p.mode,
                    preserve_client_ip: p.preserve_client_ip,
                })
                .collect(),
            endpoint_mode: s.mode,
        }
    }
}

/// The value of `rec` published by a node whose gossip address is `node_ip`.
pub fn encode(rec: &EndpointRecord, node_ip: Ipv4Addr) -> String {
    let w = Wire {
        ip: rec.ip,
        mac: if rec.mac == crate::ipam::mac_for(rec.ip) {
            String::new()
        } else {
            rec.mac.clone()
        },
        vtep: (rec.vtep != node_ip).then_some(rec.vtep),
        name: rec.name.clone(),
        aliases: rec.aliases.clone(),
        service: rec.service.as_ref().map(WireService::from),
        long_service: None,
        disabled: rec.disabled,
    };
    serde_json::to_string(&w).expect("record serializes")
}

/// A record of a node whose gossip address is `node_ip` (either format).
pub fn decode(value: &str, node_ip: Ipv4Addr) -> Option<EndpointRecord> {
    let w: Wire = serde_json::from_str(value).ok()?;
    let mac = if w.mac.is_empty() {
        crate::ipam::mac_for(w.ip)
    } else {
        w.mac
    };
    Some(EndpointRecord {
        ip: w.ip,
        mac,
        vtep: w.vtep.unwrap_or(node_ip),
        name: w.name,
        aliases: w.aliases,
        service: w.service.map(ServiceSpec::from).or(w.long_service),
        disabled: w.disabled,
    })
}

pub const ENDPOINT_PREFIX: &str = "ep:";

pub fn endpoint_key(network: &str, id: &str) -> String {
    format!("{ENDPOINT_PREFIX}{network}:{id}")
}

/// `ep:<network>:<id>` → `(network, id)`. Network names cannot contain ':'.
pub fn parse_endpoint_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(ENDPOINT_PREFIX)?.split_once(':')
}

/// Every IPAM claim key starts with this.
pub const CLAIM_PREFIX: &str = "ipam:";

pub fn claim_key(network: &str, block: u32) -> String {
    format!("{CLAIM_PREFIX}{network}:{block}")
}

pub fn parse_claim_key(key: &str) -> Option<(&str, u32)> {
    let (n, b) = key.strip_prefix(CLAIM_PREFIX)?.rsplit_once(':')?;
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
    use crate::api::types::{EndpointMode, PortSpec, Protocol, PublishMode};

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

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            id: "svc-web".into(),
            vip: Some("10.0.0.250".parse().unwrap()),
            ports: vec![
                PortSpec {
                    protocol: Protocol::Tcp,
                    target_port: 80,
                    published_port: Some(8080),
                    publish_mode: PublishMode::Ingress,
                    preserve_client_ip: false,
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    target_port: 53,
                    published_port: None,
                    publish_mode: PublishMode::Host,
                    preserve_client_ip: true,
                },
            ],
            endpoint_mode: EndpointMode::Dnsrr,
        }
    }

    fn rec() -> EndpointRecord {
        EndpointRecord {
            ip: "10.0.0.2".parse().unwrap(),
            mac: "02:42:0a:00:00:02".into(),
            vtep: "192.168.1.1".parse().unwrap(),
            name: "web".into(),
            aliases: vec![],
            service: None,
            disabled: false,
        }
    }

    /// Defaults, the derived MAC and the node's own address are left out.
    #[test]
    fn record_is_compact_and_round_trips() {
        let node: Ipv4Addr = "192.168.1.1".parse().unwrap();
        let v = encode(&rec(), node);
        assert_eq!(v, r#"{"i":"10.0.0.2","n":"web"}"#);
        assert_eq!(decode(&v, node), Some(rec()));
        let r = EndpointRecord {
            mac: "02:00:00:00:00:07".into(),
            vtep: "192.168.1.9".parse().unwrap(),
            aliases: vec!["w".into()],
            service: Some(spec()),
            disabled: true,
            ..rec()
        };
        let v = encode(&r, node);
        assert_eq!(
            v,
            r#"{"i":"10.0.0.2","m":"02:00:00:00:00:07","v":"192.168.1.9","n":"web","a":["w"],"s":{"n":"web","i":"svc-web","v":"10.0.0.250","p":[{"t":80,"p":8080},{"t":53,"r":"udp","x":"host","c":true}],"m":"dnsrr"},"d":true}"#
        );
        assert_eq!(decode(&v, node), Some(r));
        let plain = EndpointRecord {
            service: Some(ServiceSpec {
                ports: vec![],
                endpoint_mode: EndpointMode::Vip,
                ..spec()
            }),
            ..rec()
        };
        let v = encode(&plain, node);
        assert_eq!(
            v,
            r#"{"i":"10.0.0.2","n":"web","s":{"n":"web","i":"svc-web","v":"10.0.0.250"}}"#
        );
        assert_eq!(decode(&v, node), Some(plain));
        assert_eq!(decode("{}", node), None);
    }

    /// Records of the earlier format (long names, the spec as the API has it) are read.
    #[test]
    fn earlier_format_is_read() {
        let v = r#"{"ip":"10.0.0.2","mac":"02:42:0a:00:00:02","vtep":"192.168.1.1","name":"web","service":{"name":"web","id":"svc-web","vip":"10.0.0.250","ports":[{"target_port":80,"published_port":8080},{"protocol":"udp","target_port":53,"publish_mode":"host","preserve_client_ip":true}],"endpoint_mode":"dnsrr"},"disabled":true}"#;
        let r = decode(v, "192.168.9.9".parse().unwrap()).unwrap();
        assert_eq!(
            r,
            EndpointRecord {
                service: Some(spec()),
                disabled: true,
                ..rec()
            }
        );
    }
}
