//! IPVS (the kernel's layer-4 load balancer, `ip_vs`) through its generic-netlink family
//! "IPVS" (`linux/ip_vs.h`): virtual services, their destinations, timeouts. Typed values in,
//! typed values out; the attribute layouts live here only.
//!
//! IPVS state is per network namespace: an [`Ipvs`] acts on the namespace it was opened in.

use super::genl::{Family, Socket};
use super::netlink::{self, Attrs};
use anyhow::{anyhow, Context, Result};
use std::net::Ipv4Addr;

const GENL_NAME: &str = "IPVS";
const GENL_VERSION: u8 = 1;

const CMD_NEW_SERVICE: u8 = 1;
const CMD_DEL_SERVICE: u8 = 3;
const CMD_GET_SERVICE: u8 = 4;
const CMD_NEW_DEST: u8 = 5;
const CMD_SET_DEST: u8 = 6;
const CMD_DEL_DEST: u8 = 7;
const CMD_GET_DEST: u8 = 8;
const CMD_SET_CONFIG: u8 = 12;

const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;

const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;

const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;

const AF_INET: u16 = libc::AF_INET as u16;
/// `IP_VS_CONN_F_MASQ`: NAT to the destination (the only method that works across the overlay).
const FWD_MASQ: u32 = 0;
/// `IP_VS_SVC_F_SCHED1`/`SCHED2`: for `mh`, fallback (skip an unavailable destination to the
/// next in the table) and port (hash the source port too).
pub const SVC_F_SCHED1: u32 = 0x0008;
pub const SVC_F_SCHED2: u32 = 0x0010;

/// The largest IPVS timeout every kernel accepts: `INT_MAX / HZ` seconds with HZ ≤ 1000.
pub const MAX_TIMEOUT_SECS: u32 = 2_147_483;

/// A virtual service: address, port, protocol (6 TCP, 17 UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub protocol: u8,
}

/// A service as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub key: ServiceKey,
    pub scheduler: String,
    pub flags: u32,
}

/// A destination (real server) as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub masquerade: bool,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first four.
fn inet_addr(a: Ipv4Addr) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..4].copy_from_slice(&a.octets());
    v
}

fn parse_addr(v: Option<&&[u8]>) -> Option<Ipv4Addr> {
    let v = v?.get(0..4)?;
    Some(Ipv4Addr::new(v[0], v[1], v[2], v[3]))
}

/// The nested service attribute: the key alone (to name a service), or with scheduler and
/// flags (to create one).
pub fn service_attrs(key: &ServiceKey, sched: Option<(&str, u32)>) -> Attrs {
    let mut a = Attrs::new();
    a.u16(SVC_ATTR_AF, AF_INET)
        .u16(SVC_ATTR_PROTOCOL, key.protocol.into())
        .bytes(SVC_ATTR_ADDR, &inet_addr(key.addr))
        .be16(SVC_ATTR_PORT, key.port);
    if let Some((name, flags)) = sched {
        // struct ip_vs_flags { flags, mask }: set exactly these.
        let mut f = flags.to_ne_bytes().to_vec();
        f.extend_from_slice(&u32::MAX.to_ne_bytes());
        a.string(SVC_ATTR_SCHED_NAME, name)
            .bytes(SVC_ATTR_FLAGS, &f)
            .u32(SVC_ATTR_TIMEOUT, 0)
            .u32(SVC_ATTR_NETMASK, u32::MAX);
    }
    a
}

/// The nested destination attribute (a full entry: NAT, `weight`, no thresholds).
pub fn dest_attrs(addr: Ipv4Addr, port: u16, weight: u32) -> Attrs {
    let mut a = Attrs::new();
    a.bytes(DEST_ATTR_ADDR, &inet_addr(addr))
        .be16(DEST_ATTR_PORT, port)
        .u32(DEST_ATTR_FWD_METHOD, FWD_MASQ)
        .u32(DEST_ATTR_WEIGHT, weight)
        .u32(DEST_ATTR_U_THRESH, 0)
        .u32(DEST_ATTR_L_THRESH, 0)
        .u16(DEST_ATTR_ADDR_FAMILY, AF_INET);
    a
}

