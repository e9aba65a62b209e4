//! Data-path keys and what is derived from them: per-direction SA keys and SPIs.

use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;

pub const MAX_KEYS: usize = 3;
/// Shortest accepted key (characters): SwarmKit's keys are 16 random bytes.
pub const MIN_KEY_LEN: usize = 16;
/// The AEAD: AES-128-GCM with a 4-byte salt (RFC 4106), 16-byte ICV.
pub const AEAD: &str = "rfc4106(gcm(aes))";
pub const ICV_BITS: u32 = 128;

/// A data-path key as given by the orchestrator; never printed, only its tag.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.tag())
    }
}

impl DataKey {
    pub fn new(secret: &str) -> DataKey {
        DataKey {
            secret: secret.as_bytes().to_vec(),
        }
    }

    /// Identifies the key in views and logs: 8 hex digits of a hash, not the material.
    pub fn tag(&self) -> String {
        let h = Sha256::new()
            .chain_update(b"netd esp key tag v1\0")
            .chain_update(&self.secret)
            .finalize();
        hex(&h[..4])
    }

    fn derive(&self, label: &[u8], src: Ipv4Addr, dst: Ipv4Addr, epoch: u64) -> [u8; 32] {
        let h = Sha256::new()
            .chain_update(label)
            .chain_update(&self.secret)
            .chain_update(src.octets())
            .chain_update(dst.octets());
        // Epoch 0 (a sender that publishes none) derives what netd derived before epochs.
        let h = if epoch == 0 {
            h
        } else {
            h.chain_update(epoch.to_be_bytes())
        };
        h.finalize().into()
    }

    /// The SA of traffic from `src` to `dst` under this key, at the sender's SA epoch (see
    /// `crypto::epoch`): the same on both nodes.
    pub fn sa(&self, src: Ipv4Addr, dst: Ipv4Addr, src_epoch: u64) -> SaParams {
        let k = self.derive(b"netd esp sa key v1\0", src, dst, src_epoch);
        let s = self.derive(b"netd esp spi v1\0", src, dst, src_epoch);
        SaParams {
            src,
            dst,
            spi: spi_from(&s),
            // 16 bytes of AES key + 4 bytes of salt
            aead_key: k[..20].try_into().expect("20 bytes"),
            key_tag: self.tag(),
        }
    }
}

/// SPIs 0-255 are reserved (RFC 4303); netd's always have the top bit set, which also keeps them
/// apart from SPIs an IKE daemon allocates from the low range.
fn spi_from(h: &[u8; 32]) -> u32 {
    u32::from_be_bytes(h[..4].try_into().expect("4 bytes")) | 0x8000_0000
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One direction of one node pair under one key.
#[derive(Clone, PartialEq, Eq)]
pub struct SaParams {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub aead_key: [u8; 20],
    pub key_tag: String,
}

impl std::fmt::Debug for SaParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sa({}->{} spi 0x{:08x} key {})",
            self.src, self.dst, self.spi, self.key_tag
        )
    }
}

impl SaParams {
    pub fn aead_key_hex(&self) -> String {
        format!("0x{}", hex(&self.aead_key))
    }
}

/// Checks an API key list: 1..=3 keys, each long enough, no repeats. Returns (field, reason).
pub fn check_list(keys: &[String]) -> Result<(), (String, String)> {
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err((
            "keys".into(),
            format!("keys: give 1 to {MAX_KEYS} keys, primary first"),
        ));
    }
    for (i, k) in keys.iter().enumerate() {
        if k.len() < MIN_KEY_LEN {
            return Err((
                format!("keys[{i}]"),
                format!("keys[{i}]: each key must be at least {MIN_KEY_LEN} characters"),
            ));
        }
        if keys[..i].contains(k) {
            return Err((
                format!("keys[{i}]"),
                format!("keys[{i}]: repeats an earlier key"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn both_nodes_derive_the_same_sa_per_direction() {
        let k = DataKey::new("0123456789abcdef-key");
        assert_eq!(
            k.sa(A, B, 0),
            DataKey::new("0123456789abcdef-key").sa(A, B, 0)
        );
        let (ab, ba) = (k.sa(A, B, 0), k.sa(B, A, 0));
        assert_ne!(ab.spi, ba.spi);
        assert_ne!(ab.aead_key, ba.aead_key);
        assert!(ab.spi >= 0x8000_0000);
    }

    #[test]
    fn a_new_sender_epoch_gives_a_fresh_sa_for_that_direction_only() {
        let k = DataKey::new("0123456789abcdef-key");
        let (e0, e1, e2) = (k.sa(A, B, 0), k.sa(A, B, 1), k.sa(A, B, 2));
        assert_ne!(e0.spi, e1.spi);
        assert_ne!(e1.spi, e2.spi);
        assert_ne!(e1.aead_key, e2.aead_key);
        assert_eq!(e1, k.sa(A, B, 1));
    }

    #[test]
    fn another_key_gives_another_spi_and_key() {
        let (k1, k2) = (
            DataKey::new("key-one-0123456789"),
            DataKey::new("key-two-0123456789"),
        );
        assert_ne!(k1.sa(A, B, 0).spi, k2.sa(A, B, 0).spi);
        assert_ne!(k1.sa(A, B, 0).aead_key, k2.sa(A, B, 0).aead_key);
        assert_ne!(k1.tag(), k2.tag());
    }

    #[test]
    fn debug_and_tag_never_show_material() {
        let k = DataKey::new("super-secret-material");
        let sa = k.sa(A, B, 0);
        for s in [format!("{k:?}"), format!("{sa:?}"), k.tag()] {
            assert!(!s.contains("super-secret"), "{s}");
            assert!(!s.contains(&sa.aead_key_hex()[2..]), "{s}");
        }
        assert_eq!(sa.aead_key_hex().len(), 2 + 40);
    }

    #[test]
    fn key_lists_are_checked() {
        assert!(check_list(&[]).is_err());
        let k = |s: &str| s.to_string();
        assert_eq!(check_list(&[k("short")]).unwrap_err().0, "keys[0]");
        let long = k("0123456789abcdef");
        assert_eq!(
            check_list(&[long.clone(), long.clone()]).unwrap_err().0,
            "keys[1]"
        );
        assert!(check_list(&[long.clone(), k("fedcba9876543210")]).is_ok());
        assert!(check_list(&vec![long; 4]).is_err());
    }
}
