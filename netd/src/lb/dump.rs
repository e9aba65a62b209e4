//! Read-only view of the eBPF LB's pinned maps, for `netd inspect`: what the kernel actually
//! holds per frontend (service entry, Maglev table fill, backends, conntrack flows of the
//! packet-level LB, UDP reverse-NAT entries). Opens the pins by path, so it works while netd is
//! stopped; it never writes.

use super::maps::*;
use super::model::{Frontend, Proto};
use crate::kernel::neigh::fmt_mac;
use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, Map, MapData};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// One frontend as the maps hold it. Field names are part of `netd inspect service --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFrontend {
    /// `VIP:port/proto`.
    pub frontend: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    /// Row of `lb_maglev` and the number of enabled backends, from `lb_services`.
    pub slot: u32,
    pub backend_count: u32,
    /// Backends the Maglev row points at, with how many of its slots each holds.
    pub backends: Vec<KernelBackend>,
    pub maglev: MaglevFill,
    /// `lb_vips`: enabled backends over all frontends of this VIP (ARP/ICMP answers).
    pub vip_enabled_backends: Option<u32>,
    /// Flows of the packet-level (tc) LB pinned to a backend (`lb_ct`).
    pub conntrack: Vec<CtFlow>,
    /// UDP sockets whose replies are translated back to this frontend (`lb_rev_nat`).
    pub udp_reverse_nat: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelBackend {
    pub id: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub mac: String,
    pub maglev_slots: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaglevFill {
    pub slots: u32,
    /// Slots pointing at a backend entry that exists.
    pub filled: u32,
    /// Slots pointing at an empty `lb_backends` entry (connections there are refused).
    pub dangling: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtFlow {
    pub client: String,
    pub backend: String,
}

pub struct PinnedMaps {
    services: HashMap<MapData, SvcKey, SvcVal>,
    backends: Array<MapData, BackendVal>,
    maglev: Array<MapData, MaglevRow>,
    vips: HashMap<MapData, u32, u32>,
    ct: Option<HashMap<MapData, [u8; 16], [u8; 12]>>,
    rev_nat: Option<HashMap<MapData, RevKey, RevVal>>,
}

fn open(dir: &Path, name: &str) -> Result<Map> {
    let p = dir.join(name);
    let data = MapData::from_pin(&p).with_context(|| format!("opening {}", p.display()))?;
    Ok(Map::from_map_data(data)?)
}

impl PinnedMaps {
    /// Opens the maps pinned in `dir` (`lb_pin_dir`).
    pub fn open(dir: &Path) -> Result<PinnedMaps> {
        Ok(PinnedMaps {
            services: HashMap::try_from(open(dir, MAP_SERVICES)?)?,
            backends: Array::try_from(open(dir, MAP_BACKENDS)?)?,
            maglev: Array::try_from(open(dir, MAP_MAGLEV)?)?,
            vips: HashMap::try_from(open(dir, MAP_VIPS)?)?,
            ct: open(dir, MAP_CT)
                .ok()
                .and_then(|m| HashMap::try_from(m).ok()),
            rev_nat: open(dir, MAP_REV_NAT)
                .ok()
                .and_then(|m| HashMap::try_from(m).ok()),
        })
    }

    /// Every frontend in `lb_services`.
    pub fn frontends(&self) -> Result<Vec<Frontend>> {
        let mut v = Vec::new();
        for k in self.services.keys() {
            if let Some(fe) = k?.frontend() {
                v.push(fe);
            }
        }
        v.sort();
        Ok(v)
    }

    /// What the maps hold for `fe`; None when `lb_services` has no entry.
    pub fn frontend(&self, fe: &Frontend) -> Result<Option<KernelFrontend>> {
        let v = match self.services.get(&SvcKey::of(fe), 0) {
            Ok(v) => v,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut per_id: BTreeMap<u32, u32> = BTreeMap::new();
        let mut fill = MaglevFill {
            slots: 0,
            filled: 0,
            dangling: 0,
        };
        let mut backends = Vec::new();
        if v.count > 0 && v.slot < MAX_SERVICES {
            let row = self.maglev.get(&v.slot, 0)?;
            fill.slots = MAGLEV_M;
            for id in row.ids {
                *per_id.entry(id).or_default() += 1;
            }
            for (id, n) in per_id {
                if id >= MAX_BACKENDS {
                    fill.dangling += n;
                    continue;
                }
                let b = self.backends.get(&id, 0)?;
                if b.ip == 0 {
                    fill.dangling += n;
                    continue;
                }
                fill.filled += n;
                let Some((be, _)) = b.backend() else { continue };
                backends.push(KernelBackend {
                    id,
                    ip: be.ip,
                    port: be.port,
                    mac: fmt_mac(&b.mac),
                    maglev_slots: n,
                });
            }
        }
        let vip_key = u32::from_ne_bytes(fe.vip.octets());
        let vip_enabled_backends = self.vips.get(&vip_key, 0).ok();
        Ok(Some(KernelFrontend {
            frontend: format!("{}:{}/{}", fe.vip, fe.port, fe.proto.name()),
            vip: fe.vip,
            port: fe.port,
            protocol: fe.proto.name().to_string(),
            slot: v.slot,
            backend_count: v.count,
            backends,
            maglev: fill,
            vip_enabled_backends,
            conntrack: self.conntrack(fe),
            udp_reverse_nat: self.reverse_nat(fe),
        }))
    }

    /// Forward conntrack entries (client → VIP:port) of the packet-level LB.
    fn conntrack(&self, fe: &Frontend) -> Vec<CtFlow> {
        let Some(ct) = &self.ct else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for (k, val) in ct.iter().flatten() {
            // struct lb_ct_key: saddr, daddr, sport, dport (network order), proto.
            let saddr = Ipv4Addr::new(k[0], k[1], k[2], k[3]);
            let daddr = Ipv4Addr::new(k[4], k[5], k[6], k[7]);
            let sport = u16::from_be_bytes([k[8], k[9]]);
            let dport = u16::from_be_bytes([k[10], k[11]]);
            if daddr != fe.vip || dport != fe.port || Proto::from_number(k[12]) != Some(fe.proto) {
                continue;
            }
            let bip = Ipv4Addr::new(val[0], val[1], val[2], val[3]);
            let bport = u16::from_be_bytes([val[4], val[5]]);
            v.push(CtFlow {
                client: format!("{saddr}:{sport}"),
                backend: format!("{bip}:{bport}"),
            });
        }
        v.sort_by(|a, b| a.client.cmp(&b.client));
        v
    }

    fn reverse_nat(&self, fe: &Frontend) -> usize {
        let Some(rn) = &self.rev_nat else { return 0 };
        let (vip, port) = (u32::from_ne_bytes(fe.vip.octets()), fe.port.to_be());
        rn.iter()
            .flatten()
            .filter(|(_, v)| v.vip == vip && v.port == port)
            .count()
    }
}