/// A service from a `GET_SERVICE` dump message (None: not IPv4 address/port based).
pub fn parse_service(msg: &[u8]) -> Result<Option<ServiceInfo>> {
    let top = netlink::parse(msg)?;
    let svc = netlink::parse(
        top.get(&CMD_ATTR_SERVICE)
            .ok_or_else(|| anyhow!("IPVS: service message without a service"))?,
    )?;
    if netlink::get_u16(&svc, SVC_ATTR_AF) != Some(AF_INET) {
        return Ok(None);
    }
    let (Some(addr), Some(port), Some(protocol)) = (
        parse_addr(svc.get(&SVC_ATTR_ADDR)),
        netlink::get_be16(&svc, SVC_ATTR_PORT),
        netlink::get_u16(&svc, SVC_ATTR_PROTOCOL),
    ) else {
        return Ok(None); // a firewall-mark service: not ours
    };
    Ok(Some(ServiceInfo {
        key: ServiceKey {
            addr,
            port,
            protocol: protocol as u8,
        },
        scheduler: netlink::get_string(&svc, SVC_ATTR_SCHED_NAME).unwrap_or_default(),
        flags: netlink::get_u32(&svc, SVC_ATTR_FLAGS).unwrap_or(0),
    }))
}

/// A destination from a `GET_DEST` dump message.
pub fn parse_dest(msg: &[u8]) -> Result<Option<Dest>> {
    let top = netlink::parse(msg)?;
    let d = netlink::parse(
        top.get(&CMD_ATTR_DEST)
            .ok_or_else(|| anyhow!("IPVS: destination message without a destination"))?,
    )?;
    if netlink::get_u16(&d, DEST_ATTR_ADDR_FAMILY).is_some_and(|af| af != AF_INET) {
        return Ok(None);
    }
    let (Some(addr), Some(port)) = (
        parse_addr(d.get(&DEST_ATTR_ADDR)),
        netlink::get_be16(&d, DEST_ATTR_PORT),
    ) else {
        return Ok(None);
    };
    Ok(Some(Dest {
        addr,
        port,
        weight: netlink::get_u32(&d, DEST_ATTR_WEIGHT).unwrap_or(0),
        masquerade: netlink::get_u32(&d, DEST_ATTR_FWD_METHOD).map(|m| m & 7) == Some(FWD_MASQ),
        active_conns: netlink::get_u32(&d, DEST_ATTR_ACTIVE_CONNS).unwrap_or(0),
        inactive_conns: netlink::get_u32(&d, DEST_ATTR_INACT_CONNS).unwrap_or(0),
    }))
}

/// IPVS of one network namespace (the one the handle was opened in).
pub struct Ipvs {
    sock: Socket,
    family: Family,
}

impl Ipvs {
    /// Opens IPVS in the calling thread's namespace; fails when the kernel has no IPVS.
    pub fn open() -> Result<Ipvs> {
        let mut sock = Socket::open()?;
        let family = sock
            .family(GENL_NAME, GENL_VERSION)
            .context("IPVS (ip_vs module)")?;
        Ok(Ipvs { sock, family })
    }

    fn svc(key: &ServiceKey) -> String {
        let p = match key.protocol {
            6 => "tcp",
            17 => "udp",
            _ => "proto?",
        };
        format!("{}:{}/{p}", key.addr, key.port)
    }

    pub fn new_service(&mut self, key: &ServiceKey, scheduler: &str, flags: u32) -> Result<()> {
        let mut a = Attrs::new();
        a.nested(
            CMD_ATTR_SERVICE,
            &service_attrs(key, Some((scheduler, flags))),
        );
        self.sock
            .request(self.family, CMD_NEW_SERVICE, &a)
            .with_context(|| format!("IPVS: adding service {} ({scheduler})", Self::svc(key)))
    }

    pub fn del_service(&mut self, key: &ServiceKey) -> Result<()> {
        let mut a = Attrs::new();
        a.nested(CMD_ATTR_SERVICE, &service_attrs(key, None));
        self.sock
            .request(self.family, CMD_DEL_SERVICE, &a)
            .with_context(|| format!("IPVS: deleting service {}", Self::svc(key)))
    }

    pub fn services(&mut self) -> Result<Vec<ServiceInfo>> {
        let mut out = Vec::new();
        self.sock
            .dump(self.family, CMD_GET_SERVICE, &Attrs::new(), |m| {
                out.extend(parse_service(m)?);
                Ok(())
            })
            .context("IPVS: listing services")?;
        Ok(out)
    }

    fn dest_cmd(
        &mut self,
        cmd: u8,
        key: &ServiceKey,
        addr: Ipv4Addr,
        port: u16,
        weight: u32,
    ) -> Result<()> {
        let mut a = Attrs::new();
        a.nested(CMD_ATTR_SERVICE, &service_attrs(key, None))
            .nested(CMD_ATTR_DEST, &dest_attrs(addr, port, weight));
        self.sock.request(self.family, cmd, &a)
    }

    pub fn new_dest(
        &mut self,
        key: &ServiceKey,
        addr: Ipv4Addr,
        port: u16,
        weight: u32,
    ) -> Result<()> {
        self.dest_cmd(CMD_NEW_DEST, key, addr, port, weight)
            .with_context(|| format!("IPVS: adding {addr}:{port} to {}", Self::svc(key)))
    }

