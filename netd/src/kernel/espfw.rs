//! The nftables side of encrypted networks (table `ip netd_esp` in netd's namespace):
//! - marks VXLAN packets of encrypted VNIs (output and prerouting), which is what the XFRM
//!   policies select: plain VNIs between the same nodes stay plain;
//! - drops them whenever they would leave or arrive in clear: outbound without an IPsec route
//!   (`rt ipsec missing`: no policy or no SA yet), inbound without a security path (`meta ipsec
//!   missing`: not decrypted by ESP).
//!
//! The VNI is matched in the VXLAN header (`@th,96,24`: bytes 4-6 after the 8-byte UDP header).
//! These are kernel objects: they stay while netd is stopped, restarting or crashed, so an
//! encrypted network fails closed, never open.

use super::cmd::{self, with_stdin, Ns};
use super::xfrm::MARK;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeSet;

pub const TABLE: &str = "netd_esp";

/// The ruleset for `vnis` (an empty set removes the table's rules but keeps nothing open).
pub fn ruleset(port: u16, vnis: &BTreeSet<u32>) -> String {
    let mut s = format!("table ip {TABLE} {{}}\nflush table ip {TABLE}\n");
    if vnis.is_empty() {
        s.push_str(&format!("delete table ip {TABLE}\n"));
        return s;
    }
    let set = vnis
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let m = format!("udp dport {port} @th,96,24 {{ {set} }}");
    s.push_str(&format!(
        "table ip {TABLE} {{
  chain mark_out {{
    type route hook output priority mangle; policy accept;
    {m} meta mark set 0x{MARK:08x}
  }}
  chain mark_in {{
    type filter hook prerouting priority mangle; policy accept;
    {m} meta mark set 0x{MARK:08x}
  }}
  chain drop_out {{
    type filter hook output priority filter; policy accept;
    {m} rt ipsec missing counter drop
  }}
  chain drop_in {{
    type filter hook input priority filter; policy accept;
    {m} meta ipsec missing counter drop
  }}
}}
"
    ));
    s
}

/// Loads the ruleset in one nft transaction.
pub fn apply(port: u16, vnis: &BTreeSet<u32>) -> Result<()> {
    with_stdin(&Ns::Node, "nft", &["-f", "-"], &ruleset(port, vnis))
        .context("loading the encrypted-network rules (nft table ip netd_esp)")
}

/// What the kernel has: the VNIs the drop rules cover and their counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub present: bool,
    /// VNIs dropped outbound unless encrypted.
    pub out_vnis: BTreeSet<u32>,
    /// VNIs dropped inbound unless decrypted.
    pub in_vnis: BTreeSet<u32>,
    pub dropped_out_packets: u64,
    pub dropped_in_packets: u64,
}

pub fn status() -> Result<Status> {
    let Ok(text) = cmd::run(&Ns::Node, "nft", &["list", "table", "ip", TABLE]) else {
        return Ok(Status::default());
    };
    Ok(parse_status(&text))
}

/// Reads `nft list table ip netd_esp` (text: VNIs print as hex or decimal).
pub fn parse_status(text: &str) -> Status {
    let mut st = Status {
        present: true,
        ..Default::default()
    };
    let mut chain = "";
    for l in text.lines() {
        let t = l.trim();
        if let Some(c) = t.strip_prefix("chain ") {
            chain = c.trim_end_matches(" {").trim();
            continue;
        }
        if !t.contains("drop") || !t.contains("@th,96,24") {
            continue;
        }
        // "@th,96,24 { 0x1001, 0x1388 }", or "@th,96,24 0x1001" for a single VNI
        let after = t
            .split_once("@th,96,24")
            .map(|(_, r)| r.trim())
            .unwrap_or("");
        let set = match after.strip_prefix('{') {
            Some(r) => r.split_once('}').map(|(s, _)| s).unwrap_or(""),
            None => after.split_whitespace().next().unwrap_or(""),
        };
        let vnis: BTreeSet<u32> = set
            .split(',')
            .filter_map(|v| {
                let v = v.trim();
                match v.strip_prefix("0x") {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => v.parse().ok(),
                }
            })
            .collect();
        let packets = t
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[0] == "packets")
            .and_then(|w| w[1].parse().ok())
            .unwrap_or(0);
        match chain {
            "drop_out" => {
                st.out_vnis = vnis;
                st.dropped_out_packets = packets;
            }
            "drop_in" => {
                st.in_vnis = vnis;
                st.dropped_in_packets = packets;
            }
            _ => {}
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_covers_every_vni_both_ways() {
        let vnis: BTreeSet<u32> = [4097, 5000].into();
        let r = ruleset(4789, &vnis);
        assert!(r.contains("udp dport 4789 @th,96,24 { 4097, 5000 } rt ipsec missing counter drop"));
        assert!(
            r.contains("udp dport 4789 @th,96,24 { 4097, 5000 } meta ipsec missing counter drop")
        );
        assert!(
            r.contains("type route hook output"),
            "marking must re-route"
        );
        assert!(ruleset(4789, &BTreeSet::new()).contains("delete table"));
    }

    #[test]
    fn status_reads_what_nft_prints() {
        let text = "table ip netd_esp {
	chain drop_out {
		type filter hook output priority filter; policy accept;
		udp dport 4789 @th,96,24 { 0x1001, 0x1388 } rt ipsec missing counter packets 3 bytes 300 drop
	}
	chain drop_in {
		type filter hook input priority filter; policy accept;
		udp dport 4789 @th,96,24 0x1001 meta ipsec missing counter packets 7 bytes 700 drop
	}
}";
        let s = parse_status(text);
        assert_eq!(s.out_vnis, [4097, 5000].into());
        assert_eq!(s.dropped_out_packets, 3);
        assert_eq!(s.dropped_in_packets, 7);
        assert_eq!(s.in_vnis, [4097].into());
    }
}
