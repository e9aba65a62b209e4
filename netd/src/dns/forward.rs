//! Forwarding of names netd does not own to the node's upstream resolvers, with a TTL-honouring
//! cache (Docker has none). The client's query goes out as it came (EDNS included) under a fresh
//! ID, over UDP, and again over TCP when the answer is truncated; each upstream gets a timeout,
//! then the next one is tried; SERVFAIL when all fail. NXDOMAIN passes through. The number of
//! queries in flight is bounded: beyond it, queries are dropped (no amplification of floods).

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    pub dnssec_ok: bool,
}

struct Entry {
    msg: Message,
    stored: Instant,
    ttl: u32,
}

const CACHE_MAX: usize = 10_000;
const CACHE_MAX_TTL: u32 = 3600;

#[derive(Default, Debug)]
pub struct Stats {
    pub forwarded: AtomicU64,
    pub cache_hits: AtomicU64,
    pub failures: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    inflight: Arc<Semaphore>,
    cache: Mutex<HashMap<CacheKey, Entry>>,
    pub stats: Stats,
}

pub enum Outcome {
    Answer(Message),
    /// Every upstream failed or timed out: SERVFAIL.
    Failed,
    /// Over the in-flight bound: no answer at all.
    Dropped,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration, max_inflight: usize) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            cache: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    pub async fn resolve(&self, raw_query: &[u8], key: CacheKey) -> Outcome {
        if let Some(m) = self.cached(&key) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Outcome::Answer(m);
        }
        let Ok(_permit) = self.inflight.try_acquire() else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Outcome::Dropped;
        };
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        for up in &self.upstreams {
            match self.exchange(*up, raw_query).await {
                Some(m)
                    if !matches!(
                        m.metadata.response_code,
                        ResponseCode::ServFail | ResponseCode::Refused
                    ) =>
                {
                    self.store(key, &m);
                    return Outcome::Answer(m);
                }
                other => {
                    tracing::debug!(upstream = %up, ok = other.is_some(), "upstream failed, trying next")
                }
            }
        }
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        Outcome::Failed
    }

    async fn exchange(&self, upstream: SocketAddr, raw: &[u8]) -> Option<Message> {
        let mut q = raw.to_vec();
        let id: u16 = rand::random();
        q[..2].copy_from_slice(&id.to_be_bytes());
        let m = tokio::time::timeout(self.timeout, udp_exchange(upstream, &q, id))
            .await
            .ok()??;
        if !m.metadata.truncation {
            return Some(m);
        }
        tokio::time::timeout(self.timeout, tcp_exchange(upstream, &q, id))
            .await
            .ok()?
    }

    fn cached(&self, key: &CacheKey) -> Option<Message> {
        let cache = self.cache.lock().expect("cache lock");
        let e = cache.get(key)?;
        let age = e.stored.elapsed().as_secs() as u32;
        if age >= e.ttl {
            return None;
        }
        let mut m = e.msg.clone();
        for r in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    fn store(&self, key: CacheKey, m: &Message) {
        let Some(ttl) = cache_ttl(m) else { return };
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, e| e.stored.elapsed().as_secs() < e.ttl as u64);
            if cache.len() >= CACHE_MAX {
                let victim = cache.keys().next().cloned();
                if let Some(v) = victim {
                    cache.remove(&v);
                }
            }
        }
        cache.insert(
            key,
            Entry {
                msg: m.clone(),
                stored: Instant::now(),
                ttl,
            },
        );
    }
}

/// How long an answer may be cached: the smallest answer TTL; for negative answers the SOA's
/// negative TTL (RFC 2308); nothing for other answers.
pub fn cache_ttl(m: &Message) -> Option<u32> {
    let soa_ttl = || {
        m.authorities.iter().find_map(|r: &Record| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
    };
    let ttl = match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => m.answers.iter().map(|r| r.ttl).min(),
        ResponseCode::NoError | ResponseCode::NXDomain => soa_ttl(),
        _ => None,
    }?;
    (ttl > 0).then_some(ttl.min(CACHE_MAX_TTL))
}

async fn udp_exchange(upstream: SocketAddr, q: &[u8], id: u16) -> Option<Message> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = tokio::net::UdpSocket::bind(bind).await.ok()?;
    s.connect(upstream).await.ok()?;
    s.send(q).await.ok()?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = s.recv(&mut buf).await.ok()?;
        if n >= 2 && buf[..2] == id.to_be_bytes() {
            return Message::from_vec(&buf[..n]).ok();
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, q: &[u8], id: u16) -> Option<Message> {
    let mut s = tokio::net::TcpStream::connect(upstream).await.ok()?;
    let mut out = Vec::with_capacity(q.len() + 2);
    out.extend_from_slice(&(q.len() as u16).to_be_bytes());
    out.extend_from_slice(q);
    s.write_all(&out).await.ok()?;
    let len = s.read_u16().await.ok()? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.ok()?;
    if len < 2 || buf[..2] != id.to_be_bytes() {
        return None;
    }
    Message::from_vec(&buf).ok()
}

/// Upstreams from a resolv.conf: its `nameserver` lines, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let ip: std::net::IpAddr = w.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let v = parse_resolv_conf(
            "# x\nnameserver 10.0.0.1\nsearch a\nnameserver ::1\nnameserver bad\n",
        );
        assert_eq!(
            v,
            vec!["10.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
