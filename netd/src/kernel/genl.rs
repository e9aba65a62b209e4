//! A minimal generic-netlink client: resolve a family by name (`CTRL_CMD_GETFAMILY`), send a
//! request and wait for its ack, dump. Enough for IPVS (`kernel/ipvs.rs`), which has no
//! command-line tool worth a process per change.
//!
//! Generic netlink puts a 4-byte `genlmsghdr` (command, version, reserved) between the
//! `nlmsghdr` and the attributes; the netlink type of a message is the family's id. Framing,
//! attributes and the socket are `super::netlink`'s.

use super::netlink::{self, Attrs, NLM_F_REQUEST};
use anyhow::{anyhow, Context, Result};

const GENL_HDRLEN: usize = 4;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// A generic-netlink family: id and the version its commands are sent with.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub id: u16,
    pub version: u8,
}

impl Family {
    /// The `genlmsghdr` of command `cmd`.
    fn header(self, cmd: u8) -> [u8; GENL_HDRLEN] {
        [cmd, self.version, 0, 0]
    }
}

/// The attributes of a generic-netlink message's payload (what follows the genl header).
fn attrs_of(payload: &[u8]) -> &[u8] {
    payload.get(GENL_HDRLEN..).unwrap_or(&[])
}

/// A `NETLINK_GENERIC` socket, bound to the namespace it was opened in.
pub struct Socket(netlink::Socket);

impl Socket {
    pub fn open() -> Result<Socket> {
        Ok(Socket(netlink::Socket::open(libc::NETLINK_GENERIC)?))
    }

    /// Sends `cmd` with an ack requested and waits for it; a negative ack is the errno.
    pub fn request(&mut self, family: Family, cmd: u8, attrs: &Attrs) -> Result<()> {
        self.0.request(family.id, &family.header(cmd), attrs)
    }

    /// Sends `cmd` as a dump request and hands every reply message's attributes to `each`.
    pub fn dump(
        &mut self,
        family: Family,
        cmd: u8,
        attrs: &Attrs,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.0
            .dump(family.id, &family.header(cmd), attrs, |p| each(attrs_of(p)))
    }

    /// The id of family `name` (`CTRL_CMD_GETFAMILY`); commands are sent with `version`.
    pub fn family(&mut self, name: &str, version: u8) -> Result<Family> {
        let ctrl = Family {
            id: GENL_ID_CTRL,
            version: 1,
        };
        let seq = self.0.send(
            ctrl.id,
            NLM_F_REQUEST,
            &ctrl.header(CTRL_CMD_GETFAMILY),
            Attrs::new().string(CTRL_ATTR_FAMILY_NAME, name),
        )?;
        self.0.recv_until(|r| match r {
            netlink::Reply::Data {
                seq: s, payload, ..
            } if s == seq => {
                let id = netlink::get_u16(&netlink::parse(attrs_of(payload))?, CTRL_ATTR_FAMILY_ID)
                    .ok_or_else(|| anyhow!("generic netlink: no id for family {name}"))?;
                Ok(Some(Family { id, version }))
            }
            netlink::Reply::Ack { seq: s, errno } if s == seq && errno != 0 => {
                Err(std::io::Error::from_raw_os_error(-errno))
                    .with_context(|| format!("generic netlink family {name}"))
            }
            _ => Ok(None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::tests::msg;

    #[test]
    fn genl_header_and_attributes() {
        let f = Family {
            id: 0x23,
            version: 1,
        };
        let m = netlink::encode(f.id, NLM_F_REQUEST, 7, &f.header(4), Attrs::new().u32(1, 5));
        assert_eq!(&m[4..6], &0x23u16.to_ne_bytes());
        assert_eq!(&m[16..20], &[4, 1, 0, 0]);
        let reply = msg(0x23, 7, &m[16..]);
        let r = netlink::split(&reply).unwrap();
        let netlink::Reply::Data { payload, .. } = r[0] else {
            panic!("{r:?}")
        };
        let a = netlink::parse(attrs_of(payload)).unwrap();
        assert_eq!(netlink::get_u32(&a, 1), Some(5));
        assert!(
            attrs_of(&[1, 2]).is_empty(),
            "a short payload has no attributes"
        );
    }
}
