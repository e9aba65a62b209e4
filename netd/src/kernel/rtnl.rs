//! Route netlink (`NETLINK_ROUTE`), the part netd reads in-process: dumps of the neighbor
//! table (`RTM_GETNEIGH`), for `AF_INET` neighbors (IP → MAC) and `AF_BRIDGE` forwarding
//! entries (the FDB a VXLAN device keeps: MAC → VTEP), of one device.
//!
//! Messages are an `ndmsg` (12 bytes: family, 3 padding, ifindex i32, state u16, flags u8,
//! type u8) and `NDA_*` attributes (`linux/neighbour.h`). The kernel filters a dump by device
//! when the socket asks for strict checking (Linux 4.20): for `AF_BRIDGE` from the request's
//! `ndm_ifindex` (`rtnl_fdb_dump`), for the other families from an `NDA_IFINDEX` attribute
//! (`neigh_dump_info`, which rejects a non-zero `ndm_ifindex` when strict). Replies are
//! filtered here by family and device all the same, for kernels that ignore the request's.

use super::netlink::{self, Attrs};
use anyhow::{bail, Result};

const RTM_GETNEIGH: u16 = 30;
const NDMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_IFINDEX: u16 = 8;

pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_BRIDGE: u8 = libc::AF_BRIDGE as u8;

/// `ndm_state` bits (`NUD_*`).
pub const NUD_NOARP: u16 = 0x40;
pub const NUD_PERMANENT: u16 = 0x80;
/// `ndm_flags` bits (`NTF_*`).
pub const NTF_PROXY: u8 = 0x08;
pub const NTF_EXT_LEARNED: u8 = 0x10;

/// One entry of a neighbor dump (an `RTM_NEWNEIGH` message), borrowing its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh<'a> {
    pub family: u8,
    pub ifindex: u32,
    pub state: u16,
    pub flags: u8,
    /// `NDA_DST`: the neighbor's IP, or for an FDB entry the remote VTEP.
    pub dst: Option<&'a [u8]>,
    /// `NDA_LLADDR`: the MAC (absent on an unresolved neighbor).
    pub lladdr: Option<&'a [u8]>,
}

/// The dump request of `family`'s entries on device `ifindex`: `ndmsg` and attributes.
pub fn neigh_dump_request(family: u8, ifindex: u32) -> ([u8; NDMSG_LEN], Attrs) {
    let mut ndm = [0u8; NDMSG_LEN];
    ndm[0] = family;
    let mut attrs = Attrs::new();
    if family == AF_BRIDGE {
        ndm[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    } else {
        attrs.u32(NDA_IFINDEX, ifindex);
    }
    (ndm, attrs)
}

/// Parses a reply message's payload; `None` unless it is a `family` entry on `ifindex`.
pub fn neigh_of(payload: &[u8], family: u8, ifindex: u32) -> Result<Option<Neigh<'_>>> {
    let Some(ndm) = payload.get(..NDMSG_LEN) else {
        bail!("route netlink: neighbor message of {} bytes", payload.len());
    };
    let mut n = Neigh {
        family: ndm[0],
        ifindex: u32::from_ne_bytes(ndm[4..8].try_into().expect("4 bytes")),
        state: u16::from_ne_bytes([ndm[8], ndm[9]]),
        flags: ndm[10],
        dst: None,
        lladdr: None,
    };
    if n.family != family || n.ifindex != ifindex {
        return Ok(None);
    }
    for a in netlink::attrs(&payload[netlink::align4(NDMSG_LEN)..]) {
        match a? {
            (NDA_DST, v) => n.dst = Some(v),
            (NDA_LLADDR, v) => n.lladdr = Some(v),
            _ => {}
        }
    }
    Ok(Some(n))
}

/// The index of device `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: if_nametoindex(3) with a valid NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no device {name}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

/// A `NETLINK_ROUTE` socket, bound to the namespace it was opened in.
pub struct Socket(netlink::Socket);

impl Socket {
    pub fn open() -> Result<Socket> {
        let s = netlink::Socket::open(libc::NETLINK_ROUTE)?;
        // Without strict checking (before 4.20) an AF_BRIDGE dump is of every device; the
        // replies are filtered in `neigh_of` either way.
        s.strict_dumps();
        Ok(Socket(s))
    }

