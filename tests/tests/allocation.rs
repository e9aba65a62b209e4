//! Concurrent address allocation: every node hands out addresses at the same time (many
//! requests in flight per node); no address may be given twice across the cluster.

use netd_tests::checks::pingable;
use netd_tests::kernel;
use netd_tests::views::EndpointView;
use netd_tests::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

const VNI: u32 = 4601;
const PER_NODE: usize = 20;

#[test]
fn concurrent_allocation_never_hands_out_an_address_twice() {
    let Some(cluster) = Cluster::new(3) else {
        return;
    };
    cluster.create_network("alloc", &json!({"subnet": "10.236.0.0/24", "vni": VNI}));
    let gateway = cluster
        .node(1)
        .get::<netd_tests::views::NetworkView>("/v1/networks/alloc")
        .effective_gateway;
    let containers: Vec<(usize, Container)> = cluster
        .nodes
        .iter()
        .flat_map(|n| (0..PER_NODE).map(move |_| n.index))
        .map(|i| (i, cluster.container()))
        .collect();

    // All attaches in flight at once: PER_NODE concurrent requests on each node.
    let results: Vec<(usize, Container, u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .map(|(i, c)| {
                let node = cluster.node(*i);
                s.spawn(move || {
                    let (status, body) = node.try_attach(c, "alloc", "eth0", None);
                    (*i, c.clone(), status, body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut owner: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut eps: Vec<Attached> = Vec::new();
    for (node, container, status, body) in results {
        assert!(
            status == 200 || status == 201,
            "attach {} on n{node}: {status} {body}",
            container.name
        );
        let ep: EndpointView = serde_json::from_value(body).unwrap();
        let octets = ep.ip.octets();
        assert_eq!(&octets[..3], &[10, 236, 0], "{} outside the subnet", ep.ip);
        assert!(
            octets[3] != 0 && octets[3] != 255 && ep.ip != gateway,
            "{}: reserved address {}",
            ep.id,
            ep.ip
        );
        if let Some(prev) = owner.insert(ep.ip, ep.id.clone()) {
            panic!("{} handed out twice: {prev} and {}", ep.ip, ep.id);
        }
        // The kernel agrees with the API.
        let addrs = kernel::ipv4_addrs(&container.name, "eth0").unwrap();
        assert_eq!(addrs, vec![ep.address.clone()], "{} eth0", container.name);
        eps.push(Attached {
            node,
            container,
            ep,
        });
    }
    assert_eq!(owner.len(), 3 * PER_NODE);

    // Gossip agrees too: each node learns exactly the others' endpoints with the same
    // addresses, and the union of all views has no address twice.
    for node in &cluster.nodes {
        let want: BTreeMap<String, Ipv4Addr> = eps
            .iter()
            .filter(|a| a.node != node.index)
            .map(|a| (a.ep.id.clone(), a.ep.ip))
            .collect();
        eventually(CONVERGE, &format!("{} learns all", node.name), || {
            let remote = node.try_remote_endpoints()?;
            let have: BTreeMap<String, Ipv4Addr> =
                remote.iter().map(|r| (r.id.clone(), r.ip)).collect();
            if remote.len() == want.len() && have == want {
                Ok(())
            } else {
                Err(format!(
                    "{} remote entries, diff from expected",
                    remote.len()
                ))
            }
        });
        let locals: BTreeSet<Ipv4Addr> = node.endpoints().iter().map(|e| e.ip).collect();
        assert_eq!(locals.len(), PER_NODE, "{} local endpoints", node.name);
    }

    // Addresses are usable: a few cross-node pings.
    let first = |n: usize| eps.iter().find(|a| a.node == n).unwrap();
    for (from, to) in [(1, 2), (2, 3), (3, 1)] {
        eventually(CONVERGE, &format!("n{from} -> n{to} ping"), || {
            pingable(first(from).ns(), first(to).ep.ip)
        });
    }
}
