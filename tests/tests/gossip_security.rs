//! Gossip is authenticated with the cluster key: a node with another key neither learns
//! nor injects anything; rotating the key across the cluster keeps gossip working.

use netd_tests::checks::programmed;
use netd_tests::kernel;
use netd_tests::*;
use serde_json::json;
use std::time::Duration;

const VNI: u32 = 4701;
/// How long the intruder gets to leak something once the legitimate nodes have
/// converged: many gossip rounds.
const OBSERVATION: Duration = Duration::from_secs(8);

#[test]
fn node_with_another_key_learns_nothing_and_injects_nothing() {
    let Some(cluster) = Cluster::builder(3)
        .node_keys(3, &["an-intruder-secret"])
        .start()
    else {
        return;
    };
    cluster.create_network("sec", &json!({"subnet": "10.237.0.0/24", "vni": VNI}));
    let eps = attach_on_every_node(&cluster, "sec", 1);
    let (n1, n2, n3) = (cluster.node(1), cluster.node(2), cluster.node(3));

    // Positive control: the two nodes sharing the key do exchange endpoints.
    let legit: Vec<Attached> = eps.iter().filter(|a| a.node != 3).cloned().collect();
    for (node, other) in [(n1, &legit[1]), (n2, &legit[0])] {
        eventually(
            CONVERGE,
            &format!("{} learns {}", node.name, other.ep.id),
            || programmed(node, VNI, &other.ep, cluster.node(other.node).addr),
        );
    }
    std::thread::sleep(OBSERVATION);

    let n3_name = &n3.name;
    for node in [n1, n2] {
        let remote = node.remote_endpoints();
        assert!(
            remote
                .iter()
                .all(|r| &r.node != n3_name && r.vtep != n3.addr),
            "{} accepted records from the intruder: {remote:?}",
            node.name
        );
        let peers = node.node_view().peers;
        assert!(
            peers.iter().all(|p| &p.node != n3_name),
            "{} lists the intruder as a peer: {peers:?}",
            node.name
        );
        let fdb = kernel::fdb(&node.sandbox(VNI), &format!("vx-{VNI}")).unwrap();
        assert!(
            fdb.iter()
                .all(|e| e.dst.as_deref() != Some(&n3.addr.to_string())),
            "{} programmed the intruder's VTEP: {fdb:?}",
            node.name
        );
    }
    let remote = n3.remote_endpoints();
    assert!(remote.is_empty(), "intruder learnt {remote:?}");
    let peers = n3.node_view().peers;
    assert!(
        peers.iter().all(|p| p.node != n1.name && p.node != n2.name),
        "intruder lists cluster members: {peers:?}"
    );
    let fdb = kernel::fdb(&n3.sandbox(VNI), &format!("vx-{VNI}")).unwrap();
    assert!(
        fdb.iter().all(|e| e.dst.is_none()),
        "intruder programmed remote VTEPs: {fdb:?}"
    );
}

#[test]
fn key_rotation_keeps_gossip_working() {
    let Some(cluster) = Cluster::new(3) else {
        return;
    };
    cluster.create_network("rot", &json!({"subnet": "10.237.8.0/24", "vni": VNI}));
    let mut eps = vec![];
    let attach_on = |node: usize| {
        let c = cluster.container();
        let ep = cluster.node(node).attach(&c, "rot", "eth0", None);
        Attached {
            node,
            container: c,
            ep,
        }
    };
    // One endpoint per node first, so every node has a sandbox to program.
    for node in 1..=3 {
        eps.push(attach_on(node));
    }
    wait_meshed(&cluster, VNI, &eps);
    let old_tag = cluster.node(1).node_view().gossip_key_tags;
    assert_eq!(old_tag.len(), 1, "one key configured: {old_tag:?}");

    let put_keys = |keys: &[&str]| {
        for node in &cluster.nodes {
            let (status, body) =
                node.api("PUT", "/v1/cluster/keys", Some(&json!({ "keys": keys })));
            assert!(
                status == 200 || status == 204,
                "{}: {status} {body}",
                node.name
            );
        }
    };

    // Step 1: new primary, old still accepted.
    put_keys(&["rotated-secret", DEFAULT_KEY]);
    let tags = cluster.node(1).node_view().gossip_key_tags;
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert_ne!(tags[0], old_tag[0], "primary tag unchanged");
    assert_eq!(tags[1], old_tag[0], "old key not kept as secondary");
    for node in &cluster.nodes {
        let view = node.node_view();
        assert_eq!(view.gossip_key_tags, tags, "{}", node.name);
        let raw = node.api_raw("GET", "/v1/node", None).body;
        assert!(
            !raw.contains("rotated-secret") && !raw.contains(DEFAULT_KEY),
            "key material exposed by GET /v1/node: {raw}"
        );
    }
    // Propagation under [new, old] everywhere.
    eps.push(attach_on(2));
    wait_meshed(&cluster, VNI, &eps);

    // Step 2: old key retired.
    put_keys(&["rotated-secret"]);
    for node in &cluster.nodes {
        assert_eq!(node.node_view().gossip_key_tags, vec![tags[0].clone()]);
    }
    // Propagation under [new] only.
    eps.push(attach_on(3));
    wait_meshed(&cluster, VNI, &eps);
}

const DEFAULT_KEY: &str = netd_tests::cluster::DEFAULT_KEY;
