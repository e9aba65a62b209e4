//! `netd run --config netd.toml`: node identity, addresses, paths.

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Unique name of this node in the cluster.
    pub node_name: String,
    /// Underlay address of this node: the VTEP and the gossip address.
    pub advertise_addr: Ipv4Addr,
    /// VXLAN data-path UDP port.
    #[serde(default = "default_data_port")]
    pub data_port: u16,
    /// Gossip bind address (default `<advertise_addr>:7946`).
    #[serde(default)]
    pub gossip_bind: Option<SocketAddr>,
    /// Gossip seed peers (`ip:port`).
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Cluster gossip keys, primary first (1 to 3). Overridden by keys set through the API.
    pub gossip_keys: Vec<String>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_api_socket")]
    pub api_socket: PathBuf,
    /// Group allowed to use the API socket (mode 0660); without it the socket is 0600.
    #[serde(default)]
    pub api_group: Option<String>,
    /// Subnet of the node-local egress bridge (`netd_gw`).
    #[serde(default = "default_gw_subnet")]
    pub gwbridge_subnet: Ipv4Net,
    /// Full reconcile (drift repair) period.
    #[serde(default = "default_reconcile_ms")]
    pub reconcile_interval_ms: u64,
    /// Gossip round period.
    #[serde(default = "default_gossip_ms")]
    pub gossip_interval_ms: u64,
    /// After a start, remote entries already in the kernel are kept (not removed) for this long,
    /// so that a restart does not flap the data path while gossip catches up.
    #[serde(default = "default_sync_grace_ms")]
    pub startup_sync_grace_ms: u64,
    /// Upstream resolvers for names netd does not own (`ip` or `ip:port`); default: the
    /// `nameserver` lines of `dns_resolv_conf`.
    #[serde(default)]
    pub dns_upstreams: Vec<String>,
    #[serde(default = "default_resolv_conf")]
    pub dns_resolv_conf: PathBuf,
    /// Forwarded queries in flight at most; beyond it queries are dropped.
    #[serde(default = "default_dns_inflight")]
    pub dns_max_inflight: usize,
    #[serde(default = "default_dns_timeout_ms")]
    pub dns_upstream_timeout_ms: u64,
    /// TTL of the records netd answers itself.
    #[serde(default = "default_dns_ttl")]
    pub dns_ttl: u32,
    /// Service VIP load balancer: `ebpf`, `nftables`, `ipvs` or `none`; default `ebpf` when
    /// `lb_cgroup` is set, else `none` (see `crate::lb`).
    #[serde(default)]
    pub lb_backend: Option<crate::lb::LbBackendKind>,
    /// cgroup v2 (below the root) the containers' processes run in, for the eBPF socket LB;
    /// `{node}` stands for `node_name`. Created if missing.
    #[serde(default)]
    pub lb_cgroup: Option<PathBuf>,
    /// bpffs directory for the LB's pinned maps and links; default `/sys/fs/bpf/netd-{node}`.
    #[serde(default)]
    pub lb_pin_dir: Option<PathBuf>,
    /// Frontends (VIP, port, protocol) the eBPF maps hold; each costs 4 KiB of kernel memory
    /// for its Maglev table. 64-32768.
    #[serde(default = "default_lb_max_services")]
    pub lb_max_services: u32,
    /// How long a service whose last task was deleted keeps its VIP (refusing connections, as
    /// with all tasks drained) before the VIP is forgotten.
    #[serde(default = "default_lb_linger_ms")]
    pub lb_service_linger_ms: u64,
}

fn default_data_port() -> u16 {
    4789
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/netd")
}
fn default_api_socket() -> PathBuf {
    PathBuf::from("/run/netd/netd.sock")
}
fn default_gw_subnet() -> Ipv4Net {
    "172.18.0.0/16".parse().expect("valid default")
}
fn default_reconcile_ms() -> u64 {
    5000
}
fn default_gossip_ms() -> u64 {
    200
}
fn default_sync_grace_ms() -> u64 {
    5000
}

fn default_lb_max_services() -> u32 {
    8192
}
fn default_lb_linger_ms() -> u64 {
    600_000
}

fn default_resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}
fn default_dns_inflight() -> usize {
    1024
}
fn default_dns_timeout_ms() -> u64 {
    1500
}
fn default_dns_ttl() -> u32 {
    5
}

pub const GOSSIP_PORT: u16 = 7946;

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.node_name.is_empty()
            || self.node_name.len() > 40
            || !self
                .node_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("node_name: must be 1-40 characters of [A-Za-z0-9_-]");
        }
        if !(1024..=49151).contains(&self.data_port) {
            bail!("data_port: {} is outside 1024-49151", self.data_port);
        }
        if self.gossip_keys.is_empty() || self.gossip_keys.len() > 3 {
            bail!("gossip_keys: give 1 to 3 keys (primary first)");
        }
        if self.gossip_keys.iter().any(|k| k.len() < 8) {
            bail!("gossip_keys: each key must be at least 8 characters");
        }
        self.dns_upstreams()?;
        if self.gwbridge_subnet.prefix_len() > 28 {
            bail!("gwbridge_subnet: prefix must be /28 or larger");
        }
        crate::lb::validate_config(self)?;
        Ok(())
    }

    /// Upstream resolvers: configured ones, or the resolv.conf's.
    pub fn dns_upstreams(&self) -> Result<Vec<SocketAddr>> {
        if self.dns_upstreams.is_empty() {
            let text = std::fs::read_to_string(&self.dns_resolv_conf).unwrap_or_default();
            return Ok(crate::dns::forward::parse_resolv_conf(&text));
        }
        self.dns_upstreams
            .iter()
            .map(|u| {
                u.parse::<SocketAddr>()
                    .or_else(|_| {
                        u.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        anyhow::anyhow!("dns_upstreams: {u:?} is not an address (ip or ip:port)")
                    })
            })
            .collect()
    }

    pub fn gossip_bind(&self) -> SocketAddr {
        self.gossip_bind
            .unwrap_or_else(|| SocketAddr::new(self.advertise_addr.into(), GOSSIP_PORT))
    }

    /// Name of the sandbox namespace for a network (global under /run/netns, so node-qualified).
    pub fn sandbox_name(&self, vni: u32) -> String {
        format!("nd-{}-{}", self.node_name, vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> String {
        "node_name = \"n1\"\nadvertise_addr = \"10.9.0.1\"\ngossip_keys = [\"secret-key\"]\n"
            .to_string()
    }

    #[test]
    fn defaults_apply() {
        let c: Config = toml::from_str(&base()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.data_port, 4789);
        assert_eq!(c.gossip_bind().to_string(), "10.9.0.1:7946");
        assert_eq!(c.api_socket, PathBuf::from("/run/netd/netd.sock"));
        assert_eq!(c.sandbox_name(4097), "nd-n1-4097");
    }

    #[test]
    fn data_port_range_enforced() {
        let c: Config = toml::from_str(&(base() + "data_port = 80\n")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("data_port"), "{e}");
    }

    #[test]
    fn unknown_option_is_an_error() {
        let e = toml::from_str::<Config>(&(base() + "dataport = 4790\n")).unwrap_err();
        assert!(e.to_string().contains("dataport"), "{e}");
    }
}
