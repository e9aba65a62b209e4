//! IPsec (XFRM) states and policies through iproute2 (`ip xfrm`), in netd's own namespace.
//!
//! Key material goes to `ip -batch -` on stdin, never on a command line (which every local user
//! can read in /proc). Everything netd owns carries `REQID`, so netd never touches SAs or
//! policies of an IKE daemon sharing the node.

use super::cmd::{self, Ns};
use crate::crypto::keys::{SaParams, AEAD, ICV_BITS};
use anyhow::{Context, Result};
use serde::Serialize;
use std::net::Ipv4Addr;

/// Request id of every state and policy netd installs ("nd").
pub const REQID: u32 = 0x6e64;
/// Firewall mark of VXLAN packets of encrypted VNIs (set by `kernel::espfw`); the policies
/// select it, so plain networks between the same nodes stay plain.
pub const MARK: u32 = 0x6e64_0001;
/// Replay window of inbound SAs (packets), with extended sequence numbers.
pub const REPLAY_WINDOW: u32 = 128;

/// An ESP state as the kernel has it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub reqid: u32,
    pub esn: bool,
    /// Highest sequence number sent (outbound SAs), 64 bits with ESN.
    pub oseq: u64,
    /// Highest sequence number received (inbound SAs).
    pub seq: u64,
    pub bytes: u64,
    pub packets: u64,
}

/// A policy netd owns: the node pair it selects and the SPI it sends with (outbound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub dir: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: Option<u16>,
    pub mark: Option<u32>,
    /// SPI of the template; 0 = any of the pair's SAs (inbound).
    pub tmpl_spi: u32,
    pub reqid: u32,
}

/// Whether the kernel can do ESP with AES-GCM: tries to add a state in a fresh, anonymous
/// network namespace (`unshare --net`), which disappears with the process.
pub fn probe_esp_gcm() -> Result<(), String> {
    let key = format!("0x{}", "11".repeat(20));
    let bits = ICV_BITS.to_string();
    cmd::run(
        &Ns::Node,
        "unshare",
        &[
            "--net",
            "ip",
            "xfrm",
            "state",
            "add",
            "src",
            "192.0.2.1",
            "dst",
            "192.0.2.2",
            "proto",
            "esp",
            "spi",
            "0x100",
            "mode",
            "transport",
            "aead",
            AEAD,
            &key,
            &bits,
        ],
    )
    .map(|_| ())
    .map_err(|e| format!("{e:#}"))
}

/// `ip` batch line adding the state of `sa` (ESN, so the sequence number cannot wrap).
pub fn add_state_line(sa: &SaParams) -> String {
    format!(
        "xfrm state add src {} dst {} proto esp spi 0x{:08x} reqid {REQID} mode transport \
         replay-window {REPLAY_WINDOW} flag esn aead {AEAD} {} {ICV_BITS}",
        sa.src,
        sa.dst,
        sa.spi,
        sa.aead_key_hex()
    )
}

pub fn delete_state_line(src: Ipv4Addr, dst: Ipv4Addr, spi: u32) -> String {
    format!("xfrm state delete src {src} dst {dst} proto esp spi 0x{spi:08x}")
}

/// Outbound policy: marked VXLAN (UDP to `port`) from this node to the peer goes through the
/// SA with `spi`. `update` creates or replaces atomically (the key switch of a rotation).
pub fn out_policy_line(me: Ipv4Addr, peer: Ipv4Addr, port: u16, spi: u32) -> String {
    format!(
        "xfrm policy update src {me}/32 dst {peer}/32 proto udp dport {port} dir out \
         mark 0x{MARK:08x} mask 0xffffffff \
         tmpl src {me} dst {peer} proto esp spi 0x{spi:08x} reqid {REQID} mode transport"
    )
}

/// Inbound policy: marked VXLAN from the peer must have come through one of the pair's SAs
/// (any key), or the kernel drops it (XfrmInTmplMismatch / XfrmInNoPols).
pub fn in_policy_line(me: Ipv4Addr, peer: Ipv4Addr, port: u16) -> String {
    format!(
        "xfrm policy update src {peer}/32 dst {me}/32 proto udp dport {port} dir in \
         mark 0x{MARK:08x} mask 0xffffffff \
         tmpl src {peer} dst {me} proto esp reqid {REQID} mode transport"
    )
}

pub fn delete_policy_line(p: &Policy) -> String {
    let dport = p
        .dport
        .map(|d| format!(" proto udp dport {d}"))
        .unwrap_or_default();
    let mark = p
        .mark
        .map(|m| format!(" mark 0x{m:08x} mask 0xffffffff"))
        .unwrap_or_default();
    format!(
        "xfrm policy delete src {}/32 dst {}/32{dport} dir {}{mark}",
        p.src, p.dst, p.dir
    )
}

