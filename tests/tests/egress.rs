//! Egress: containers reach hosts outside the overlay through the node's `netd_gw` bridge,
//! masqueraded behind the node's address; `internal` networks get no egress at all.

use netd_tests::checks::pingable;
use netd_tests::kernel;
use netd_tests::tcp::{ip_of, HttpProbe, PROBE_BODY};
use netd_tests::*;
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::Duration;

const PROBE_PORT: u16 = 8080;

fn curl(ns: &str, url: &str) -> Result<String, String> {
    let out = exec_in(ns, &["curl", "-sS", "--max-time", "5", url]).map_err(|e| e.to_string())?;
    if out.success {
        Ok(out.stdout)
    } else {
        Err(format!("curl exit {:?}: {}", out.code, out.stderr.trim()))
    }
}

#[test]
fn containers_reach_outside_masqueraded_behind_their_node() {
    let Some(cluster) = Cluster::new(2) else {
        return;
    };
    cluster.create_network("web", &json!({"subnet": "10.232.0.0/24", "vni": 4201}));
    let eps = attach_on_every_node(&cluster, "web", 1);
    let probe = HttpProbe::start(cluster.client_ns(), CLIENT_ADDR, PROBE_PORT).unwrap();

    for a in &eps {
        let node = cluster.node(a.node);

        // The container got an egress leg: netdgw0 with the advertised address and the
        // default route through it.
        let egress =
            a.ep.egress_address.clone().unwrap_or_else(|| {
                panic!("{}: no egress_address on a non-internal network", a.ep.id)
            });
        let addrs = kernel::ipv4_addrs(a.ns(), "netdgw0").unwrap();
        assert_eq!(addrs, vec![egress.clone()], "{} netdgw0 addresses", a.ns());
        let routes = kernel::routes(a.ns()).unwrap();
        let default = routes.iter().find(|r| r["dst"] == "default");
        assert_eq!(
            default.map(|r| r["dev"].clone()),
            Some(json!("netdgw0")),
            "{} default route: {routes:?}",
            a.ns()
        );

        // The node masquerades with nftables (table ip netd).
        let nft = exec_in_ok(&node.netns, &["nft", "list", "table", "ip", "netd"]).stdout;
        assert!(
            nft.contains("masquerade"),
            "{}: table ip netd:\n{nft}",
            node.name
        );

        // Real traffic: HTTP to the outside host, which must see the node's address.
        let seen_before = probe.peer_ips().len();
        let body = eventually(CONVERGE, &format!("{} curl outside", a.ns()), || {
            curl(a.ns(), &probe.url())
        });
        assert_eq!(body, PROBE_BODY);
        let new_peers: Vec<Ipv4Addr> = probe.peer_ips()[seen_before..].to_vec();
        assert!(!new_peers.is_empty(), "probe recorded no connection");
        assert!(
            new_peers.iter().all(|ip| *ip == node.addr),
            "outside host saw {new_peers:?} from {} (container {}, egress {egress}); \
             expected only the node address {}",
            a.ns(),
            a.ep.ip,
            node.addr
        );
        // Seeing the node's address proves translation only if the source was another one.
        assert_ne!(ip_of(&egress).unwrap(), node.addr);
    }
}

#[test]
fn internal_network_has_no_egress_but_a_working_overlay() {
    let Some(cluster) = Cluster::new(2) else {
        return;
    };
    cluster.create_network(
        "vault",
        &json!({"subnet": "10.232.8.0/24", "vni": 4202, "internal": true}),
    );
    let eps = attach_on_every_node(&cluster, "vault", 1);
    wait_meshed(&cluster, 4202, &eps);
    let probe = HttpProbe::start(cluster.client_ns(), CLIENT_ADDR, PROBE_PORT).unwrap();

    // Positive control: the overlay itself works.
    eventually(CONVERGE, "internal overlay reachable", || {
        pingable(eps[0].ns(), eps[1].ep.ip)
    });

    for a in &eps {
        assert_eq!(a.ep.egress_address, None, "{}: egress on internal", a.ep.id);
        let links = kernel::links(a.ns()).unwrap();
        assert!(
            !links.contains_key("netdgw0"),
            "{}: netdgw0 on internal network: {links:?}",
            a.ns()
        );
        let routes = kernel::routes(a.ns()).unwrap();
        assert!(
            routes.iter().all(|r| r["dst"] != "default"),
            "{}: default route on internal network: {routes:?}",
            a.ns()
        );
        assert!(
            curl(a.ns(), &probe.url()).is_err(),
            "{} reached the outside from an internal network",
            a.ns()
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        probe.peer_ips().is_empty(),
        "outside host saw connections from an internal network: {:?}",
        probe.peer_ips()
    );
}
