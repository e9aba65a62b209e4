//! What the plugin reads besides the CNI envelope: its own keys in the network
//! configuration, the runtime config (capability args), `args` and `CNI_ARGS`, and how an
//! attachment (container ID + interface) is named in netd.

use crate::netd::DEFAULT_SOCKET;
use rscni_types::error::Error;
use rscni_types::types::NetConf;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// Labels that mark an endpoint as made by this plugin (GC only ever touches those).
pub const LABEL_OWNER: &str = "owner";
pub const OWNER: &str = "cni";
pub const LABEL_CONTAINER_ID: &str = "cni.container_id";
pub const LABEL_IFNAME: &str = "cni.ifname";
/// The CNI network (configuration) name, which GC is scoped to.
pub const LABEL_NETWORK: &str = "cni.network";

/// The plugin's keys of the network configuration.
#[derive(Debug, Clone)]
pub struct PluginConf {
    /// The netd network to attach to.
    pub network: String,
    /// netd's API socket.
    pub socket: PathBuf,
    /// DNS aliases for every container of this network.
    pub aliases: Vec<String>,
    /// `args.netd.service` (passed through to netd).
    pub service: Option<Value>,
    /// `args.netd.labels`, merged into the endpoint's labels (the plugin's own win).
    pub labels: BTreeMap<String, String>,
    /// `runtimeConfig.ips`, else `args.cni.ips`.
    pub ips: Vec<String>,
    /// `runtimeConfig.mac`, else `args.cni.mac`.
    pub mac: Option<String>,
    /// `runtimeConfig.aliases` (a list, or podman's `{"<network>": [...]}`).
    pub runtime_aliases: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidNetworkConfig(msg.into())
}

/// netd's rule for names (networks, endpoint ids, DNS names): 1-64 of `[A-Za-z0-9_.-]`, not
/// starting with `-` or `.`.
pub fn valid_netd_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with(['-', '.'])
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, Error> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("{what}: expected strings, found {i}")))
            })
            .collect(),
        other => Err(invalid(format!(
            "{what}: expected a list of strings, found {other}"
        ))),
    }
}

fn opt_string(v: Option<&Value>, what: &str) -> Result<Option<String>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{what}: expected a string, found {other}"))),
    }
}

impl PluginConf {
    pub fn from_netconf(conf: &NetConf) -> Result<Self, Error> {
        let custom = &conf.custom;
        let network = match custom.get("network") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => {
                return Err(invalid(
                    "missing \"network\": the netd network to attach to",
                ))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "\"network\": expected a string, found {other}"
                )))
            }
        };
        if !valid_netd_name(&network) {
            return Err(invalid(format!(
                "\"network\": {network:?} is not a netd network name \
                 (1-64 characters of [A-Za-z0-9_.-], not starting with '-' or '.')"
            )));
        }
        let socket = PathBuf::from(
            opt_string(custom.get("socket"), "\"socket\"")?
                .unwrap_or_else(|| DEFAULT_SOCKET.to_string()),
        );
        if !socket.is_absolute() {
            return Err(invalid(format!(
                "\"socket\": {} must be an absolute path",
                socket.display()
            )));
        }
        let aliases = match custom.get("aliases") {
            Some(v) => string_list(v, "\"aliases\"")?,
            None => vec![],
        };

        // `args` of the network configuration: `args.cni` is the conventional place for
        // ips/mac, `args.netd` holds this plugin's own.
        let args_cni = conf.args.as_ref().and_then(|a| a.get("cni"));
        let args_netd = conf.args.as_ref().and_then(|a| a.get("netd"));
        for (name, v) in [("args.cni", args_cni), ("args.netd", args_netd)] {
            if let Some(v) = v {
                if !v.is_object() && !v.is_null() {
                    return Err(invalid(format!("{name}: expected an object, found {v}")));
                }
            }
        }
        let service = match args_netd.and_then(|a| a.get("service")) {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                return Err(invalid(format!(
                    "args.netd.service: expected an object, found {other}"
                )))
            }
        };
        let mut labels = BTreeMap::new();
        match args_netd.and_then(|a| a.get("labels")) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| {
                        invalid(format!(
                            "args.netd.labels.{k}: expected a string, found {v}"
                        ))
                    })?;
                    labels.insert(k.clone(), v.to_string());
                }
            }
            Some(other) => {
                return Err(invalid(format!(
                    "args.netd.labels: expected an object, found {other}"
                )))
            }
        }

        let rc = conf.runtime_config.as_ref().map(|r| &r.custom);
        let ips = match rc.and_then(|r| r.get("ips")) {
            Some(v) if !v.is_null() => string_list(v, "runtimeConfig.ips")?,
            _ => match args_cni.and_then(|a| a.get("ips")) {
                Some(v) => string_list(v, "args.cni.ips")?,
                None => vec![],
            },
        };
        let mac = match opt_string(rc.and_then(|r| r.get("mac")), "runtimeConfig.mac")? {
            Some(m) => Some(m),
            None => opt_string(args_cni.and_then(|a| a.get("mac")), "args.cni.mac")?,
        };
        let runtime_aliases = match rc.and_then(|r| r.get("aliases")) {
            None | Some(Value::Null) => vec![],
            // podman: {"<network name>": ["<short id>", ...]}
            Some(Value::Object(m)) => match m.get(&conf.name) {
                Some(v) => string_list(v, "runtimeConfig.aliases")?,
                None => vec![],
            },
            Some(v) => string_list(v, "runtimeConfig.aliases")?,
        };
        Ok(PluginConf {
            network,
            socket,
            aliases,
            service,
            labels,
            ips,
            mac,
            runtime_aliases,
        })
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default)]
pub struct CniArgs {
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub pod_name: Option<String>,
    pub service: Option<String>,
    pub service_id: Option<String>,
    pub service_vip: Option<String>,
}