    pub fn set_dest(
        &mut self,
        key: &ServiceKey,
        addr: Ipv4Addr,
        port: u16,
        weight: u32,
    ) -> Result<()> {
        self.dest_cmd(CMD_SET_DEST, key, addr, port, weight)
            .with_context(|| {
                format!(
                    "IPVS: setting weight {weight} of {addr}:{port} in {}",
                    Self::svc(key)
                )
            })
    }

    pub fn del_dest(&mut self, key: &ServiceKey, addr: Ipv4Addr, port: u16) -> Result<()> {
        self.dest_cmd(CMD_DEL_DEST, key, addr, port, 0)
            .with_context(|| format!("IPVS: deleting {addr}:{port} from {}", Self::svc(key)))
    }

    pub fn dests(&mut self, key: &ServiceKey) -> Result<Vec<Dest>> {
        let mut a = Attrs::new();
        a.nested(CMD_ATTR_SERVICE, &service_attrs(key, None));
        let mut out = Vec::new();
        self.sock
            .dump(self.family, CMD_GET_DEST, &a, |m| {
                out.extend(parse_dest(m)?);
                Ok(())
            })
            .with_context(|| format!("IPVS: listing destinations of {}", Self::svc(key)))?;
        Ok(out)
    }

    /// Connection timeouts in seconds (0 leaves one unchanged).
    pub fn set_timeouts(&mut self, tcp: u32, tcp_fin: u32, udp: u32) -> Result<()> {
        let mut a = Attrs::new();
        a.u32(CMD_ATTR_TIMEOUT_TCP, tcp)
            .u32(CMD_ATTR_TIMEOUT_TCP_FIN, tcp_fin)
            .u32(CMD_ATTR_TIMEOUT_UDP, udp);
        self.sock
            .request(self.family, CMD_SET_CONFIG, &a)
            .with_context(|| {
                format!("IPVS: setting timeouts tcp {tcp} s, tcp_fin {tcp_fin} s, udp {udp} s")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServiceKey {
        ServiceKey {
            addr: Ipv4Addr::new(10, 1, 0, 250),
            port: 8080,
            protocol: 6,
        }
    }

    /// A dump message as the kernel sends it: the genl payload with a nested attribute.
    fn reply(kind: u16, inner: &Attrs) -> Vec<u8> {
        let mut a = Attrs::new();
        a.nested(kind, inner);
        a.as_bytes().to_vec()
    }

    #[test]
    fn service_round_trips() {
        let a = service_attrs(&key(), Some(("mh", SVC_F_SCHED1 | SVC_F_SCHED2)));
        let parsed = netlink::parse(a.as_bytes()).unwrap();
        assert_eq!(parsed[&SVC_ATTR_ADDR].len(), 16, "nf_inet_addr is 16 bytes");
        assert_eq!(
            parsed[&SVC_ATTR_FLAGS].len(),
            8,
            "ip_vs_flags: flags and mask"
        );
        let s = parse_service(&reply(CMD_ATTR_SERVICE, &a))
            .unwrap()
            .unwrap();
        assert_eq!(s.key, key());
        assert_eq!(s.scheduler, "mh");
        assert_eq!(s.flags, SVC_F_SCHED1 | SVC_F_SCHED2);
        // Naming a service sends the key only.
        let bare = service_attrs(&key(), None);
        let bare = netlink::parse(bare.as_bytes()).unwrap();
        assert!(!bare.contains_key(&SVC_ATTR_SCHED_NAME));
    }

    #[test]
    fn dest_round_trips_and_ipv6_is_skipped() {
        let mut d = dest_attrs(Ipv4Addr::new(10, 1, 0, 3), 8080, 1);
        d.u32(DEST_ATTR_ACTIVE_CONNS, 4)
            .u32(DEST_ATTR_INACT_CONNS, 2);
        let got = parse_dest(&reply(CMD_ATTR_DEST, &d)).unwrap().unwrap();
        assert_eq!(
            got,
            Dest {
                addr: Ipv4Addr::new(10, 1, 0, 3),
                port: 8080,
                weight: 1,
                masquerade: true,
                active_conns: 4,
                inactive_conns: 2,
            }
        );
        let mut v6 = Attrs::new();
        v6.u16(SVC_ATTR_AF, libc::AF_INET6 as u16);
        assert_eq!(parse_service(&reply(CMD_ATTR_SERVICE, &v6)).unwrap(), None);
        assert!(parse_service(&[]).is_err(), "a message without a service");
    }
}