    /// Dumps `family`'s neighbor entries on device `ifindex`, handing each to `each`.
    pub fn neighbors(
        &mut self,
        family: u8,
        ifindex: u32,
        mut each: impl FnMut(&Neigh<'_>),
    ) -> Result<()> {
        let (ndm, attrs) = neigh_dump_request(family, ifindex);
        self.0.dump(RTM_GETNEIGH, &ndm, &attrs, |p| {
            if let Some(n) = neigh_of(p, family, ifindex)? {
                each(&n);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    const VX: u32 = 7;

    /// An `RTM_NEWNEIGH` payload as the kernel builds it.
    pub fn newneigh(family: u8, ifindex: u32, state: u16, attrs: &Attrs) -> Vec<u8> {
        let mut p = vec![family, 0, 0, 0];
        p.extend_from_slice(&ifindex.to_ne_bytes());
        p.extend_from_slice(&state.to_ne_bytes());
        p.extend_from_slice(&[0x02, 1]); // NTF_SELF, RTN_UNICAST
        p.extend_from_slice(attrs.as_bytes());
        p
    }

    #[test]
    fn bridge_dump_names_the_device_in_the_header() {
        let (ndm, attrs) = neigh_dump_request(AF_BRIDGE, 0x0102_0304);
        let mut want = [0u8; NDMSG_LEN];
        want[0] = libc::AF_BRIDGE as u8;
        want[4..8].copy_from_slice(&0x0102_0304u32.to_ne_bytes());
        assert_eq!(ndm, want);
        assert!(
            attrs.as_bytes().is_empty(),
            "strict fdb dumps take it in ndm_ifindex"
        );
        // The whole request: nlmsghdr, then the ndmsg, nothing else.
        let m = netlink::encode(
            RTM_GETNEIGH,
            netlink::NLM_F_REQUEST | netlink::NLM_F_DUMP,
            9,
            &ndm,
            &attrs,
        );
        assert_eq!(m.len(), 16 + 12);
        assert_eq!(
            &m[4..8],
            &[30, 0, 0x01, 0x03][..],
            "RTM_GETNEIGH, REQUEST|DUMP"
        );
        assert_eq!(&m[16..], &want[..]);
    }

    #[test]
    fn inet_dump_names_the_device_in_an_attribute() {
        let (ndm, attrs) = neigh_dump_request(AF_INET, 7);
        assert_eq!(ndm, [libc::AF_INET as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // NDA_IFINDEX (8), 4 + 4 bytes.
        let mut want = vec![8, 0, 8, 0];
        want.extend_from_slice(&7u32.to_ne_bytes());
        assert_eq!(attrs.as_bytes(), &want[..]);
    }

    #[test]
    fn replies_parse_and_other_devices_are_dropped() {
        let mac = [2, 0x42, 10, 0, 0, 5];
        let vtep = [192, 168, 0, 2];
        let fdb = newneigh(
            AF_BRIDGE,
            VX,
            NUD_PERMANENT,
            Attrs::new()
                .bytes(NDA_LLADDR, &mac)
                .bytes(NDA_DST, &vtep)
                .u32(6, 0), // NDA_VNI: ignored
        );
        let n = neigh_of(&fdb, AF_BRIDGE, VX).unwrap().unwrap();
        assert_eq!(n.dst, Some(&vtep[..]));
        assert_eq!(n.lladdr, Some(&mac[..]));
        assert_eq!((n.state, n.flags), (NUD_PERMANENT, 0x02));
        // The same entry asked of another device or family is not ours.
        assert_eq!(neigh_of(&fdb, AF_BRIDGE, VX + 1).unwrap(), None);
        assert_eq!(neigh_of(&fdb, AF_INET, VX).unwrap(), None);

        let unresolved = newneigh(
            AF_INET,
            VX,
            0x20, // NUD_FAILED
            Attrs::new().bytes(NDA_DST, &[10, 0, 0, 9]),
        );
        let n = neigh_of(&unresolved, AF_INET, VX).unwrap().unwrap();
        assert_eq!((n.dst, n.lladdr), (Some(&[10, 0, 0, 9][..]), None));

        // Framed as the kernel sends them, through the framing's split.
        let mut buf = netlink::tests::msg(28, 1, &fdb);
        buf.extend(netlink::tests::msg(28, 1, &unresolved));
        let payloads: Vec<_> = netlink::split(&buf)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                netlink::Reply::Data { payload, .. } => Some(payload),
                _ => None,
            })
            .collect();
        assert_eq!(payloads, vec![&fdb[..], &unresolved[..]]);

        assert!(neigh_of(&[0; 8], AF_INET, VX).is_err(), "short ndmsg");
        let mut bad = newneigh(AF_INET, VX, NUD_PERMANENT, &Attrs::new());
        bad.extend_from_slice(&[200, 0, 1, 0]);
        assert!(
            neigh_of(&bad, AF_INET, VX).is_err(),
            "attribute past the end"
        );
    }
}
