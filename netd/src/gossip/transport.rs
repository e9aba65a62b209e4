//! Chitchat over UDP, sealed with the cluster key (ChaCha20-Poly1305).
//!
//! Datagram: `"ND" ver(1) key_tag(4) msg_id(4) frag(1) nfrags(1) nonce(12) ciphertext+tag(16)`.
//! The header before the nonce is authenticated as associated data. Chitchat fills datagrams up
//! to the UDP maximum, so a sealed message may need two datagrams: they are reassembled in a
//! small bounded table. A datagram that does not authenticate is dropped and counted.

use super::keyring::Keyring;
use anyhow::{Context, Result};
use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::Nonce;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use rand::RngCore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 2] = b"ND";
const VERSION: u8 = 1;
const HEADER: usize = 2 + 1 + 4 + 4 + 1 + 1;
const NONCE: usize = 12;
const TAG: usize = 16;
const MAX_DATAGRAM: usize = 65_507;
const MAX_CHUNK: usize = MAX_DATAGRAM - HEADER - NONCE - TAG;
const MAX_PENDING: usize = 64;
const PENDING_TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Stats {
    pub rejected: AtomicU64,
    pub accepted: AtomicU64,
}

pub struct SealedTransport {
    pub keyring: Arc<Keyring>,
    pub stats: Arc<Stats>,
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("binding gossip socket {listen_addr}/udp"))?;
        Ok(Box::new(SealedSocket {
            socket,
            keyring: self.keyring.clone(),
            stats: self.stats.clone(),
            buf: vec![0; MAX_DATAGRAM],
            pending: HashMap::new(),
            next_id: rand::random(),
        }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    keyring: Arc<Keyring>,
    stats: Arc<Stats>,
    buf: Vec<u8>,
    pending: HashMap<(SocketAddr, u32), Pending>,
    next_id: u32,
}

struct Pending {
    since: Instant,
    parts: Vec<Option<Vec<u8>>>,
}

/// Seals `plain` into one or more datagrams.
pub fn seal(keyring: &Keyring, msg_id: u32, plain: &[u8]) -> Vec<Vec<u8>> {
    let key = keyring.primary();
    let chunks: Vec<&[u8]> = if plain.is_empty() {
        vec![plain]
    } else {
        plain.chunks(MAX_CHUNK).collect()
    };
    let n = chunks.len() as u8;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut out = Vec::with_capacity(HEADER + NONCE + chunk.len() + TAG);
            out.extend_from_slice(MAGIC);
            out.push(VERSION);
            out.extend_from_slice(&key.tag);
            out.extend_from_slice(&msg_id.to_be_bytes());
            out.push(i as u8);
            out.push(n);
            let mut nonce = [0u8; NONCE];
            rand::thread_rng().fill_bytes(&mut nonce);
            let ct = key
                .cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: chunk,
                        aad: &out[..HEADER],
                    },
                )
                .expect("encryption of a bounded buffer cannot fail");
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&ct);
            out
        })
        .collect()
}

/// One opened datagram: `(msg_id, frag, nfrags, plaintext)`.
pub fn open(keyring: &Keyring, d: &[u8]) -> Option<(u32, u8, u8, Vec<u8>)> {
    if d.len() < HEADER + NONCE + TAG || &d[..2] != MAGIC || d[2] != VERSION {
        return None;
    }
    let key = keyring.by_tag(&d[3..7])?;
    let msg_id = u32::from_be_bytes(d[7..11].try_into().ok()?);
    let (frag, nfrags) = (d[11], d[12]);
    if nfrags == 0 || frag >= nfrags {
        return None;
    }
    let nonce = &d[HEADER..HEADER + NONCE];
    let plain = key
        .cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &d[HEADER + NONCE..],
                aad: &d[..HEADER],
            },
        )
        .ok()?;
    Some((msg_id, frag, nfrags, plain))
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> Result<()> {
        let plain = msg.serialize_to_vec();
        self.next_id = self.next_id.wrapping_add(1);
        for d in seal(&self.keyring, self.next_id, &plain) {
            if let Err(e) = self.socket.send_to(&d, to).await {
                // A peer that is down must not break the gossip loop.
                tracing::debug!(%to, error = %e, "gossip send failed");
            }
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (n, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "gossip recv error");
                    continue;
                }
            };
            let Some((id, frag, nfrags, plain)) = open(&self.keyring, &self.buf[..n]) else {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "dropping gossip datagram that does not authenticate");
                continue;
            };
            let whole = if nfrags == 1 {
                plain
            } else {
                match self.reassemble(from, id, frag, nfrags, plain) {
                    Some(w) => w,
                    None => continue,
                }
            };
            match ChitchatMessage::deserialize(&mut &whole[..]) {
                Ok(msg) => {
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    return Ok((from, msg));
                }
                Err(e) => tracing::warn!(%from, error = %e, "undecodable gossip message"),
            }
        }
    }
}

impl SealedSocket {
    fn reassemble(
        &mut self,
        from: SocketAddr,
        id: u32,
        frag: u8,
        nfrags: u8,
        part: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.pending
            .retain(|_, p| now.duration_since(p.since) < PENDING_TTL);
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&(from, id)) {
            return None;
        }
        let p = self.pending.entry((from, id)).or_insert_with(|| Pending {
            since: now,
            parts: vec![None; nfrags as usize],
        });
        if p.parts.len() != nfrags as usize {
            return None;
        }
        p.parts[frag as usize] = Some(part);
        if p.parts.iter().all(Option::is_some) {
            let p = self.pending.remove(&(from, id))?;
            Some(p.parts.into_iter().flatten().flatten().collect())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_key_fails() {
        let k1 = Keyring::new(&["cluster-secret-1".into()]);
        let k2 = Keyring::new(&["another-secret".into()]);
        let d = seal(&k1, 7, b"hello");
        assert_eq!(d.len(), 1);
        assert!(
            !d[0].windows(5).any(|w| w == b"hello"),
            "plaintext visible on the wire"
        );
        assert_eq!(open(&k1, &d[0]).unwrap(), (7, 0, 1, b"hello".to_vec()));
        assert!(open(&k2, &d[0]).is_none());
        // tampering breaks authentication, header included
        let mut t = d[0].clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(open(&k1, &t).is_none());
        let mut h = d[0].clone();
        h[12] = 2;
        assert!(open(&k1, &h).is_none());
    }

    #[test]
    fn rotation_accepts_old_key_while_listed() {
        let old = Keyring::new(&["old-secret-x".into()]);
        let both = Keyring::new(&["new-secret-y".into(), "old-secret-x".into()]);
        let d = seal(&old, 1, b"x");
        assert!(open(&both, &d[0]).is_some());
        let d = seal(&both, 2, b"y");
        assert!(open(&old, &d[0]).is_none(), "primary must be the new key");
    }

    #[test]
    fn large_messages_are_fragmented() {
        let k = Keyring::new(&["cluster-secret-1".into()]);
        let big = vec![7u8; MAX_DATAGRAM];
        let d = seal(&k, 9, &big);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|x| x.len() <= MAX_DATAGRAM));
        let parts: Vec<_> = d.iter().map(|x| open(&k, x).unwrap()).collect();
        assert_eq!(parts[0].2, 2);
        let joined: Vec<u8> = parts.into_iter().flat_map(|p| p.3).collect();
        assert_eq!(joined, big);
    }
}
