//! Netlink framing and a raw `AF_NETLINK` socket, shared by the generic-netlink client
//! (`genl`, for IPVS) and the route-netlink client (`rtnl`, for neighbors and the FDB).
//!
//! Wire format (netlink(7)): every message is a 16-byte `nlmsghdr` (length, type, flags,
//! sequence, port id), then a fixed header of the protocol's (`genlmsghdr`, `ndmsg`, ...), then
//! attributes: `nlattr` (length u16, type u16), payload, padding to 4. Encoding and parsing are
//! pure functions, tested below; only [`Socket`] touches the kernel.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it, for its
//! whole life: open it inside [`super::netns::in_netns`] to talk to another namespace.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
/// Set by kernels on nested attributes; not part of the type.
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `SOL_NETLINK` / `NETLINK_GET_STRICT_CHK` (Linux 4.20): the kernel checks dump requests
/// strictly and honours their filters (e.g. the device of an `AF_BRIDGE` neighbor dump).
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
/// Receive buffer: the kernel fills a dump datagram up to 32 KiB at most (netlink_dump), so
/// this holds any of them whole; a longer datagram is reported, not silently cut.
const RECV_BUF: usize = 64 * 1024;

pub const fn align4(n: usize) -> usize {
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

/// A request: `nlmsghdr` of type `kind`, the protocol's fixed `header`, attributes.
pub fn encode(kind: u16, flags: u16, seq: u32, header: &[u8], attrs: &Attrs) -> Vec<u8> {
    let len = NLMSG_HDRLEN + header.len() + attrs.0.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills ours in
    m.extend_from_slice(header);
    m.extend_from_slice(&attrs.0);
    m
}

/// One netlink message of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A data message: its type and what follows the `nlmsghdr` (fixed header, attributes).
    Data {
        seq: u32,
        kind: u16,
        payload: &'a [u8],
    },
    /// An ack (0) or an error (negative errno).
    Ack { seq: u32, errno: i32 },
    /// End of a dump, with the dump's error (negative errno) if it failed part-way.
    Done { seq: u32, errno: i32 },
}

fn errno_of(body: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?))
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
            NLMSG_ERROR => Reply::Ack {
                seq,
                errno: errno_of(body).ok_or_else(|| anyhow!("netlink: short error message"))?,
            },
            // Older kernels may end a dump with an empty DONE.
            NLMSG_DONE => Reply::Done {
                seq,
                errno: errno_of(body).unwrap_or(0),
            },
            _ => Reply::Data {
                seq,
                kind,
                payload: body,
            },
        });
        at += align4(len);
    }
    Ok(out)
}

/// The attributes of a payload in order, as (type, value) with the nested flag stripped; a
/// malformed one ends the walk with an error.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8])>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + NLA_HDRLEN > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || at + len > buf.len() {
            at = buf.len();
            return Some(Err(anyhow!(
                "netlink: bad attribute (type {kind}, length {len})"
            )));
        }
        let value = &buf[at + NLA_HDRLEN..at + len];
        at += align4(len);
        Some(Ok((kind, value)))
    })
}

