//! Cluster gossip keys: the primary encrypts, every key (up to 3) decrypts, so keys rotate
//! without a flag day: add the new key everywhere, make it primary, drop the old one.

use chacha20poly1305::{aead::KeyInit, ChaCha20Poly1305, Key};
use sha2::{Digest, Sha256};
use std::sync::RwLock;

pub const MAX_KEYS: usize = 3;

#[derive(Clone)]
pub struct GossipKey {
    /// First 4 bytes of SHA-256 over the derived key: identifies the key on the wire.
    pub tag: [u8; 4],
    pub cipher: ChaCha20Poly1305,
}

impl GossipKey {
    pub fn derive(secret: &str) -> GossipKey {
        let key = Sha256::new()
            .chain_update(b"netd gossip key v1\0")
            .chain_update(secret.as_bytes())
            .finalize();
        let tag_full = Sha256::digest(key);
        GossipKey {
            tag: tag_full[..4].try_into().expect("4 bytes"),
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    pub fn tag_hex(&self) -> String {
        self.tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub struct Keyring {
    keys: RwLock<Vec<GossipKey>>,
}

impl Keyring {
    pub fn new(secrets: &[String]) -> Keyring {
        Keyring {
            keys: RwLock::new(secrets.iter().map(|s| GossipKey::derive(s)).collect()),
        }
    }

    pub fn set(&self, secrets: &[String]) {
        *self.keys.write().expect("keyring lock") =
            secrets.iter().map(|s| GossipKey::derive(s)).collect();
    }

    pub fn primary(&self) -> GossipKey {
        self.keys.read().expect("keyring lock")[0].clone()
    }

    pub fn by_tag(&self, tag: &[u8]) -> Option<GossipKey> {
        self.keys
            .read()
            .expect("keyring lock")
            .iter()
            .find(|k| k.tag == tag)
            .cloned()
    }

    pub fn tags(&self) -> Vec<String> {
        self.keys
            .read()
            .expect("keyring lock")
            .iter()
            .map(GossipKey::tag_hex)
            .collect()
    }
}
