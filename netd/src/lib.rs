//! netd as a library: the daemon's modules, for the binary, the fuzz targets and benchmarks.

pub mod api;
#[cfg(test)]
pub mod bench_util;
pub mod check;
pub mod client;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod dns;
pub mod events;
pub mod gossip;
pub mod ingress;
pub mod inspect;
pub mod ipam;
pub mod kernel;
pub mod lb;
pub mod reconcile;
pub mod state;
pub mod validate;
pub mod views;
pub mod watch;
