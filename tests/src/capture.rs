//! Packet capture with tcpdump and decoding of its VXLAN output: to check what actually
//! travels on the underlay (UDP 4789, the network's VNI, the inner frame).

use crate::cmd::Background;
use anyhow::{bail, Result};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A running `tcpdump -l -n -e -vv` in a namespace.
pub struct Capture {
    proc: Background,
}

impl Capture {
    /// Starts capturing on `dev` in `ns` with a pcap `filter` and waits until tcpdump
    /// reports it is listening, so no packet sent afterwards is missed.
    pub fn start(ns: &str, dev: &str, filter: &str, dir: &Path, tag: &str) -> Result<Self> {
        let mut cmd = vec!["tcpdump", "-l", "-n", "-e", "-vv", "-i", dev];
        cmd.extend(filter.split_whitespace());
        let mut proc = Background::spawn_in(ns, &cmd, dir, tag)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proc.stderr().contains("listening on") {
            if !proc.is_running() || Instant::now() > deadline {
                bail!("tcpdump did not start: {}", proc.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { proc })
    }

    /// Stops tcpdump (SIGINT flushes its output) and returns what it printed.
    pub fn finish(mut self) -> String {
        // Let packets in flight reach the capture before stopping it.
        std::thread::sleep(Duration::from_millis(300));
        self.proc.stop_with(libc::SIGINT, Duration::from_secs(5));
        self.proc.stdout()
    }
}

/// One VXLAN packet as decoded by tcpdump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPacket {
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    pub dst_port: u16,
    pub vni: u32,
    /// The inner frame's lines (Ethernet header line, then the inner IP summary).
    pub inner: String,
}

/// Extracts the VXLAN packets from `tcpdump -n -e -vv` output. A packet starts with a
/// timestamped line; the next line is the outer UDP summary ending in `vni N`; the lines
/// up to the next timestamp describe the inner frame.
pub fn parse_vxlan(output: &str) -> Vec<VxlanPacket> {
    let mut packets = Vec::new();
    let mut lines = output.lines().peekable();
    while let Some(line) = lines.next() {
        if !starts_with_timestamp(line) {
            continue;
        }
        let Some(udp) = lines.next() else { break };
        let mut inner = Vec::new();
        while let Some(next) = lines.peek() {
            if starts_with_timestamp(next) {
                break;
            }
            inner.push(next.trim().to_string());
            lines.next();
        }
        if let Some(mut p) = parse_outer(udp) {
            p.inner = inner.join("\n");
            packets.push(p);
        }
    }
    packets
}

fn starts_with_timestamp(line: &str) -> bool {
    // `HH:MM:SS.ffffff `; an inner MAC line (`76:41:b2:...`) has ':' where '.' is.
    let b = line.as_bytes();
    b.len() > 9
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
}

/// `    192.168.77.1.58777 > 192.168.77.2.4789: [..] VXLAN, flags [I] (0x08), vni 4101`
fn parse_outer(line: &str) -> Option<VxlanPacket> {
    let (addrs, rest) = line.trim().split_once(": ")?;
    let (src, dst) = addrs.split_once(" > ")?;
    let split_port = |s: &str| -> Option<(Ipv4Addr, u16)> {
        let (ip, port) = s.rsplit_once('.')?;
        Some((ip.parse().ok()?, port.parse().ok()?))
    };
    let (outer_src, _) = split_port(src)?;
    let (outer_dst, dst_port) = split_port(dst)?;
    if !rest.contains("VXLAN") {
        return None;
    }
    let vni = rest.rsplit_once("vni ")?.1.trim().parse().ok()?;
    Some(VxlanPacket {
        outer_src,
        outer_dst,
        dst_port,
        vni,
        inner: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
04:11:40.070154 ae:5c:88:64:0a:4b > 52:07:ff:da:b9:7c, ethertype IPv4 (0x0800), length 148: (tos 0x0, ttl 64, id 26983, offset 0, flags [none], proto UDP (17), length 134)
    192.168.99.1.58777 > 192.168.99.2.4789: [bad udp cksum 0x47d8 -> 0x7cdb!] VXLAN, flags [I] (0x08), vni 4101
76:41:b2:5a:f5:43 > 06:ef:39:90:cf:1b, ethertype IPv4 (0x0800), length 98: (tos 0x0, ttl 64, id 22065, offset 0, flags [DF], proto ICMP (1), length 84)
    10.9.0.1 > 10.9.0.2: ICMP echo request, id 3195, seq 1, length 64
04:11:40.070885 52:07:ff:da:b9:7c > ae:5c:88:64:0a:4b, ethertype IPv4 (0x0800), length 148: (tos 0x0, ttl 64, id 63532, offset 0, flags [none], proto UDP (17), length 134)
    192.168.99.2.58777 > 192.168.99.1.4789: [bad udp cksum 0x47d8 -> 0x7cdb!] VXLAN, flags [I] (0x08), vni 16777215
06:ef:39:90:cf:1b > 76:41:b2:5a:f5:43, ethertype IPv4 (0x0800), length 98: (tos 0x0, ttl 64, id 892, offset 0, flags [none], proto ICMP (1), length 84)
    10.9.0.2 > 10.9.0.1: ICMP echo reply, id 3195, seq 1, length 64
";

    #[test]
    fn parses_tcpdump_vxlan_output() {
        let p = parse_vxlan(SAMPLE);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].outer_src, Ipv4Addr::new(192, 168, 99, 1));
        assert_eq!(p[0].outer_dst, Ipv4Addr::new(192, 168, 99, 2));
        assert_eq!(p[0].dst_port, 4789);
        assert_eq!(p[0].vni, 4101);
        assert!(p[0]
            .inner
            .contains("10.9.0.1 > 10.9.0.2: ICMP echo request"));
        assert_eq!(p[1].vni, 16777215);
        assert!(p[1].inner.contains("ICMP echo reply"));
    }

    #[test]
    fn ignores_non_vxlan_packets() {
        let out = "04:11:40.070154 ae:5c > 52:07, ethertype IPv4 (0x0800), length 60: (...)\n    192.168.77.1.7946 > 192.168.77.2.7946: UDP, length 120\n";
        assert!(parse_vxlan(out).is_empty());
    }
}
