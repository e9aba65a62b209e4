//! Port reservations: netd holds a socket bound to every port published on this node, so a
//! local process cannot bind it (and is refused with EADDRINUSE). Published traffic is DNATed
//! before socket lookup, so these sockets never see it; a TCP socket that is bound but not
//! listening answers stray connections with a reset.
//!
//! Also: who holds a port (the service, or the pid and command of a host process, found
//! through /proc), and the automatic assignment from [`AUTO_RANGE`].

use super::model::Published;
use crate::lb::model::Proto;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// Ports assigned when a port is published without a number, as Docker does.
pub const AUTO_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Sockets held per published port (one netd per process).
static HELD: Mutex<BTreeMap<Published, OwnedFd>> = Mutex::new(BTreeMap::new());

/// Binds `0.0.0.0:port` for `proto` without listening.
pub fn bind(p: Published) -> io::Result<OwnedFd> {
    match p.proto {
        Proto::Udp => {
            let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p.port))?;
            Ok(OwnedFd::from(s))
        }
        Proto::Tcp => {
            // SAFETY: plain socket(2); the fd is owned at once.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: p.port.to_be(),
                sin_addr: libc::in_addr { s_addr: 0 },
                sin_zero: [0; 8],
            };
            // SAFETY: addr is a valid sockaddr_in of the size passed.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(fd)
        }
    }
}

pub fn is_held(p: Published) -> bool {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&p)
}

/// Holds exactly `want`; returns the ports that could not be bound, with their holder.
pub fn hold(want: &BTreeSet<Published>) -> Vec<(Published, String)> {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.retain(|p, _| want.contains(p));
    let mut failed = Vec::new();
    for p in want {
        if held.contains_key(p) {
            continue;
        }
        match bind(*p) {
            Ok(fd) => {
                held.insert(*p, fd);
            }
            Err(e) => failed.push((*p, holder(*p).unwrap_or_else(|| e.to_string()))),
        }
    }
    failed
}

/// Whether a process on this node (not netd's reservation) holds the port: `Some(holder)`.
pub fn host_holder(p: Published) -> Option<String> {
    if is_held(p) {
        return None;
    }
    match bind(p) {
        Ok(_) => None,
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            Some(holder(p).unwrap_or_else(|| "an unidentified socket".into()))
        }
        Err(e) => Some(format!("an error binding it ({e})")),
    }
}

/// `pid N (comm)` of the processes with a socket bound to the port in this namespace.
pub fn holder(p: Published) -> Option<String> {
    let table = match p.proto {
        Proto::Tcp => "/proc/net/tcp",
        Proto::Udp => "/proc/net/udp",
    };
    let inodes = socket_inodes(&std::fs::read_to_string(table).ok()?, p.port);
    if inodes.is_empty() {
        return None;
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().map(str::to_owned))
                .and_then(|l| {
                    l.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|ino| inodes.contains(&ino))
        });
        if owns {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push(format!("pid {pid} ({})", comm.trim()));
        }
    }
    if found.is_empty() {
        None
    } else {
        Some(found.join(", "))
    }
}

/// Inodes of the sockets in a /proc/net/{tcp,udp} table bound to local `port`.
fn socket_inodes(table: &str, port: u16) -> BTreeSet<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            (local_port == port && inode != 0).then_some(inode)
        })
        .collect()
}

/// A port for a service that published `target_port` without a number: the same on every
/// node for the same service and port when free (the search starts at a hash of both), the
/// next free one otherwise.
pub fn auto_assign(
    service_id: &str,
    target_port: u16,
    proto: Proto,
    taken: impl Fn(Published) -> bool,
) -> Option<u16> {
    let span = (*AUTO_RANGE.end() - *AUTO_RANGE.start()) as u64 + 1;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in service_id
        .bytes()
        .chain(target_port.to_be_bytes())
        .chain([proto.number()])
    {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (0..span)
        .map(|i| AUTO_RANGE.start() + ((h + i) % span) as u16)
        .find(|&port| !taken(Published { proto, port }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_table_parsing() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(socket_inodes(t, 8080), BTreeSet::from([4242]));
        assert_eq!(socket_inodes(t, 80), BTreeSet::from([77]));
        assert!(socket_inodes(t, 81).is_empty());
    }

    #[test]
    fn auto_assign_is_stable_and_skips_taken_ports() {
        let a = auto_assign("svc1", 80, Proto::Tcp, |_| false).unwrap();
        assert!(AUTO_RANGE.contains(&a));
        assert_eq!(auto_assign("svc1", 80, Proto::Tcp, |_| false), Some(a));
        let b = auto_assign("svc1", 80, Proto::Tcp, |p| p.port == a).unwrap();
        assert_ne!(a, b);
        assert!(AUTO_RANGE.contains(&b));
        assert_eq!(auto_assign("svc1", 80, Proto::Tcp, |_| true), None);
    }

    #[test]
    fn a_reserved_port_cannot_be_bound_by_others() {
        // Port 0 would pick a random one; find a free one by binding and releasing.
        let probe = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let p = Published {
            proto: Proto::Tcp,
            port,
        };
        let fd = bind(p).unwrap();
        let e = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
        drop(fd);
        // A listening host process is named by pid and command.
        let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        let who = host_holder(p).expect("the listener holds the port");
        assert!(
            who.contains(&format!("pid {}", std::process::id())),
            "{who}"
        );
        drop(l);
        assert_eq!(host_holder(p), None);
    }
}
