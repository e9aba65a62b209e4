//! Connection-tracking entries (conntrack-tools' `conntrack`, ctnetlink underneath).
//!
//! Load balancing through conntrack (the nftables VIP LB, published ports) keeps a UDP flow on
//! its backend; when that backend is removed the entry would keep sending the flow into a
//! black hole as long as the client keeps sending (every packet refreshes it). Deleting the
//! entry makes the next packet a new flow, which the rules send to a backend that exists.

use super::cmd::{run, Ns};
use anyhow::Result;
use std::net::Ipv4Addr;

/// Deletes the UDP flows to `vip:port` that were translated to `backend` in `ns`.
pub fn forget_udp_flows_via(ns: &Ns, vip: Ipv4Addr, port: u16, backend: Ipv4Addr) -> Result<()> {
    let (vip, port, backend) = (vip.to_string(), port.to_string(), backend.to_string());
    delete(
        ns,
        &[
            "--orig-dst",
            &vip,
            "--orig-port-dst",
            &port,
            "--reply-src",
            &backend,
        ],
    )
}

/// Deletes the UDP flows answered by `backend:port` in `ns`.
pub fn forget_udp_flows_to(ns: &Ns, backend: Ipv4Addr, port: u16) -> Result<()> {
    let (backend, port) = (backend.to_string(), port.to_string());
    delete(ns, &["--reply-src", &backend, "--reply-port-src", &port])
}

fn delete(ns: &Ns, filter: &[&str]) -> Result<()> {
    let mut args = vec!["-D", "-p", "udp"];
    args.extend_from_slice(filter);
    match run(ns, "conntrack", &args) {
        Ok(_) => Ok(()),
        // conntrack exits 1 when nothing matched: nothing to forget is success.
        Err(e) if e.to_string().contains("0 flow entries have been deleted") => Ok(()),
        Err(e) => Err(e),
    }
}
