//! Egress for non-internal networks: a node-local gateway bridge (`netd_gw`, Docker's
//! docker_gwbridge) with masquerade by nftables, and per-container legs on it.

use super::cmd::{run, with_stdin, Ns};
use anyhow::{Context, Result};
use ipnet::Ipv4Net;

pub const BRIDGE: &str = "netd_gw";
pub const TABLE: &str = "netd";

/// The nftables ruleset: masquerade what leaves the gateway bridge's subnet towards anything but
/// the bridge; containers' legs may not talk to each other through the node either.
pub fn ruleset(subnet: &Ipv4Net) -> String {
    format!(
        "table ip {TABLE} {{}}
flush table ip {TABLE}
table ip {TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != \"{BRIDGE}\" masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{BRIDGE}\" oifname \"{BRIDGE}\" drop
  }}
}}
"
    )
}

pub fn table_present() -> bool {
    run(&Ns::Node, "nft", &["list", "table", "ip", TABLE]).is_ok()
}

/// Loads the ruleset atomically (one nft transaction).
pub fn apply_ruleset(subnet: &Ipv4Net) -> Result<()> {
    with_stdin(&Ns::Node, "nft", &["-f", "-"], &ruleset(subnet))
}

/// Routing between the container legs and the underlay.
pub fn enable_forwarding() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling net.ipv4.ip_forward")
}
