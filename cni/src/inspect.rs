//! Reads a network namespace's links, IPv4 addresses and IPv4 routes without spawning a
//! process: a helper thread joins the namespace (`setns`), then `getifaddrs` and
//! `/proc/thread-self/net/route` describe what that thread sees.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    /// Lowercase `aa:bb:...`, when the link has a hardware address.
    pub mac: Option<String>,
    /// Addresses with their prefix length.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub dev: String,
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gw: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default)]
pub struct NetnsState {
    pub links: Vec<Link>,
    /// Main routing table.
    pub routes: Vec<Route4>,
}

impl NetnsState {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// Inspects the namespace at `path` (e.g. `/run/netns/x`, `/proc/PID/ns/net`).
pub fn inspect(path: &Path) -> io::Result<NetnsState> {
    let ns = File::open(path)?;
    std::thread::spawn(move || -> io::Result<NetnsState> {
        // SAFETY: setns(2) on this helper thread only, with a namespace fd we keep open
        // for the duration of the call.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let links = links()?;
        let routes = parse_routes(&std::fs::read_to_string("/proc/thread-self/net/route")?);
        Ok(NetnsState { links, routes })
    })
    .join()
    .map_err(|_| io::Error::other("namespace inspection thread failed"))?
}

fn links() -> io::Result<Vec<Link>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out: Vec<Link> = vec![];
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let idx = match out.iter().position(|l| l.name == name) {
            Some(i) => i,
            None => {
                out.push(Link {
                    name,
                    ..Link::default()
                });
                out.len() - 1
            }
        };
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: AF_INET entries hold sockaddr_in (address and, if set, netmask).
            let addr = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            let prefix = if ifa.ifa_netmask.is_null() {
                32
            } else {
                // SAFETY: as above, for the netmask.
                let mask = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                u32::from_be(mask.sin_addr.s_addr).count_ones() as u8
            };
            out[idx].ipv4.push((ip, prefix));
        } else if family == libc::AF_PACKET {
            // SAFETY: AF_PACKET entries hold sockaddr_ll with the hardware address.
            let ll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
            let len = usize::from(ll.sll_halen).min(ll.sll_addr.len());
            if len > 0 {
                let mac = ll.sll_addr[..len]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                out[idx].mac = Some(mac);
            }
        }
    }
    // SAFETY: frees the list getifaddrs allocated; no reference into it survives.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, the
/// addresses as host-order hex of the network-order bytes.
fn parse_routes(text: &str) -> Vec<Route4> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| v.to_ne_bytes());
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let dst = Ipv4Addr::from(hex(f[1])?);
            let gw = Ipv4Addr::from(hex(f[2])?);
            let mask = u32::from_be_bytes(hex(f[7])?);
            Some(Route4 {
                dev: f[0].to_string(),
                dst,
                prefix: mask.count_ones() as u8,
                gw: (!gw.is_unspecified()).then_some(gw),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_route() {
        // Little-endian host: 10.1.0.0/24 on eth0, default via 172.18.0.1 on netdgw0.
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    netdgw0\t00000000\t010012AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0000010A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            let r = parse_routes(text);
            assert_eq!(
                r[0],
                Route4 {
                    dev: "netdgw0".into(),
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gw: Some(Ipv4Addr::new(172, 18, 0, 1)),
                }
            );
            assert_eq!(r[1].dst, Ipv4Addr::new(10, 1, 0, 0));
            assert_eq!(r[1].prefix, 24);
            assert_eq!(r[1].gw, None);
        }
    }

    #[test]
    fn inspects_own_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // setns needs CAP_SYS_ADMIN
        }
        let st = inspect(Path::new("/proc/self/ns/net")).unwrap();
        let lo = st.link("lo").expect("lo");
        assert!(lo.ipv4.is_empty() || lo.ipv4.contains(&(Ipv4Addr::LOCALHOST, 8)));
    }
}
