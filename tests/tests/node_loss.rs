//! Node loss: when netd on a node dies, the other nodes drop its endpoints within the
//! documented 5 s, and when it comes back everything re-converges without duplicates.

use netd_tests::checks::{pingable, unprogrammed};
use netd_tests::views::RemoteEndpointView;
use netd_tests::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const VNI: u32 = 4501;
/// The contract: remote records of a dead node disappear within 5 s.
const LOSS_BOUND: Duration = Duration::from_secs(5);

/// Ids of the endpoints of `eps` that live on nodes other than `node`.
fn expected_remote(eps: &[Attached], node: usize) -> BTreeSet<String> {
    eps.iter()
        .filter(|a| a.node != node)
        .map(|a| a.ep.id.clone())
        .collect()
}

/// Ok when `remote` lists exactly `expected`, each once.
fn exactly(remote: &[RemoteEndpointView], expected: &BTreeSet<String>) -> Result<(), String> {
    let ids: Vec<&String> = remote.iter().map(|r| &r.id).collect();
    let unique: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    if ids.len() != unique.len() {
        return Err(format!("duplicates: {ids:?}"));
    }
    if &unique != expected {
        return Err(format!("have {unique:?}, want {expected:?}"));
    }
    Ok(())
}

#[test]
fn node_loss_drops_its_endpoints_within_5s_and_rejoin_converges() {
    let Some(cluster) = Cluster::new(3) else {
        return;
    };
    cluster.create_network("loss", &json!({"subnet": "10.235.0.0/24", "vni": VNI}));
    let eps = attach_on_every_node(&cluster, "loss", 2);
    wait_meshed(&cluster, VNI, &eps);
    let n3 = cluster.node(3);
    let lost: Vec<&Attached> = eps.iter().filter(|a| a.node == 3).collect();

    // Crash n3's netd and time how long each survivor keeps its records.
    n3.kill9();
    let killed = Instant::now();
    let survivors = [cluster.node(1), cluster.node(2)];
    let mut took = [None; 2];
    while took.iter().any(Option::is_none) && killed.elapsed() < LOSS_BOUND * 3 {
        for (i, node) in survivors.iter().enumerate() {
            if took[i].is_none() {
                if let Ok(remote) = node.try_remote_endpoints() {
                    if remote.iter().all(|r| r.node != n3.name) {
                        took[i] = Some(killed.elapsed());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (node, t) in survivors.iter().zip(took) {
        println!("{}: records of {} gone after {t:?}", node.name, n3.name);
        let t = t.unwrap_or_else(|| panic!("{} kept {}'s records for 15 s", node.name, n3.name));
        assert!(
            t <= LOSS_BOUND,
            "{} dropped {}'s records after {t:?} (> {LOSS_BOUND:?})",
            node.name,
            n3.name
        );
    }

    // The kernel follows: no FDB/neighbour entries left for n3's endpoints...
    for node in survivors {
        for a in &lost {
            let (_, t) = eventually_every(
                CONVERGE,
                Duration::from_millis(50),
                &format!("{} unprograms {}", node.name, a.ep.id),
                || unprogrammed(node, VNI, &a.ep),
            );
            println!(
                "{}: kernel entries for {} gone by {t:?}",
                node.name, a.ep.id
            );
        }
        // ...n3 is reported dead or forgotten...
        eventually(
            CONVERGE,
            &format!("{} sees {} down", node.name, n3.name),
            || {
                let view = node.node_view();
                match view.peers.iter().find(|p| p.node == n3.name) {
                    Some(p) if p.live => Err(format!("{p:?}")),
                    _ => Ok(()),
                }
            },
        );
        // ...and nothing else was dropped along the way.
        let others = expected_remote(&eps, node.index)
            .into_iter()
            .filter(|id| !lost.iter().any(|a| &a.ep.id == id))
            .collect();
        exactly(&node.remote_endpoints(), &others).unwrap();
    }

    // n3 comes back: everyone re-converges, nobody lists anything twice.
    let back = Instant::now();
    n3.restart();
    let local: BTreeSet<String> = n3.endpoints().into_iter().map(|e| e.id).collect();
    let want_local: BTreeSet<String> = lost.iter().map(|a| a.ep.id.clone()).collect();
    assert_eq!(local, want_local, "n3's own endpoints after restart");
    for node in &cluster.nodes {
        let want = expected_remote(&eps, node.index);
        eventually(CONVERGE, &format!("{} re-converges", node.name), || {
            exactly(&node.try_remote_endpoints()?, &want)
        });
    }
    println!("re-converged {:?} after restart", back.elapsed());
    wait_meshed(&cluster, VNI, &eps);
    for node in survivors {
        eventually(
            CONVERGE,
            &format!("{} sees {} live", node.name, n3.name),
            || {
                let view = node.node_view();
                match view.peers.iter().find(|p| p.node == n3.name) {
                    Some(p) if p.live => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        );
    }
    let from = eps.iter().find(|a| a.node == 1).unwrap();
    eventually(CONVERGE, "n1 -> n3 ping after rejoin", || {
        pingable(from.ns(), lost[0].ep.ip)
    });
}
