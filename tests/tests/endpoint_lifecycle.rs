//! Removing an endpoint: its interfaces go away locally and every other node forgets it
//! (API and kernel: FDB and neighbour entries), without disturbing other endpoints.

use netd_tests::checks::{pingable, programmed, unprogrammed};
use netd_tests::kernel;
use netd_tests::*;
use serde_json::json;

const VNI: u32 = 4301;

#[test]
fn endpoint_removal_unprograms_it_on_other_nodes() {
    let Some(cluster) = Cluster::new(3) else {
        return;
    };
    cluster.create_network("life", &json!({"subnet": "10.233.0.0/24", "vni": VNI}));
    let eps = attach_on_every_node(&cluster, "life", 1);
    wait_meshed(&cluster, VNI, &eps);
    let (gone, a2, a3) = (&eps[0], &eps[1], &eps[2]);
    let n1 = cluster.node(1);

    let (status, body) = n1.api("DELETE", &format!("/v1/endpoints/{}", gone.ep.id), None);
    assert_eq!(status, 204, "DELETE endpoint: {body}");

    // Locally: the container lost its interfaces and the API forgets the endpoint.
    eventually(CONVERGE, "container interfaces removed", || {
        let links = kernel::links(gone.ns()).map_err(|e| e.to_string())?;
        if links.contains_key("eth0") || links.contains_key("netdgw0") {
            return Err(format!("container still has netd interfaces: {links:?}"));
        }
        Ok(())
    });
    let (status, _) = n1.api("GET", &format!("/v1/endpoints/{}", gone.ep.id), None);
    assert_eq!(status, 404, "GET deleted endpoint");
    assert!(n1.endpoints().iter().all(|e| e.id != gone.ep.id));

    // Remotely: the record and the kernel entries disappear.
    for node in [cluster.node(2), cluster.node(3)] {
        eventually(
            CONVERGE,
            &format!("{} forgets {}", node.name, gone.ep.id),
            || {
                let remote = node.try_remote_endpoints()?;
                if remote.iter().any(|r| r.id == gone.ep.id) {
                    return Err(format!("still listed: {remote:?}"));
                }
                unprogrammed(node, VNI, &gone.ep)
            },
        );
    }

    // Collateral check: the other endpoints are untouched and still reachable.
    programmed(cluster.node(2), VNI, &a3.ep, cluster.node(3).addr).unwrap();
    programmed(cluster.node(3), VNI, &a2.ep, cluster.node(2).addr).unwrap();
    eventually(CONVERGE, "n2 -> n3 ping", || pingable(a2.ns(), a3.ep.ip));

    // DELETE is idempotent, also for ids netd never knew.
    let (status, _) = n1.api("DELETE", &format!("/v1/endpoints/{}", gone.ep.id), None);
    assert_eq!(status, 204, "second DELETE");
    let (status, _) = n1.api("DELETE", "/v1/endpoints/never-existed", None);
    assert_eq!(status, 204, "DELETE unknown id");
}
