//! Address allocation inside an overlay subnet.
//!
//! The subnet is cut into fixed blocks; a node allocates only inside blocks it has claimed
//! through gossip (see `gossip::claims`), so two nodes never hand out the same address. Inside a
//! block allocation is purely local. Block size: a /26 (64 addresses), or a quarter of the
//! subnet when the subnet is smaller than a /24, so that at least four nodes can hold a block.

use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Prefix length of one allocation block of `subnet`.
pub fn block_prefix(subnet: &Ipv4Net) -> u8 {
    (subnet.prefix_len() + 2).clamp(26, 32)
}

pub fn block_count(subnet: &Ipv4Net) -> u32 {
    1u32 << (block_prefix(subnet) - subnet.prefix_len())
}

/// The `index`-th block of `subnet`.
pub fn block(subnet: &Ipv4Net, index: u32) -> Option<Ipv4Net> {
    if index >= block_count(subnet) {
        return None;
    }
    let size = 1u32 << (32 - block_prefix(subnet));
    let base = u32::from(subnet.network()) + index * size;
    Ipv4Net::new(Ipv4Addr::from(base), block_prefix(subnet)).ok()
}

/// Whether `ip` may be given to an endpoint at all: inside the subnet, not its network or
/// broadcast address, not the gateway.
pub fn assignable(subnet: &Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast() && ip != gateway
}

/// Lowest free assignable address in the given blocks.
pub fn allocate(
    subnet: &Ipv4Net,
    gateway: Ipv4Addr,
    blocks: impl IntoIterator<Item = u32>,
    used: &HashSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let mut blocks: Vec<u32> = blocks.into_iter().collect();
    blocks.sort_unstable();
    blocks
        .into_iter()
        .filter_map(|b| block(subnet, b))
        .flat_map(|net| net.hosts_all())
        .find(|ip| assignable(subnet, gateway, *ip) && !used.contains(ip))
}

/// Default gateway of a subnet: its first host.
pub fn default_gateway(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// MAC derived from the IP, Docker style: `02:42:` followed by the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

trait HostsAll {
    fn hosts_all(&self) -> Box<dyn Iterator<Item = Ipv4Addr>>;
}

impl HostsAll for Ipv4Net {
    /// Every address of the block (the subnet-level filter removes network/broadcast).
    fn hosts_all(&self) -> Box<dyn Iterator<Item = Ipv4Addr>> {
        let start = u32::from(self.network());
        let end = u32::from(self.broadcast());
        Box::new((start..=end).map(Ipv4Addr::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn block_sizes() {
        assert_eq!(block_prefix(&net("10.0.0.0/24")), 26);
        assert_eq!(block_count(&net("10.0.0.0/24")), 4);
        assert_eq!(block_count(&net("10.0.0.0/16")), 1024);
        assert_eq!(block_prefix(&net("10.0.0.0/28")), 30);
        assert_eq!(block(&net("10.0.0.0/24"), 1), Some(net("10.0.0.64/26")));
        assert_eq!(block(&net("10.0.0.0/24"), 4), None);
    }

    #[test]
    fn allocation_skips_reserved_and_used() {
        let s = net("10.0.0.0/24");
        let gw = default_gateway(&s);
        let mut used = HashSet::new();
        assert_eq!(
            allocate(&s, gw, [0], &used),
            Some("10.0.0.2".parse().unwrap())
        );
        used.insert("10.0.0.2".parse().unwrap());
        assert_eq!(
            allocate(&s, gw, [0], &used),
            Some("10.0.0.3".parse().unwrap())
        );
        // last block: broadcast excluded
        let last: HashSet<Ipv4Addr> = (192..=254).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        assert_eq!(allocate(&s, gw, [3], &last), None);
    }

    #[test]
    fn mac_derivation() {
        assert_eq!(mac_for("10.1.2.3".parse().unwrap()), "02:42:0a:01:02:03");
    }
}