pub fn apply(lines: &[String]) -> Result<()> {
    cmd::batch(&Ns::Node, "ip", lines).context("programming IPsec (ip xfrm)")
}

/// netd's states (reqid `REQID`) with their counters.
pub fn states() -> Result<Vec<State>> {
    Ok(parse_states(&cmd::run(
        &Ns::Node,
        "ip",
        &["-s", "xfrm", "state", "list"],
    )?)
    .into_iter()
    .filter(|s| s.reqid == REQID)
    .collect())
}

/// netd's policies (templates with reqid `REQID`).
pub fn policies() -> Result<Vec<Policy>> {
    Ok(
        parse_policies(&cmd::run(&Ns::Node, "ip", &["xfrm", "policy", "list"])?)
            .into_iter()
            .filter(|p| p.reqid == REQID)
            .collect(),
    )
}

fn hexnum(s: &str) -> Option<u64> {
    let s = s.trim_end_matches(',');
    let s = s.split('(').next()?;
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Value following `key` among whitespace-separated words.
fn after<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == key)
        .and_then(|i| words.get(i + 1).copied())
}

/// Parses `ip -s xfrm state list`: records start with an unindented `src A dst B` line.
/// Only the fields netd needs are read; key lines are skipped.
pub fn parse_states(text: &str) -> Vec<State> {
    let mut out = Vec::new();
    for rec in records(text) {
        let mut words: Vec<&str> = Vec::new();
        let mut counters: Option<(u64, u64)> = None;
        let mut lines = rec.lines().peekable();
        while let Some(l) = lines.next() {
            let t = l.trim();
            if t.starts_with("aead ") || t.starts_with("enc ") || t.starts_with("auth") {
                continue; // key material: never read further
            }
            if t == "lifetime current:" {
                // "84(bytes), 1(packets)"
                if let Some(n) = lines.next() {
                    let v: Vec<u64> = n
                        .split(',')
                        .filter_map(|p| p.trim().split('(').next()?.parse().ok())
                        .collect();
                    if v.len() == 2 {
                        counters = Some((v[0], v[1]));
                    }
                }
                continue;
            }
            words.extend(t.split_whitespace());
        }
        let get_ip = |k| after(&words, k).and_then(|v| v.parse::<Ipv4Addr>().ok());
        let (Some(src), Some(dst)) = (get_ip("src"), get_ip("dst")) else {
            continue;
        };
        if after(&words, "proto") != Some("esp") {
            continue;
        }
        let hi = |k| after(&words, k).and_then(hexnum).unwrap_or(0);
        let (bytes, packets) = counters.unwrap_or((0, 0));
        let esn = words.contains(&"esn");
        out.push(State {
            src,
            dst,
            spi: after(&words, "spi").and_then(hexnum).unwrap_or(0) as u32,
            reqid: after(&words, "reqid").and_then(hexnum).unwrap_or(0) as u32,
            esn,
            oseq: (hi("oseq-hi") << 32) | hi("oseq"),
            seq: (hi("seq-hi") << 32) | seq_of(&words),
            bytes,
            packets,
        });
    }
    out
}

/// The inbound sequence number: the `seq` of the anti-replay context (not the
/// `replay-window N seq 0x0` header word, which is the configured initial value).
fn seq_of(words: &[&str]) -> u64 {
    let ctx = words.iter().position(|w| *w == "context:").unwrap_or(0);
    after(&words[ctx..], "seq").and_then(hexnum).unwrap_or(0)
}

/// Parses `ip xfrm policy list`.
pub fn parse_policies(text: &str) -> Vec<Policy> {
    let mut out = Vec::new();
    for rec in records(text) {
        let words: Vec<&str> = rec.split_whitespace().collect();
        let net = |k| {
            after(&words, k)
                .and_then(|v| v.split('/').next())
                .and_then(|v| v.parse::<Ipv4Addr>().ok())
        };
        let (Some(src), Some(dst), Some(dir)) = (net("src"), net("dst"), after(&words, "dir"))
        else {
            continue;
        };
        let tmpl = words
            .iter()
            .position(|w| *w == "tmpl")
            .unwrap_or(words.len());
        let (sel, t) = words.split_at(tmpl);
        out.push(Policy {
            dir: dir.to_string(),
            src,
            dst,
            dport: after(sel, "dport").and_then(|v| v.parse().ok()),
            mark: after(sel, "mark")
                .and_then(|v| hexnum(v.split('/').next().unwrap_or(v)))
                .map(|m| m as u32),
            tmpl_spi: after(t, "spi").and_then(hexnum).unwrap_or(0) as u32,
            reqid: after(t, "reqid").and_then(hexnum).unwrap_or(0) as u32,
        });
    }
    out
}

