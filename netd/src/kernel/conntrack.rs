//! Connection-tracking entries (conntrack-tools' `conntrack`, ctnetlink underneath).
//!
//! The nftables LB keeps a UDP flow on its backend through conntrack; when that backend is
//! removed the entry would keep sending the flow into a black hole until it times out (30 s
//! to 120 s, refreshed by every packet). Deleting it makes the next packet a new flow, which
//! the service's DNAT rule sends to a backend that exists.

use super::cmd::{run, Ns};
use anyhow::Result;
use std::net::Ipv4Addr;

/// Deletes the UDP flows to `vip:port` that were translated to `backend` in `ns`.
pub fn forget_udp_flows(ns: &Ns, vip: Ipv4Addr, port: u16, backend: Ipv4Addr) -> Result<()> {
    let (vip, port, backend) = (vip.to_string(), port.to_string(), backend.to_string());
    let args = [
        "-D",
        "-p",
        "udp",
        "--orig-dst",
        &vip,
        "--orig-port-dst",
        &port,
        "--reply-src",
        &backend,
    ];
    match run(ns, "conntrack", &args) {
        Ok(_) => Ok(()),
        // conntrack exits 1 when nothing matched: nothing to forget is success.
        Err(e) if e.to_string().contains("0 flow entries have been deleted") => Ok(()),
        Err(e) => Err(e),
    }
}
