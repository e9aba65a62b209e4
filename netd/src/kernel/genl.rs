//! A minimal generic-netlink client over a raw `AF_NETLINK`/`NETLINK_GENERIC` socket: resolve a
//! family by name (`CTRL_CMD_GETFAMILY`), send a request and wait for its ack, dump. Enough for
//! IPVS (`kernel/ipvs.rs`), which has no command-line tool worth a process per change.
//!
//! Wire format (netlink(7)): every message is a 16-byte `nlmsghdr` (length, type, flags,
//! sequence, port id) followed, for generic netlink, by a 4-byte `genlmsghdr` (command,
//! version, reserved) and attributes: `nlattr` (length u16, type u16), payload, padding to 4.
//! Encoding and parsing are pure functions, tested below; only [`Socket`] touches the kernel.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it, for its
//! whole life: open it inside [`super::netns::in_netns`] to talk to another namespace.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// Set by kernels on nested attributes; not part of the type.
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Attributes being encoded (a message's payload, or one nested attribute's).
#[derive(Debug, Default, Clone)]
pub struct Attrs(Vec<u8>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }
    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Attrs {
        let len = NLA_HDRLEN + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align4(self.0.len()), 0);
        self
    }
    pub fn u16(&mut self, kind: u16, v: u16) -> &mut Attrs {
        self.bytes(kind, &v.to_ne_bytes())
    }
    /// A 16-bit value in network byte order (ports).
    pub fn be16(&mut self, kind: u16, v: u16) -> &mut Attrs {
        self.bytes(kind, &v.to_be_bytes())
    }
    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Attrs {
        self.bytes(kind, &v.to_ne_bytes())
    }
    /// A NUL-terminated string.
    pub fn string(&mut self, kind: u16, s: &str) -> &mut Attrs {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(kind, &v)
    }
    pub fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Attrs {
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A generic-netlink request: header, genl header, attributes.
pub fn encode(family: u16, flags: u16, seq: u32, cmd: u8, version: u8, attrs: &Attrs) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.0.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&family.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills ours in
    m.extend_from_slice(&[cmd, version, 0, 0]);
    m.extend_from_slice(&attrs.0);
    m
}

/// One netlink message of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A genl message: its attributes (after the genl header).
    Data { seq: u32, attrs: &'a [u8] },
    /// An ack (0) or an error (negative errno).
    Ack { seq: u32, errno: i32 },
    /// End of a dump.
    Done { seq: u32 },
}

/// Splits a datagram into its messages.
pub fn split(buf: &[u8]) -> Result<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let h = &buf[at..];
        let len = u32::from_ne_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([h[4], h[5]]);
        let seq = u32::from_ne_bytes(h[8..12].try_into().expect("4 bytes"));
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            bail!(
                "netlink: truncated message ({len} bytes at {at} of {})",
                buf.len()
            );
        }
        let body = &h[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_ERROR => {
                let e = body
                    .get(0..4)
                    .ok_or_else(|| anyhow!("netlink: short error message"))?;
                Reply::Ack {
                    seq,
                    errno: i32::from_ne_bytes(e.try_into().expect("4 bytes")),
                }
            }
            NLMSG_DONE => Reply::Done { seq },
            _ => Reply::Data {
                seq,
                attrs: body.get(GENL_HDRLEN..).unwrap_or(&[]),
            },
        });
        at += align4(len);
    }
    Ok(out)
}

/// The attributes of a payload by type (the last one wins; the nested flag stripped).
pub fn parse(buf: &[u8]) -> Result<BTreeMap<u16, &[u8]>> {
    let mut out = BTreeMap::new();
    let mut at = 0;
    while at + NLA_HDRLEN <= buf.len() {
        let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || at + len > buf.len() {
            bail!("netlink: bad attribute (type {kind}, length {len})");
        }
        out.insert(kind, &buf[at + NLA_HDRLEN..at + len]);
        at += align4(len);
    }
    Ok(out)
}

pub fn get_u16(a: &BTreeMap<u16, &[u8]>, kind: u16) -> Option<u16> {
    Some(u16::from_ne_bytes(
        a.get(&kind)?.get(0..2)?.try_into().ok()?,
    ))
}

pub fn get_be16(a: &BTreeMap<u16, &[u8]>, kind: u16) -> Option<u16> {
    Some(u16::from_be_bytes(
        a.get(&kind)?.get(0..2)?.try_into().ok()?,
    ))
}

pub fn get_u32(a: &BTreeMap<u16, &[u8]>, kind: u16) -> Option<u32> {
    Some(u32::from_ne_bytes(
        a.get(&kind)?.get(0..4)?.try_into().ok()?,
    ))
}

pub fn get_string(a: &BTreeMap<u16, &[u8]>, kind: u16) -> Option<String> {
    let v = a.get(&kind)?;
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    Some(String::from_utf8_lossy(&v[..end]).into_owned())
}

/// A generic-netlink family: id and the version its commands are sent with.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub id: u16,
    pub version: u8,
}

