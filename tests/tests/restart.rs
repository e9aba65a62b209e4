//! netd is control plane only: killing it (-9) and starting it again must leave the data
//! path alone: established TCP keeps flowing (also while netd is down), and no link is
//! recreated (ifindex unchanged everywhere netd touches).

use netd_tests::checks::{link_snapshot, pingable, programmed};
use netd_tests::monitor::EntryMonitor;
use netd_tests::tcp::{connect_in, echo_roundtrip, EchoServer};
use netd_tests::*;
use serde_json::json;
use std::time::Duration;

const VNI: u32 = 4401;
const ECHO_PORT: u16 = 7001;
/// How long to let the restarted daemons run before judging: past netd's start-up grace
/// for kernel entries (5 s by default) plus several reconcile passes (2 s in the test
/// config), so a restarted netd has had every chance to "repair" (and so break) something.
const SETTLE: Duration = Duration::from_millis(5000 + 3 * 2000 + 500);

#[test]
fn kill9_and_restart_keep_established_tcp_and_ifindexes() {
    let Some(cluster) = Cluster::new(2) else {
        return;
    };
    cluster.create_network("steady", &json!({"subnet": "10.234.0.0/24", "vni": VNI}));
    let eps = attach_on_every_node(&cluster, "steady", 1);
    wait_meshed(&cluster, VNI, &eps);
    let (a, b) = (&eps[0], &eps[1]);
    eventually(CONVERGE, "a -> b ping", || pingable(a.ns(), b.ep.ip));

    let _server = EchoServer::start(b.ns(), b.ep.ip, ECHO_PORT).unwrap();
    let mut conn = connect_in(a.ns(), b.ep.ip, ECHO_PORT).unwrap();
    echo_roundtrip(&mut conn, b"before the crash").unwrap();

    let (n1, n2) = (cluster.node(1), cluster.node(2));
    let namespaces = [
        n1.netns.as_str(),
        n2.netns.as_str(),
        &n1.sandbox(VNI),
        &n2.sandbox(VNI),
        a.ns(),
        b.ns(),
    ];
    let links_before = link_snapshot(&namespaces);
    let locals_before: Vec<_> = [n1, n2].iter().map(|n| n.endpoints()).collect();

    // Watch each side's entries for the other across the crash and restart: a deletion,
    // even one repaired a moment later, is a data-path disturbance the echo alone could
    // miss (TCP retransmits over a short gap).
    let dev = format!("vx-{VNI}");
    let monitors: Vec<(EntryMonitor, String, String)> = [(n1, b), (n2, a)]
        .iter()
        .flat_map(|(node, remote)| {
            let (sandbox, tag) = (node.sandbox(VNI), format!("monitor-{}", node.name));
            let fdb = EntryMonitor::fdb(&sandbox, &dev, &cluster.dir, &format!("{tag}-fdb"));
            let neigh = EntryMonitor::neigh(&sandbox, &dev, &cluster.dir, &format!("{tag}-neigh"));
            [
                (fdb.unwrap(), remote.ep.mac.clone(), node.name.clone()),
                (
                    neigh.unwrap(),
                    format!("{} ", remote.ep.ip),
                    node.name.clone(),
                ),
            ]
        })
        .collect();

    for node in [n1, n2] {
        node.kill9();
    }
    echo_roundtrip(&mut conn, b"while netd is dead").unwrap();

    for node in [n1, n2] {
        node.restart();
    }
    std::thread::sleep(SETTLE);

    echo_roundtrip(&mut conn, b"after the restart").unwrap();
    let payload: Vec<u8> = (0..128 * 1024).map(|i| (i % 253) as u8).collect();
    echo_roundtrip(&mut conn, &payload).unwrap();

    for (monitor, needle, node) in monitors {
        let deletions = monitor.deletions_of(&needle);
        assert!(
            deletions.is_empty(),
            "{node}: remote entry removed during crash/restart: {deletions:?}"
        );
    }

    let links_after = link_snapshot(&namespaces);
    assert_eq!(
        links_before, links_after,
        "links (namespace, ifname) -> ifindex changed across kill -9 + restart"
    );

    // netd recovered its state: same local endpoints, remote ones programmed exactly once.
    for (node, before) in [n1, n2].iter().zip(&locals_before) {
        let after = node.endpoints();
        let key = |v: &Vec<netd_tests::views::EndpointView>| {
            let mut k: Vec<_> = v
                .iter()
                .map(|e| (e.id.clone(), e.ip, e.mac.clone()))
                .collect();
            k.sort();
            k
        };
        assert_eq!(key(before), key(&after), "{} local endpoints", node.name);
    }
    eventually(CONVERGE, "n1 programs b", || {
        programmed(n1, VNI, &b.ep, n2.addr)
    });
    eventually(CONVERGE, "n2 programs a", || {
        programmed(n2, VNI, &a.ep, n1.addr)
    });

    // A new connection works too.
    let mut fresh = connect_in(a.ns(), b.ep.ip, ECHO_PORT).unwrap();
    echo_roundtrip(&mut fresh, b"new connection").unwrap();
    echo_roundtrip(&mut conn, b"old connection, last words").unwrap();
}

#[test]
fn graceful_restart_keeps_state_and_reconverges() {
    let Some(cluster) = Cluster::new(2) else {
        return;
    };
    cluster.create_network("calm", &json!({"subnet": "10.234.8.0/24", "vni": VNI + 1}));
    let eps = attach_on_every_node(&cluster, "calm", 1);
    wait_meshed(&cluster, VNI + 1, &eps);
    let n1 = cluster.node(1);
    let before: Vec<_> = n1
        .endpoints()
        .into_iter()
        .map(|e| (e.id, e.ip, e.mac))
        .collect();
    let networks_before: serde_json::Value = n1.get("/v1/networks/calm");

    assert!(n1.is_running());
    n1.restart(); // SIGTERM, then start again with the same state_dir

    let after: Vec<_> = n1
        .endpoints()
        .into_iter()
        .map(|e| (e.id, e.ip, e.mac))
        .collect();
    assert_eq!(before, after, "local endpoints after a graceful restart");
    let networks_after: serde_json::Value = n1.get("/v1/networks/calm");
    assert_eq!(networks_before["subnet"], networks_after["subnet"]);
    assert_eq!(networks_before["vni"], networks_after["vni"]);
    wait_meshed(&cluster, VNI + 1, &eps);
    eventually(CONVERGE, "overlay after graceful restart", || {
        pingable(eps[0].ns(), eps[1].ep.ip)
    });
    assert!(n1.stop(), "netd did not exit within 10 s of SIGTERM");
    assert!(!n1.is_running());
}