/// The attributes of a payload by type (the last one wins; the nested flag stripped).
pub fn parse(buf: &[u8]) -> Result<BTreeMap<u16, &[u8]>> {
    attrs(buf).collect()
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

fn errno_err(errno: i32) -> anyhow::Error {
    std::io::Error::from_raw_os_error(-errno).into()
}

/// A netlink socket of one protocol (`NETLINK_GENERIC`, `NETLINK_ROUTE`), bound to the
/// namespace it was opened in.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub fn open(protocol: libc::c_int) -> Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
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
        Ok(Socket {
            fd,
            seq: 0,
            buf: Vec::new(),
        })
    }

    /// Asks for strict checking of dump requests, so the kernel applies their filters; returns
    /// whether the kernel has it (4.20 and later). Without it a filter may be ignored, which
    /// callers must tolerate (filter the replies too).
    pub fn strict_dumps(&self) -> bool {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt(2) with a valid int of the size given.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_GET_STRICT_CHK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    }

    /// Sends one request (see [`encode`]); returns its sequence number.
    pub fn send(&mut self, kind: u16, flags: u16, header: &[u8], attrs: &Attrs) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let msg = encode(kind, flags, self.seq, header, attrs);
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

    /// Receives datagrams and hands each message to `each` until it returns `Some`.
    pub fn recv_until<T>(
        &mut self,
        mut each: impl FnMut(Reply<'_>) -> Result<Option<T>>,
    ) -> Result<T> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(RECV_BUF, 0);
        let out = loop {
            // SAFETY: recv(2) into a buffer valid for its length; MSG_TRUNC makes it return the
            // datagram's real length, so a cut one is noticed.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                break Err(std::io::Error::last_os_error()).context("netlink receive");
            }
            let n = n as usize;
            if n > buf.len() {
                break Err(anyhow!(
                    "netlink: a {n}-byte datagram does not fit the {}-byte buffer",
                    buf.len()
                ));
            }
            match split(&buf[..n]).and_then(|msgs| {
                for m in msgs {
                    if let Some(v) = each(m)? {
                        return Ok(Some(v));
                    }
                }
                Ok(None)
            }) {
                Ok(None) => {}
                Ok(Some(v)) => break Ok(v),
                Err(e) => break Err(e),
            }
        };
        self.buf = buf;
        out
    }

    /// Sends a request with an ack requested and waits for it; a negative ack is the errno.
    pub fn request(&mut self, kind: u16, header: &[u8], attrs: &Attrs) -> Result<()> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_ACK, header, attrs)?;
        self.recv_until(|r| match r {
            Reply::Ack { seq: s, errno } if s == seq => {
                if errno == 0 {
                    Ok(Some(()))
                } else {
                    Err(errno_err(errno))
                }
            }
            _ => Ok(None), // a stale reply of an earlier request
        })
    }

    /// Sends a dump request and hands every reply message's payload (fixed header and
    /// attributes) to `each`, as it arrives: nothing of the dump is kept here.
    pub fn dump(
        &mut self,
        kind: u16,
        header: &[u8],
        attrs: &Attrs,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_DUMP, header, attrs)?;
        self.recv_until(|r| match r {
            Reply::Data {
                seq: s, payload, ..
            } if s == seq => each(payload).map(|()| None),
            Reply::Done { seq: s, errno } | Reply::Ack { seq: s, errno } if s == seq => {
                if errno == 0 {
                    Ok(Some(()))
                } else {
                    Err(errno_err(errno))
                }
            }
            _ => Ok(None),
        })
    }
}

#[cfg(test)]
pub mod tests {
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
            &[1, 1, 0, 0],
            Attrs::new().u32(1, 5),
        );
        assert_eq!(m.len(), 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x23);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 5);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[1, 1, 0, 0]);
    }

    /// A reply message as the kernel frames it (for the protocols' tests too).
    pub fn msg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
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
        let body = [1, 1, 0, 0, 8, 0, 2, 0, 9, 0, 0, 0];
        let mut buf = msg(0x23, 3, &body);
        let mut err = (-17i32).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]); // the request's header
        buf.extend(msg(NLMSG_ERROR, 4, &err));
        buf.extend(msg(NLMSG_DONE, 3, &0i32.to_ne_bytes()));
        buf.extend(msg(NLMSG_DONE, 5, &(-16i32).to_ne_bytes()));
        let r = split(&buf).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0],
            Reply::Data {
                seq: 3,
                kind: 0x23,
                payload: &body
            }
        );
        assert_eq!(get_u32(&parse(&body[4..]).unwrap(), 2), Some(9));
        assert_eq!(r[1], Reply::Ack { seq: 4, errno: -17 });
        assert_eq!(r[2], Reply::Done { seq: 3, errno: 0 });
        assert_eq!(r[3], Reply::Done { seq: 5, errno: -16 });
        // A length past the end is an error, not a panic.
        assert!(split(&buf[..20]).is_err());
        assert!(parse(&[200, 0, 1, 0]).is_err());
    }
}
