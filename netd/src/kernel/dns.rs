//! The kernel side of the embedded DNS in a container namespace: the resolver's sockets live in
//! the container (bound to 127.0.0.11 on a random port, served by netd's one process), and an
//! nftables DNAT sends 127.0.0.11:53 there, as Docker does. So a process in the container may
//! still bind port 53 itself (even 0.0.0.0:53) without breaking either side.

use super::cmd::{with_stdin, Ns};
use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
pub const TABLE: &str = "netd_dns";

pub fn ruleset(port: u16) -> String {
    format!(
        "table ip {TABLE} {{}}
flush table ip {TABLE}
table ip {TABLE} {{
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr {RESOLVER} udp dport 53 dnat to {RESOLVER}:{port}
    ip daddr {RESOLVER} tcp dport 53 dnat to {RESOLVER}:{port}
  }}
}}
"
    )
}

/// Binds the resolver's UDP socket and TCP listener inside `netns` (on a short-lived thread that
/// enters the namespace, so no other thread ever changes namespace) and points port 53 at them.
pub fn listen_in(netns: &Path) -> Result<(UdpSocket, TcpListener)> {
    let ns = Ns::path(netns);
    // 127.0.0.11 is local only while lo is up: the attachment (link::configure_container_side)
    // brings lo up before this runs.
    let path: PathBuf = netns.to_path_buf();
    let (udp, tcp) = std::thread::spawn(move || -> Result<(UdpSocket, TcpListener)> {
        let f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: setns on this thread only; the thread exits right after binding.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns into container");
        }
        for _ in 0..16 {
            let udp = UdpSocket::bind(SocketAddr::new(RESOLVER.into(), 0))?;
            let port = udp.local_addr()?.port();
            if let Ok(tcp) = TcpListener::bind(SocketAddr::new(RESOLVER.into(), port)) {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok((udp, tcp));
            }
        }
        anyhow::bail!("no port free for both UDP and TCP on {RESOLVER}")
    })
    .join()
    .map_err(|_| anyhow::anyhow!("resolver bind thread panicked"))??;
    let port = udp.local_addr()?.port();
    with_stdin(&ns, "nft", &["-f", "-"], &ruleset(port)).context("DNS redirect rules")?;
    Ok((udp, tcp))
}