/// Splits iproute2's xfrm listing into records (each starts on an unindented line).
fn records(text: &str) -> Vec<String> {
    let mut recs: Vec<String> = Vec::new();
    for l in text.lines() {
        if !l.starts_with([' ', '\t']) && !l.trim().is_empty() {
            recs.push(String::new());
        }
        if let Some(r) = recs.last_mut() {
            r.push_str(l);
            r.push('\n');
        }
    }
    recs
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ip -s xfrm state list` of iproute2 6.1 on Linux 6.1 (key material replaced).
    const STATES: &str = "src 10.0.0.1 dst 10.0.0.2
\tproto esp spi 0x80001002(2147487746) reqid 28260(0x00006e64) mode transport
\treplay-window 0 seq 0x00000000 flag  (0x00000000)
\taead rfc4106(gcm(aes)) 0x1111111111111111111111111111111111111111 (160 bits) 128
\tanti-replay context: seq 0x0, oseq 0x2a, bitmap 0x00000000
\tsel src 0.0.0.0/0 dst 0.0.0.0/0 uid 0
\tlifetime config:
\t  limit: soft (INF)(bytes), hard (INF)(bytes)
\tlifetime current:
\t  84(bytes), 1(packets)
\t  add 2026-11-23 06:56:53 use -
\tstats:
\t  replay-window 0 replay 0 failed 0
src 10.0.0.2 dst 10.0.0.1
\tproto esp spi 0x80001001(2147487745) reqid 28260(0x00006e64) mode transport
\treplay-window 0 seq 0x00000000 flag esn (0x10000000)
\taead rfc4106(gcm(aes)) 0x1111111111111111111111111111111111111111 (160 bits) 128
\tanti-replay esn context:
\t seq-hi 0x1, seq 0x5, oseq-hi 0x0, oseq 0x0
\t replay_window 128, bitmap-length 4
\t 00000000 00000000 00000000 00000000 
\tsel src 0.0.0.0/0 dst 0.0.0.0/0 uid 0
\tlifetime current:
\t  1000(bytes), 10(packets)
";

    #[test]
    fn states_parse_without_reading_keys() {
        let s = parse_states(STATES);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].spi, s[0].reqid, s[0].esn),
            (0x8000_1002, REQID, false)
        );
        assert_eq!((s[0].oseq, s[0].bytes, s[0].packets), (0x2a, 84, 1));
        assert_eq!(
            (s[1].src, s[1].esn, s[1].seq),
            ("10.0.0.2".parse().unwrap(), true, (1 << 32) | 5)
        );
        assert_eq!(s[1].packets, 10);
    }

    #[test]
    fn policies_parse() {
        let text = "src 10.0.0.2/32 dst 10.0.0.1/32 proto udp dport 4789 
\tdir in priority 0 ptype main 
\tmark 0x6e640001/0xffffffff 
\ttmpl src 10.0.0.2 dst 10.0.0.1
\t\tproto esp reqid 28260 mode transport
src 10.0.0.1/32 dst 10.0.0.2/32 proto udp dport 4789 
\tdir out priority 0 ptype main 
\tmark 0x6e640001/0xffffffff 
\ttmpl src 10.0.0.1 dst 10.0.0.2
\t\tproto esp spi 0x80001001 reqid 28260 mode transport
src 0.0.0.0/0 dst 0.0.0.0/0 
\tsocket in priority 0 ptype main 
";
        let p = parse_policies(text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            (p[0].dir.as_str(), p[0].tmpl_spi, p[0].dport),
            ("in", 0, Some(4789))
        );
        assert_eq!(
            (p[1].dir.as_str(), p[1].tmpl_spi, p[1].mark),
            ("out", 0x8000_1001, Some(MARK))
        );
        assert_eq!(p[1].reqid, REQID);
    }

    #[test]
    fn key_material_only_in_add_lines() {
        let sa = crate::crypto::keys::DataKey::new("0123456789abcdef").sa(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            0,
        );
        assert!(add_state_line(&sa).contains(&sa.aead_key_hex()));
        assert!(add_state_line(&sa).contains("flag esn"));
        assert!(!delete_state_line(sa.src, sa.dst, sa.spi).contains(&sa.aead_key_hex()));
    }
}
