//! Common test setups: containers attached across nodes, and waiting until every node has
//! learnt (API) and programmed (kernel) every other node's endpoints.

use crate::checks::programmed;
use crate::cluster::{Cluster, Container};
use crate::views::EndpointView;
use crate::wait::{eventually, CONVERGE};

/// A container attached to a network on node `node` (1-based).
#[derive(Debug, Clone)]
pub struct Attached {
    pub node: usize,
    pub container: Container,
    pub ep: EndpointView,
}

impl Attached {
    pub fn ns(&self) -> &str {
        &self.container.name
    }
}

/// Attaches `per_node` new containers on every node to `network` (interface `eth0`).
pub fn attach_on_every_node(cluster: &Cluster, network: &str, per_node: usize) -> Vec<Attached> {
    let mut out = Vec::new();
    for node in &cluster.nodes {
        for _ in 0..per_node {
            let container = cluster.container();
            let ep = node.attach(&container, network, "eth0", None);
            out.push(Attached {
                node: node.index,
                container,
                ep,
            });
        }
    }
    out
}

/// Waits until, on every node, each endpoint of `eps` living on another node is listed
/// by `GET /v1/remote-endpoints` and, if the node hosts one of `eps` itself (a sandbox
/// exists only where a local endpoint does), programmed exactly once in the sandbox of
/// `vni`.
#[track_caller]
pub fn wait_meshed(cluster: &Cluster, vni: u32, eps: &[Attached]) {
    for node in &cluster.nodes {
        let has_sandbox = eps.iter().any(|a| a.node == node.index);
        for a in eps.iter().filter(|a| a.node != node.index) {
            let vtep = cluster.node(a.node).addr;
            eventually(
                CONVERGE,
                &format!("{} learns {}", node.name, a.ep.id),
                || {
                    let remote = node.try_remote_endpoints()?;
                    match remote.iter().find(|r| r.id == a.ep.id) {
                        Some(r) if r.ip == a.ep.ip && r.vtep == vtep && r.mac == a.ep.mac => {}
                        other => return Err(format!("remote view: {other:?}")),
                    }
                    if has_sandbox {
                        programmed(node, vni, &a.ep, vtep)?;
                    }
                    Ok(())
                },
            );
        }
    }
}
