//! Encrypted overlay networks (IPsec): data-path keys from the orchestrator, the security
//! associations derived from them, and whether this kernel can do it at all.
//!
//! VXLAN traffic of an encrypted network's VNI between two nodes is ESP in transport mode with
//! rfc4106(gcm(aes)). Keys (up to 3, primary first) come through the API; every node derives the
//! same SA key and SPI for a (key, source node, destination node) triple, so no negotiation is
//! needed. Receive with every key, send with the primary.

pub mod epoch;
pub mod keys;
pub mod ops;
pub mod plan;
pub mod support;
pub mod view;