/// A `NETLINK_GENERIC` socket, bound to the namespace it was opened in.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open() -> Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("netlink socket");
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A kernel that never answers must not hang the reconcile thread.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setsockopt(2) with a valid timeval of the size given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Socket { fd, seq: 0 })
    }

    fn send(&mut self, family: Family, flags: u16, cmd: u8, attrs: &Attrs) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let msg = encode(family.id, flags, self.seq, cmd, family.version, attrs);
        // SAFETY: an all-zero sockaddr_nl is valid; the fields set are the kernel's address.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sendto(2) with a buffer and address valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("netlink send");
        }
        Ok(self.seq)
    }

    fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: recv(2) into a buffer valid for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("netlink receive");
        }
        Ok(n as usize)
    }

    /// Sends `cmd` with an ack requested and waits for it; a negative ack is the errno.
    pub fn request(&mut self, family: Family, cmd: u8, attrs: &Attrs) -> Result<()> {
        let seq = self.send(family, NLM_F_REQUEST | NLM_F_ACK, cmd, attrs)?;
        let mut buf = vec![0u8; 16384];
        loop {
            let n = self.recv(&mut buf)?;
            for r in split(&buf[..n])? {
                match r {
                    Reply::Ack { seq: s, errno } if s == seq => {
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::from_raw_os_error(-errno).into())
                        };
                    }
                    _ => {} // a stale reply of an earlier request
                }
            }
        }
    }

    /// Sends `cmd` as a dump request and returns every reply message's attributes.
    pub fn dump(&mut self, family: Family, cmd: u8, attrs: &Attrs) -> Result<Vec<Vec<u8>>> {
        let seq = self.send(family, NLM_F_REQUEST | NLM_F_DUMP, cmd, attrs)?;
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::new();
        loop {
            let n = self.recv(&mut buf)?;
            for r in split(&buf[..n])? {
                match r {
                    Reply::Data { seq: s, attrs } if s == seq => out.push(attrs.to_vec()),
                    Reply::Done { seq: s } if s == seq => return Ok(out),
                    Reply::Ack { seq: s, errno } if s == seq && errno != 0 => {
                        return Err(std::io::Error::from_raw_os_error(-errno).into());
                    }
                    _ => {}
                }
            }
        }
    }

    /// The id of family `name` (`CTRL_CMD_GETFAMILY`); commands are sent with `version`.
    pub fn family(&mut self, name: &str, version: u8) -> Result<Family> {
        let ctrl = Family {
            id: GENL_ID_CTRL,
            version: 1,
        };
        let seq = self.send(
            ctrl,
            NLM_F_REQUEST,
            CTRL_CMD_GETFAMILY,
            Attrs::new().string(CTRL_ATTR_FAMILY_NAME, name),
        )?;
        let mut buf = vec![0u8; 16384];
        loop {
            let n = self.recv(&mut buf)?;
            for r in split(&buf[..n])? {
                match r {
                    Reply::Data { seq: s, attrs } if s == seq => {
                        let id = get_u16(&parse(attrs)?, CTRL_ATTR_FAMILY_ID)
                            .ok_or_else(|| anyhow!("generic netlink: no id for family {name}"))?;
                        return Ok(Family { id, version });
                    }
                    Reply::Ack { seq: s, errno } if s == seq && errno != 0 => {
                        return Err(std::io::Error::from_raw_os_error(-errno))
                            .with_context(|| format!("generic netlink family {name}"));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_round_trip() {
        let mut inner = Attrs::new();
        inner.u16(1, 2).be16(4, 8080).string(6, "mh");
        let mut a = Attrs::new();
        a.nested(1, &inner).u32(4, 2_147_483);
        // u16: 4 + 2 -> 8; be16 -> 8; "mh\0": 4 + 3 -> 8; nested: 4 + 24; u32: 8.
        assert_eq!(a.as_bytes().len(), 28 + 8);
        let top = parse(a.as_bytes()).unwrap();
        assert_eq!(get_u32(&top, 4), Some(2_147_483));
        let svc = parse(top[&1]).unwrap();
        assert_eq!(get_u16(&svc, 1), Some(2));
        assert_eq!(get_be16(&svc, 4), Some(8080));
        assert_eq!(svc[&4], &[0x1f, 0x90][..], "ports go big-endian");
        assert_eq!(get_string(&svc, 6).as_deref(), Some("mh"));
    }

    #[test]
    fn request_header() {
        let m = encode(
            0x23,
            NLM_F_REQUEST | NLM_F_ACK,
            7,
            1,
            1,
            Attrs::new().u32(1, 5),
        );
        assert_eq!(m.len(), 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x23);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 5);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[1, 1, 0, 0]);
    }

    fn msg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = 16 + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    #[test]
    fn replies_split_into_data_errors_and_done() {
        let mut buf = msg(0x23, 3, &[1, 1, 0, 0, 8, 0, 2, 0, 9, 0, 0, 0]);
        let mut err = (-17i32).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]); // the request's header
        buf.extend(msg(NLMSG_ERROR, 4, &err));
        buf.extend(msg(NLMSG_DONE, 3, &0i32.to_ne_bytes()));
        let r = split(&buf).unwrap();
        assert_eq!(r.len(), 3);
        let Reply::Data { seq: 3, attrs } = r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(get_u32(&parse(attrs).unwrap(), 2), Some(9));
        assert_eq!(r[1], Reply::Ack { seq: 4, errno: -17 });
        assert_eq!(r[2], Reply::Done { seq: 3 });
        // A length past the end is an error, not a panic.
        assert!(split(&buf[..20]).is_err());
        assert!(parse(&[200, 0, 1, 0]).is_err());
    }
}
