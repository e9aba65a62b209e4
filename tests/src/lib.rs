//! Harness for netd's multi-node integration tests.
//!
//! A [`Cluster`] is a set of network namespaces on this machine wired like a small data
//! centre: an underlay bridge, one namespace per node (each running a real `netd`), an
//! extra underlay host that is not a node ([`Cluster::client_ns`]), and container
//! namespaces ([`Container`]). Tests drive netd through its unix-socket API
//! ([`Node::api`]) and judge it by real traffic (ping, TCP, tcpdump) and by kernel state
//! (FDB, neighbours, links), never by the API alone.
//!
//! Names carry a random per-cluster prefix, so tests run in parallel; `Drop` kills
//! processes and removes namespaces (including netd's `nd-<prefix>*` sandboxes) and
//! temporary files, also when a test panics. Set `NETD_BIN` to test another binary and
//! `NETD_TESTS_KEEP=1` to keep the run directory (configs, state, logs).

pub mod capture;
pub mod checks;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod dns;
pub mod fixtures;
pub mod http;
pub mod ingress;
pub mod inspect;
pub mod kernel;
pub mod lb;
pub mod monitor;
pub mod netns;
pub mod tcp;
pub mod views;
pub mod wait;

pub use cluster::{is_root, netd_bin, Cluster, Container, Node, CLIENT_ADDR};
pub use cmd::{exec_in, exec_in_ok, run, run_ok, Background};
pub use fixtures::{attach_on_every_node, wait_meshed, Attached};
pub use wait::{eventually, eventually_every, wait_until, CONVERGE};
