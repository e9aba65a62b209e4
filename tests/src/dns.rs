//! DNS probes from inside a container: `dig` against the embedded resolver, the libc resolver
//! via `getent`, and raw UDP packets for malformed input.

use crate::cmd::exec_in;
use crate::netns::in_netns;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub const RESOLVER: &str = "127.0.0.11";

/// What `dig` saw: the RCODE and the answer records' data (A addresses, PTR names...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dig {
    pub status: String,
    pub answers: Vec<String>,
    pub flags: String,
}

impl Dig {
    pub fn ips(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.answers.iter().filter_map(|a| a.parse().ok()).collect();
        v.sort();
        v
    }
}

/// `dig @127.0.0.11 <args>` in `ns` (UDP unless `+tcp` is among the args).
pub fn dig(ns: &str, args: &[&str]) -> Result<Dig, String> {
    let mut cmd = vec![
        "dig",
        "+time=2",
        "+tries=1",
        "+nocmd",
        "+noall",
        "+comments",
        "+answer",
    ];
    let server = format!("@{RESOLVER}");
    cmd.push(&server);
    cmd.extend_from_slice(args);
    let out = exec_in(ns, &cmd).map_err(|e| format!("{e:#}"))?;
    parse_dig(&out.stdout)
        .ok_or_else(|| format!("no answer from dig {args:?}: {}{}", out.stdout, out.stderr))
}

pub fn parse_dig(text: &str) -> Option<Dig> {
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))?
        .split(',')
        .next()?
        .trim()
        .to_string();
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .and_then(|l| l.split(';').next())
        .unwrap_or_default()
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    Some(Dig {
        status,
        answers,
        flags,
    })
}

/// `getent hosts NAME` in `ns` (libc resolver, through the container's resolv.conf).
pub fn getent(ns: &str, name: &str) -> Vec<Ipv4Addr> {
    exec_in(ns, &["getent", "ahostsv4", name])
        .map(|o| {
            let mut v: Vec<Ipv4Addr> = o
                .stdout
                .lines()
                .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                .collect();
            v.sort();
            v.dedup();
            v
        })
        .unwrap_or_default()
}

/// Sends raw datagrams to 127.0.0.11:53 from inside `ns`; returns each reply (None: no reply
/// within `wait`).
pub fn raw_udp(ns: &str, packets: Vec<Vec<u8>>, wait: Duration) -> Vec<Option<Vec<u8>>> {
    in_netns(ns, move || {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(wait)).expect("timeout");
        let to: SocketAddr = format!("{RESOLVER}:53").parse().expect("addr");
        packets
            .into_iter()
            .map(|p| {
                s.send_to(&p, to).expect("send");
                let mut buf = [0u8; 4096];
                s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
            })
            .collect()
    })
    .expect("in netns")
}

/// A minimal query: header (id, flags with opcode, counts) + question.
pub fn query(id: u16, opcode: u8, qdcount: u16, name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.push((opcode & 0xf) << 3 | 0x01); // RD
    p.push(0);
    p.extend_from_slice(&qdcount.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for _ in 0..qdcount.max(1) {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&qclass.to_be_bytes());
    }
    p
}

/// RCODE of a reply.
pub fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dig_output() {
        let out = ";; Got answer:\n;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n;; flags: qr aa rd ra; QUERY: 1, ANSWER: 2\n\nweb.\t5\tIN\tA\t10.0.0.3\nweb.\t5\tIN\tA\t10.0.0.2\n";
        let d = parse_dig(out).unwrap();
        assert_eq!(d.status, "NOERROR");
        assert_eq!(d.flags, "qr aa rd ra");
        assert_eq!(
            d.ips(),
            vec![
                "10.0.0.2".parse::<Ipv4Addr>().unwrap(),
                "10.0.0.3".parse().unwrap()
            ]
        );
    }

    #[test]
    fn builds_queries() {
        let q = query(7, 0, 1, "a.b", 1, 1);
        assert_eq!(&q[..2], &[0, 7]);
        assert_eq!(&q[12..], &[1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
    }
}
