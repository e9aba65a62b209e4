//! Rust mirrors of the map layouts declared in `ebpf/lib/lb.h`. Addresses and ports are kept in
//! network byte order, exactly as the programs read them from `struct bpf_sock_addr`.

use super::model::{Backend, Frontend, Proto};
use std::net::Ipv4Addr;

pub const MAGLEV_M: u32 = 1021;
pub const MAX_SERVICES: u32 = 32768;
pub const MAX_BACKENDS: u32 = 262144;

pub const MAP_SERVICES: &str = "lb_services";
pub const MAP_BACKENDS: &str = "lb_backends";
pub const MAP_MAGLEV: &str = "lb_maglev";
pub const MAP_REV_NAT: &str = "lb_rev_nat";
pub const MAP_META: &str = "lb_meta";
pub const MAP_VIPS: &str = "lb_vips";
pub const MAP_CT: &str = "lb_ct";
pub const MAP_CT_REV: &str = "lb_ct_rev";

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SvcKey {
    pub vip: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvcVal {
    pub slot: u32,
    pub count: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendVal {
    pub ip: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
    pub mac: [u8; 6],
    pub pad2: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevKey {
    pub cookie: u64,
    pub ip: u32,
    pub port: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevVal {
    pub vip: u32,
    pub port: u16,
    pub pad: u16,
}

/// One service's Maglev table: backend ids.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevRow {
    pub ids: [u32; MAGLEV_M as usize],
}

// SAFETY: plain #[repr(C)] integers, no padding holes (sizes checked in the tests below).
unsafe impl aya::Pod for SvcKey {}
unsafe impl aya::Pod for SvcVal {}
unsafe impl aya::Pod for BackendVal {}
unsafe impl aya::Pod for RevKey {}
unsafe impl aya::Pod for RevVal {}
unsafe impl aya::Pod for MaglevRow {}

/// An address as the kernel stores it (network order) read as a native integer.
fn be_addr(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}
fn addr_of(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

impl SvcKey {
    pub fn of(fe: &Frontend) -> SvcKey {
        SvcKey {
            vip: be_addr(fe.vip),
            port: fe.port.to_be(),
            proto: fe.proto.number(),
            pad: 0,
        }
    }
    pub fn frontend(&self) -> Option<Frontend> {
        Some(Frontend {
            vip: addr_of(self.vip),
            port: u16::from_be(self.port),
            proto: Proto::from_number(self.proto)?,
        })
    }
}

impl BackendVal {
    pub fn of(b: &Backend, proto: Proto, mac: [u8; 6]) -> BackendVal {
        BackendVal {
            ip: be_addr(b.ip),
            port: b.port.to_be(),
            proto: proto.number(),
            pad: 0,
            mac,
            pad2: 0,
        }
    }
    pub fn backend(&self) -> Option<(Backend, Proto)> {
        Some((
            Backend {
                ip: addr_of(self.ip),
                port: u16::from_be(self.port),
            },
            Proto::from_number(self.proto)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust types have the sizes the compiled programs declare for their maps (read from
    /// the embedded objects' BTF map definitions).
    #[test]
    fn sizes_agree_with_the_c_layout() {
        let want: &[(&str, usize, usize)] = &[
            (MAP_SERVICES, size_of::<SvcKey>(), size_of::<SvcVal>()),
            (MAP_BACKENDS, size_of::<u32>(), size_of::<BackendVal>()),
            (MAP_MAGLEV, size_of::<u32>(), size_of::<MaglevRow>()),
            (MAP_REV_NAT, size_of::<RevKey>(), size_of::<RevVal>()),
            (MAP_META, size_of::<u32>(), size_of::<u64>()),
            (MAP_VIPS, size_of::<u32>(), size_of::<u32>()),
            (MAP_CT, 16, 12),
            (MAP_CT_REV, 16, 12),
        ];
        let tc = super::super::ebpf::TC_OBJECTS;
        for (prog, bytes) in super::super::ebpf::OBJECTS.into_iter().chain(tc) {
            let obj = aya_obj::Object::parse(bytes).unwrap_or_else(|e| panic!("{prog}: {e}"));
            for (name, k, v) in want {
                let m = obj
                    .maps
                    .get(*name)
                    .unwrap_or_else(|| panic!("{prog}: map {name} missing"));
                assert_eq!(m.key_size() as usize, *k, "{prog}: {name} key");
                assert_eq!(m.value_size() as usize, *v, "{prog}: {name} value");
            }
            let mg = &obj.maps[MAP_MAGLEV];
            assert_eq!(mg.max_entries(), MAX_SERVICES, "{prog}");
            assert_eq!(obj.maps[MAP_SERVICES].max_entries(), MAX_SERVICES, "{prog}");
            assert_eq!(obj.maps[MAP_BACKENDS].max_entries(), MAX_BACKENDS, "{prog}");
        }
        assert_eq!(size_of::<SvcKey>(), 8);
        assert_eq!(size_of::<RevKey>(), 16);
    }

    #[test]
    fn byte_order_roundtrip() {
        let fe = Frontend {
            vip: Ipv4Addr::new(10, 1, 0, 100),
            port: 8080,
            proto: Proto::Udp,
        };
        let k = SvcKey::of(&fe);
        assert_eq!(k.vip.to_ne_bytes(), [10, 1, 0, 100]);
        assert_eq!(k.port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(k.frontend(), Some(fe));
    }
}