const KNOWN_ARGS: &[&str] = &[
    "IgnoreUnknown",
    "IP",
    "MAC",
    "K8S_POD_NAME",
    "K8S_POD_NAMESPACE",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "NETD_SERVICE",
    "NETD_SERVICE_ID",
    "NETD_SERVICE_VIP",
];

impl CniArgs {
    /// Parses like the reference plugins: a pair without `=` is invalid (error 4), and an
    /// unknown key is refused (error 2) unless `IgnoreUnknown` is true/1.
    pub fn parse(raw: Option<&str>) -> Result<Self, Error> {
        let mut out = CniArgs::default();
        let Some(raw) = raw else {
            return Ok(out);
        };
        let mut pairs = vec![];
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(Error::InvalidEnvValue(format!(
                    "CNI_ARGS: {pair:?} is not KEY=VALUE"
                )));
            };
            pairs.push((k, v));
        }
        let ignore_unknown = pairs
            .iter()
            .any(|(k, v)| *k == "IgnoreUnknown" && (v.eq_ignore_ascii_case("true") || *v == "1"));
        for (k, v) in pairs {
            let v = v.to_string();
            match k {
                "IP" => out.ip = Some(v),
                "MAC" => out.mac = Some(v),
                "K8S_POD_NAME" => out.pod_name = Some(v),
                "NETD_SERVICE" => out.service = Some(v),
                "NETD_SERVICE_ID" => out.service_id = Some(v),
                "NETD_SERVICE_VIP" => out.service_vip = Some(v),
                k if KNOWN_ARGS.contains(&k) || ignore_unknown => {}
                k => {
                    return Err(Error::UnsupportedNetworkConfiguration(format!(
                        "CNI_ARGS: unknown key {k}={v} (set IgnoreUnknown=1 to ignore it)"
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// The address to ask netd for: the first source that has one (runtimeConfig.ips, args.cni.ips,
/// CNI_ARGS IP); `a.b.c.d` or `a.b.c.d/len` (the prefix is the network's anyway).
pub fn requested_ip(conf: &PluginConf, args: &CniArgs) -> Result<Option<Ipv4Addr>, Error> {
    let (source, list): (&str, Vec<String>) = if !conf.ips.is_empty() {
        ("ips", conf.ips.clone())
    } else if let Some(ip) = &args.ip {
        (
            "CNI_ARGS IP",
            ip.split(',').map(|s| s.trim().to_string()).collect(),
        )
    } else {
        return Ok(None);
    };
    let mut v4 = vec![];
    for s in list.iter().filter(|s| !s.is_empty()) {
        let addr = s.split_once('/').map_or(s.as_str(), |(a, _)| a);
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => v4.push(a),
            Ok(IpAddr::V6(_)) => {
                return Err(invalid(format!(
                    "{source}: {s} is IPv6; netd networks are IPv4-only"
                )))
            }
            Err(_) => return Err(invalid(format!("{source}: {s:?} is not an IP address"))),
        }
    }
    match v4.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(invalid(format!(
            "{source}: {} addresses given; a netd attachment has exactly one",
            v4.len()
        ))),
    }
}

pub fn requested_mac(conf: &PluginConf, args: &CniArgs) -> Option<String> {
    conf.mac
        .clone()
        .or_else(|| args.mac.clone())
        .map(|m| m.to_ascii_lowercase())
}

/// The service the endpoint belongs to: `CNI_ARGS NETD_SERVICE[_ID|_VIP]` over
/// `args.netd.service`.
pub fn requested_service(conf: &PluginConf, args: &CniArgs) -> Result<Option<Value>, Error> {
    let Some(name) = &args.service else {
        if args.service_id.is_some() || args.service_vip.is_some() {
            return Err(Error::InvalidEnvValue(
                "CNI_ARGS: NETD_SERVICE_ID/NETD_SERVICE_VIP need NETD_SERVICE".into(),
            ));
        }
        return Ok(conf.service.clone());
    };
    let mut svc = serde_json::Map::new();
    svc.insert("name".into(), Value::String(name.clone()));
    svc.insert(
        "id".into(),
        Value::String(args.service_id.clone().unwrap_or_else(|| name.clone())),
    );
    if let Some(vip) = &args.service_vip {
        let ip: Ipv4Addr = vip.parse().map_err(|_| {
            Error::InvalidEnvValue(format!("CNI_ARGS: NETD_SERVICE_VIP={vip} is not IPv4"))
        })?;
        svc.insert("vip".into(), Value::String(ip.to_string()));
    }
    Ok(Some(Value::Object(svc)))
}

/// The endpoint's DNS name: the pod/container name the runtime gives (`K8S_POD_NAME`, which
/// podman sets to the container name) when netd accepts it, else the short container ID.
pub fn endpoint_name(container_id: &str, args: &CniArgs) -> String {
    if let Some(n) = args.pod_name.as_deref().filter(|n| valid_netd_name(n)) {
        return n.to_string();
    }
    container_id.chars().take(12).collect()
}

/// The netd endpoint id of an attachment: `<containerID>-<ifname>` when that is a valid netd
/// id (at most 64 characters), else a readable prefix of the container ID, a hash of the
/// whole pair, and the interface: runtime IDs are often 64 hex digits.
pub fn endpoint_id(container_id: &str, ifname: &str) -> String {
    let plain = format!("{container_id}-{ifname}");
    if valid_netd_name(&plain) {
        return plain;
    }
    let ifname_clean: String = ifname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let suffix = format!(
        "-{:016x}-{ifname_clean}",
        fnv1a64(&[container_id.as_bytes(), b"\0", ifname.as_bytes()])
    );
    let room = 64usize.saturating_sub(suffix.len());
    let prefix: String = container_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(room)
        .collect();
    let prefix = if prefix.is_empty() || prefix.starts_with(['-', '.']) {
        format!("c{}", &prefix[..prefix.len().min(room.saturating_sub(1))])
    } else {
        prefix
    };
    format!("{prefix}{suffix}")
}

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netconf(v: Value) -> NetConf {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn minimal_config() {
        let c = PluginConf::from_netconf(&netconf(serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "netd", "network": "web"
        })))
        .unwrap();
        assert_eq!(c.network, "web");
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(c.ips.is_empty() && c.mac.is_none() && c.service.is_none());
    }

    #[test]
    fn bad_configs_are_code_7() {
        for v in [
            serde_json::json!({"name": "n", "type": "netd"}),
            serde_json::json!({"name": "n", "type": "netd", "network": 5}),
            serde_json::json!({"name": "n", "type": "netd", "network": "a/b"}),
            serde_json::json!({"name": "n", "type": "netd", "network": "w", "socket": "rel"}),
            serde_json::json!({"name": "n", "type": "netd", "network": "w", "aliases": "x"}),
            serde_json::json!({"name": "n", "type": "netd", "network": "w",
                               "args": {"netd": {"service": "x"}}}),
        ] {
            let e = PluginConf::from_netconf(&netconf(v.clone())).unwrap_err();
            assert_eq!(u32::from(&e), 7, "{v}: {e}");
        }
    }

    #[test]
    fn runtime_config_and_args() {
        let c = PluginConf::from_netconf(&netconf(serde_json::json!({
            "name": "podnet", "type": "netd", "network": "web",
            "runtimeConfig": {"ips": ["10.1.0.9/24"], "mac": "02:AA:00:00:00:01",
                              "aliases": {"podnet": ["abc123"], "other": ["x"]}},
            "args": {"netd": {"service": {"name": "api", "id": "s1"}, "labels": {"team": "a"}}}
        })))
        .unwrap();
        let args = CniArgs::parse(Some("IgnoreUnknown=1;IP=10.1.0.7;K8S_POD_NAME=web1")).unwrap();
        assert_eq!(
            requested_ip(&c, &args).unwrap(),
            Some(Ipv4Addr::new(10, 1, 0, 9))
        );
        assert_eq!(
            requested_mac(&c, &args).as_deref(),
            Some("02:aa:00:00:00:01")
        );
        assert_eq!(c.runtime_aliases, ["abc123"]);
        assert_eq!(c.labels["team"], "a");
        assert_eq!(
            requested_service(&c, &args).unwrap().unwrap()["name"],
            "api"
        );
        assert_eq!(endpoint_name("0123456789abcdef", &args), "web1");
    }

    #[test]
    fn cni_args_rules() {
        assert_eq!(
            u32::from(&CniArgs::parse(Some("FOO=1")).unwrap_err()),
            2,
            "unknown key"
        );
        assert!(CniArgs::parse(Some("FOO=1;IgnoreUnknown=true")).is_ok());
        assert_eq!(u32::from(&CniArgs::parse(Some("garbage")).unwrap_err()), 4);
        let a = CniArgs::parse(Some("NETD_SERVICE=api;NETD_SERVICE_VIP=10.9.0.2")).unwrap();
        let c = PluginConf::from_netconf(&netconf(
            serde_json::json!({"name": "n", "type": "netd", "network": "w"}),
        ))
        .unwrap();
        let svc = requested_service(&c, &a).unwrap().unwrap();
        assert_eq!(
            svc,
            serde_json::json!({"name": "api", "id": "api", "vip": "10.9.0.2"})
        );
        let v6 = CniArgs::parse(Some("IP=fd00::1")).unwrap();
        assert_eq!(u32::from(&requested_ip(&c, &v6).unwrap_err()), 7);
        let two = CniArgs::parse(Some("IP=10.0.0.2,10.0.0.3")).unwrap();
        assert!(requested_ip(&c, &two).is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(endpoint_id("abc", "eth0"), "abc-eth0");
        let long = "f".repeat(64);
        let id = endpoint_id(&long, "eth0");
        assert!(valid_netd_name(&id), "{id}");
        assert_eq!(id.len(), 64);
        assert!(id.ends_with("-eth0"));
        assert_ne!(id, endpoint_id(&long, "eth1"));
        let mut other = long.clone();
        other.replace_range(63.., "e");
        assert_ne!(id, endpoint_id(&other, "eth0"), "same prefix, other id");
        assert_eq!(id, endpoint_id(&long, "eth0"), "deterministic");
        assert!(valid_netd_name(&endpoint_id("x", "et@h0")));
    }
}
