//! The shared query layer of `netd inspect`: netd's desired state through the API when the
//! daemon answers, the node's configuration for what the kernel side needs (node name, pin
//! directory), and the rule that a view never fails just because the daemon is down.

use crate::api::diag::ServiceView;
use crate::api::types::{EndpointView, NetworkView, NodeView, RemoteEndpointView};
use crate::client;
use crate::config::Config;
use crate::state::DesiredState;
use anyhow::{bail, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";

/// What `netd inspect` can reach.
pub struct Ctx {
    pub socket: PathBuf,
    pub cfg: Option<Config>,
    /// `GET /v1/node` when the daemon answered; else why not.
    pub node: Result<NodeView, String>,
}

impl Ctx {
    /// `socket`: given, else the config's `api_socket`, else the default. The config is
    /// optional (read when present: it names the node and the LB pin directory).
    pub fn open(socket: Option<&Path>, config: &Path) -> Ctx {
        let cfg = Config::load(config).ok();
        let socket = socket
            .map(Path::to_path_buf)
            .or_else(|| cfg.as_ref().map(|c| c.api_socket.clone()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let node = client::get_json(&socket, "/v1/node")
            .and_then(|v| Ok(serde_json::from_value::<NodeView>(v)?))
            .map_err(|e| format!("{e:#}"));
        Ctx { socket, cfg, node }
    }

    pub fn daemon_up(&self) -> bool {
        self.node.is_ok()
    }

    /// `available`, or `unavailable: <why>`: every view carries it.
    pub fn desired_state(&self) -> String {
        match &self.node {
            Ok(_) => "available".into(),
            Err(e) => format!("unavailable: netd does not answer ({e}); showing the kernel only"),
        }
    }

    /// The problem every view reports while the daemon is down.
    pub fn daemon_problem(&self) -> Option<String> {
        self.node.as_ref().err().map(|e| {
            format!("netd is not running or not answering ({e}): desired state unavailable")
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        if let Err(e) = &self.node {
            bail!("netd is not answering: {e}");
        }
        let v = client::get_json(&self.socket, path)?;
        Ok(serde_json::from_value(v)?)
    }

    /// `GET path`, None on 404.
    pub fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let (status, body) = client::request(&self.socket, "GET", path, None)?;
        match status {
            200 => Ok(Some(serde_json::from_str(&body)?)),
            404 => Ok(None),
            _ => bail!("GET {path}: HTTP {status}: {body}"),
        }
    }

    pub fn node_name(&self) -> Option<String> {
        match (&self.node, &self.cfg) {
            (Ok(n), _) => Some(n.node.clone()),
            (_, Some(c)) => Some(c.node_name.clone()),
            _ => None,
        }
    }

    /// Sandbox namespace of a VNI on this node.
    pub fn sandbox_name(&self, vni: u32) -> Option<String> {
        self.node_name().map(|n| format!("nd-{n}-{vni}"))
    }

    /// `ebpf`, `nftables`, `ipvs` or `none`.
    pub fn lb_backend(&self) -> String {
        match (&self.node, &self.cfg) {
            (Ok(n), _) => n.lb_backend.clone(),
            (_, Some(c)) => crate::lb::kind_name(crate::lb::backend_kind(c)).into(),
            _ => "unknown".into(),
        }
    }

    pub fn lb_pin_dir(&self) -> Option<PathBuf> {
        match (&self.node, &self.cfg) {
            (Ok(n), _) => n.lb_pin_dir.as_ref().map(PathBuf::from),
            (_, Some(c)) => Some(crate::lb::pin_dir(c)),
            _ => None,
        }
    }

    /// The state file netd persisted last (daemon down: names → VNIs and VIPs only; it is
    /// what netd was asked for, not what it holds now).
    pub fn persisted(&self) -> Option<DesiredState> {
        let dir = &self.cfg.as_ref()?.state_dir;
        let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn network(&self, name: &str) -> Result<Option<NetworkView>> {
        self.get_opt(&format!("/v1/networks/{name}"))
    }
    pub fn networks(&self) -> Result<Vec<NetworkView>> {
        self.get("/v1/networks")
    }
    pub fn endpoints(&self) -> Result<Vec<EndpointView>> {
        self.get("/v1/endpoints")
    }
    pub fn remote_endpoints(&self) -> Result<Vec<RemoteEndpointView>> {
        self.get("/v1/remote-endpoints")
    }
    pub fn services(&self) -> Result<Vec<ServiceView>> {
        self.get("/v1/services")
    }
}

/// Percent-encodes a query parameter value.
pub fn qenc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
