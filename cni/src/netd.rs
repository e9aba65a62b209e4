//! netd's API as the plugin uses it: the few wire types it needs (mirrors of
//! `netd/src/api/types.rs`, lenient on fields it does not read) and the mapping of every
//! failure to a CNI error.

use crate::errors;
use crate::http::{self, Unreachable};
use rscni_types::error::Error;
use rscni_types::ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default API socket (netd's `api_socket` default).
pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";

/// `PUT /v1/endpoints/{id}` body.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSpec {
    pub network: String,
    pub netns: String,
    pub ifname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Passed through verbatim: netd validates it and names the field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<Value>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub dst: Ipv4Net,
    #[serde(default)]
    pub gw: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DnsConfig {
    #[serde(default)]
    pub nameservers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// What netd answers for an endpoint (only the fields the plugin reads).
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointView {
    pub id: String,
    pub network: String,
    pub netns: String,
    pub ifname: String,
    pub address: Ipv4Net,
    pub mac: String,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub egress_address: Option<Ipv4Net>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeView {
    pub node: String,
    #[serde(default)]
    pub ready: bool,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    field: Option<String>,
    message: String,
}

/// A client of one netd (one node's socket).
pub struct Netd {
    socket: PathBuf,
    timeout: Duration,
}

/// An HTTP answer that is not an error of the transport.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Netd {
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        Netd {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer, Error> {
        match http::request(&self.socket, method, path, body, self.timeout) {
            Ok(r) => Ok(Answer {
                status: r.status,
                body: r.body,
            }),
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    /// netd not answering is transient from the runtime's point of view (it is restarting,
    /// or not started yet): "try again later".
    fn unreachable(&self, e: &Unreachable) -> Error {
        Error::TryAgainLater(format!(
            "netd is not reachable at {}: {e}",
            self.socket.display()
        ))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn put_endpoint(&self, id: &str, spec: &EndpointSpec) -> Result<EndpointView, Error> {
        let body = serde_json::to_vec(spec).map_err(|e| errors::internal(e.to_string()))?;
        let a = self.call("PUT", &format!("/v1/endpoints/{id}"), Some(&body))?;
        match a.status {
            200 | 201 => decode(&a.body, "PUT endpoint"),
            _ => Err(api_error(a.status, &a.body, "attach")),
        }
    }

    /// `None` when netd does not know the endpoint.
    pub fn get_endpoint(&self, id: &str) -> Result<Option<EndpointView>, Error> {
        let a = self.call("GET", &format!("/v1/endpoints/{id}"), None)?;
        match a.status {
            200 => decode(&a.body, "GET endpoint").map(Some),
            404 => Ok(None),
            _ => Err(api_error(a.status, &a.body, "read endpoint")),
        }
    }

    /// Idempotent: an endpoint netd does not know is already deleted.
    pub fn delete_endpoint(&self, id: &str) -> Result<(), Error> {
        let a = self.call("DELETE", &format!("/v1/endpoints/{id}"), None)?;
        match a.status {
            200 | 202 | 204 | 404 => Ok(()),
            _ => Err(api_error(a.status, &a.body, "detach")),
        }
    }

    pub fn endpoints(&self) -> Result<Vec<EndpointView>, Error> {
        let a = self.call("GET", "/v1/endpoints", None)?;
        match a.status {
            200 => decode(&a.body, "GET endpoints"),
            _ => Err(api_error(a.status, &a.body, "list endpoints")),
        }
    }

    pub fn node(&self) -> Result<NodeView, Error> {
        let a = self.call("GET", "/v1/node", None)?;
        match a.status {
            200 => decode(&a.body, "GET node"),
            _ => Err(api_error(a.status, &a.body, "read node")),
        }
    }

    pub fn network_exists(&self, name: &str) -> Result<bool, Error> {
        let a = self.call("GET", &format!("/v1/networks/{name}"), None)?;
        match a.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(api_error(a.status, &a.body, "read network")),
        }
    }
}

/// Goes through `Value` on purpose: netd's endpoint view flattens the request spec next to
/// fields of the same name (`ip`, `mac`), so a body can repeat a key, which a struct decode
/// refuses and a map keeps (last one wins; both carry the same value).
fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice::<Value>(body)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            errors::internal(format!(
                "{what}: unexpected answer from netd ({e}): {}",
                snippet(body)
            ))
        })
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_string()
    }
}

/// Maps an error answer of netd to the CNI error a runtime can act on.
fn api_error(status: u16, body: &[u8], what: &str) -> Error {
    let (code, field, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.code, b.error.field, b.error.message),
        Err(_) => (String::new(), None, snippet(body)),
    };
    let details = match &field {
        Some(f) => format!("netd: {what}: {message} (HTTP {status} {code}, field {f})"),
        None => format!("netd: {what}: {message} (HTTP {status} {code})"),
    };
    match (status, field.as_deref()) {
        // Fields that come from the CNI_* environment.
        (400, Some("netns")) => Error::InvalidEnvValue(format!("CNI_NETNS: {details}")),
        (400, Some("ifname")) => Error::InvalidEnvValue(format!("CNI_IFNAME: {details}")),
        (400, Some("id")) => Error::InvalidEnvValue(format!("CNI_CONTAINERID: {details}")),
        // Everything else the plugin sends comes from the network configuration, its
        // runtimeConfig or CNI_ARGS.
        (400, _) | (404, Some("network")) => Error::InvalidNetworkConfig(details),
        (409, _) => errors::conflict(details),
        (503, _) => Error::TryAgainLater(details),
        _ => errors::internal(details),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: &Error) -> u32 {
        u32::from(e)
    }

    #[test]
    fn error_mapping() {
        let body = |field: &str| {
            format!(r#"{{"error":{{"code":"x","field":"{field}","message":"m"}}}}"#).into_bytes()
        };
        assert_eq!(code(&api_error(404, &body("network"), "attach")), 7);
        assert_eq!(code(&api_error(400, &body("netns"), "attach")), 4);
        assert_eq!(code(&api_error(400, &body("ifname"), "attach")), 4);
        assert_eq!(code(&api_error(400, &body("ip"), "attach")), 7);
        assert_eq!(
            code(&api_error(409, &body("ip"), "attach")),
            errors::CONFLICT
        );
        assert_eq!(code(&api_error(503, b"{}", "attach")), 11);
        assert_eq!(
            code(&api_error(500, b"oops", "attach")),
            errors::NETD_FAILED
        );
        let e = api_error(404, &body("network"), "attach");
        assert!(e.details().contains("field network"), "{}", e.details());
    }

    #[test]
    fn view_parses_netd_answer() {
        let v: EndpointView = serde_json::from_str(
            r#"{"id":"c1-eth0","network":"web","netns":"/run/netns/c1","ifname":"eth0",
                "name":"c1","aliases":[],"address":"10.1.0.2/24","ip":"10.1.0.2",
                "mac":"02:42:0a:01:00:02","gateway":"10.1.0.1","mtu":1450,
                "routes":[{"dst":"10.1.0.0/24"},{"dst":"0.0.0.0/0","gw":"172.18.0.1"}],
                "dns":{"nameservers":["127.0.0.11"],"search":[],"options":["ndots:0"]},
                "service_disabled":false,"egress_address":"172.18.0.2/16","future":1}"#,
        )
        .unwrap();
        assert_eq!(v.address.prefix_len(), 24);
        assert_eq!(v.routes[1].gw, Some(Ipv4Addr::new(172, 18, 0, 1)));
        assert!(v.labels.is_empty());
    }

    #[test]
    fn repeated_keys_are_tolerated() {
        let body = br#"{"id":"a","network":"w","netns":"/n","ifname":"eth0","ip":"10.1.0.9",
            "mac":"02:00:00:00:00:01","address":"10.1.0.9/24","ip":"10.1.0.9",
            "mac":"02:00:00:00:00:01","gateway":"10.1.0.1","mtu":1450}"#;
        let v: EndpointView = decode(body, "test").unwrap();
        assert_eq!(v.mac, "02:00:00:00:00:01");
    }
}
