//! Three nodes, two overlay networks ("red" and "blue"), one container per node on each:
//! cross-node reachability (ICMP and TCP), what the underlay carries, and isolation.

use netd_tests::capture::{parse_vxlan, Capture};
use netd_tests::checks::{ping, pingable};
use netd_tests::tcp::{connect_in, echo_roundtrip, EchoServer};
use netd_tests::*;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

const RED_VNI: u32 = 4101;
const BLUE_VNI: u32 = 4102;
const RED_SUBNET: &str = "10.231.1.0/24";
const BLUE_SUBNET: &str = "10.231.2.0/24";

struct TwoNetworks {
    cluster: Cluster,
    /// Index i = container on node i+1.
    red: Vec<Attached>,
    blue: Vec<Attached>,
}

fn two_networks() -> Option<TwoNetworks> {
    let cluster = Cluster::new(3)?;
    cluster.create_network("red", &json!({"subnet": RED_SUBNET, "vni": RED_VNI}));
    cluster.create_network("blue", &json!({"subnet": BLUE_SUBNET, "vni": BLUE_VNI}));
    let red = attach_on_every_node(&cluster, "red", 1);
    let blue = attach_on_every_node(&cluster, "blue", 1);
    wait_meshed(&cluster, RED_VNI, &red);
    wait_meshed(&cluster, BLUE_VNI, &blue);
    Some(TwoNetworks { cluster, red, blue })
}

#[test]
fn containers_on_different_nodes_ping_and_exchange_tcp() {
    let Some(t) = two_networks() else { return };

    // The API's view of the sandbox matches what exists in the kernel.
    for node in &t.cluster.nodes {
        let net: Value = node.get("/v1/networks/red");
        assert_eq!(
            net["sandbox"],
            json!(node.sandbox(RED_VNI)),
            "{}",
            node.name
        );
        assert!(
            netd_tests::netns::exists(&node.sandbox(RED_VNI)),
            "missing sandbox {}",
            node.sandbox(RED_VNI)
        );
    }

    // The container side carries what the endpoint view promises.
    for a in t.red.iter().chain(&t.blue) {
        let addrs = netd_tests::kernel::ipv4_addrs(a.ns(), "eth0").unwrap();
        assert_eq!(addrs, vec![a.ep.address.clone()], "{} eth0", a.ns());
    }

    // ICMP between every pair of nodes, both networks.
    for net in [&t.red, &t.blue] {
        for from in net.iter() {
            for to in net.iter().filter(|to| to.node != from.node) {
                eventually(
                    CONVERGE,
                    &format!("n{} -> n{} ping", from.node, to.node),
                    || pingable(from.ns(), to.ep.ip),
                );
            }
        }
    }

    // TCP bulk transfer across nodes with iperf3 (red, n1 -> n2).
    let (client, server) = (&t.red[0], &t.red[1]);
    let mut iperf = Background::spawn_in(
        server.ns(),
        &[
            "iperf3",
            "-s",
            "-1",
            "-B",
            &server.ep.ip.to_string(),
            "-p",
            "5201",
        ],
        &t.cluster.dir,
        "iperf3-server",
    )
    .unwrap();
    eventually(Duration::from_secs(10), "iperf3 server listening", || {
        let out = exec_in(server.ns(), &["ss", "-Hltn", "sport = :5201"]).unwrap();
        if out.stdout.contains("5201") {
            Ok(())
        } else {
            Err(out.stdout)
        }
    });
    let out = exec_in(
        client.ns(),
        &[
            "iperf3",
            "-c",
            &server.ep.ip.to_string(),
            "-p",
            "5201",
            "-t",
            "2",
            "-J",
        ],
    )
    .unwrap();
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {}{}", out.stdout, out.stderr));
    assert!(
        report.get("error").is_none() && out.success,
        "iperf3 failed: {}",
        report["error"]
    );
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    println!(
        "iperf3 red n1->n2: {received} bytes, {:.0} Mbit/s",
        report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6
    );
    assert!(received > 0, "iperf3 moved no data: {report}");
    iperf.wait_exit(Duration::from_secs(10)).unwrap();

    // A TCP echo exchange across nodes (blue, n1 -> n3), larger than one segment.
    let (client, server) = (&t.blue[0], &t.blue[2]);
    let _echo = EchoServer::start(server.ns(), server.ep.ip, 7000).unwrap();
    let mut conn = connect_in(client.ns(), server.ep.ip, 7000).unwrap();
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    echo_roundtrip(&mut conn, &payload).unwrap();
}

#[test]
fn underlay_carries_vxlan_with_the_networks_vni() {
    let Some(t) = two_networks() else { return };
    let n1 = t.cluster.node(1);
    let (red1, red2) = (&t.red[0], &t.red[1]);
    let (blue1, blue2) = (&t.blue[0], &t.blue[1]);
    for (from, to) in [(red1, red2), (blue1, blue2)] {
        eventually(CONVERGE, "overlay reachable", || {
            pingable(from.ns(), to.ep.ip)
        });
    }

    let cap = Capture::start(
        &n1.netns,
        "eth0",
        "udp port 4789",
        &t.cluster.dir,
        "tcpdump-n1",
    )
    .unwrap();
    assert!(ping(red1.ns(), red2.ep.ip, 3), "red ping during capture");
    assert!(ping(blue1.ns(), blue2.ep.ip, 3), "blue ping during capture");
    let out = cap.finish();
    let packets = parse_vxlan(&out);
    assert!(!packets.is_empty(), "no VXLAN packet on n1 eth0:\n{out}");

    let (n1_addr, n2_addr) = (t.cluster.node(1).addr, t.cluster.node(2).addr);
    for (name, vni, from, to) in [
        ("red", RED_VNI, red1, red2),
        ("blue", BLUE_VNI, blue1, blue2),
    ] {
        let request = format!("{} > {}: ICMP echo request", from.ep.ip, to.ep.ip);
        let reply = format!("{} > {}: ICMP echo reply", to.ep.ip, from.ep.ip);
        let out_req = packets.iter().find(|p| p.inner.contains(&request));
        let in_rep = packets.iter().find(|p| p.inner.contains(&reply));
        let out_req = out_req.unwrap_or_else(|| panic!("{name}: no encapsulated request:\n{out}"));
        let in_rep = in_rep.unwrap_or_else(|| panic!("{name}: no encapsulated reply:\n{out}"));
        assert_eq!(
            (
                out_req.outer_src,
                out_req.outer_dst,
                out_req.dst_port,
                out_req.vni
            ),
            (n1_addr, n2_addr, 4789, vni),
            "{name} request encapsulation"
        );
        assert_eq!(
            (
                in_rep.outer_src,
                in_rep.outer_dst,
                in_rep.dst_port,
                in_rep.vni
            ),
            (n2_addr, n1_addr, 4789, vni),
            "{name} reply encapsulation"
        );
        // Every packet carrying this network's traffic uses this network's VNI.
        let subnet_prefix = format!("{}.", from.ep.ip.to_string().rsplit_once('.').unwrap().0);
        for p in packets.iter().filter(|p| p.inner.contains(&subnet_prefix)) {
            assert_eq!(p.vni, vni, "{name} traffic under a foreign VNI: {p:?}");
        }
    }
}

#[test]
fn networks_are_isolated() {
    let Some(t) = two_networks() else { return };
    // Positive control: both networks work, so a failed ping below means isolation.
    for net in [&t.red, &t.blue] {
        eventually(CONVERGE, "overlay reachable", || {
            pingable(net[0].ns(), net[1].ep.ip)
        });
    }

    let pairs = [
        (&t.red[0], &t.blue[1]), // red n1 -> blue n2
        (&t.blue[1], &t.red[0]), // blue n2 -> red n1
        (&t.red[2], &t.blue[0]), // red n3 -> blue n1
        (&t.red[0], &t.blue[0]), // same node, different networks
        (&t.blue[0], &t.red[0]),
    ];
    for (from, to) in pairs {
        assert!(
            !ping(from.ns(), to.ep.ip, 3),
            "{} ({}) reached {} ({}) across networks",
            from.ns(),
            from.ep.network,
            to.ep.ip,
            to.ep.network
        );
    }

    // Even when a container treats the other subnet as on-link (ARP on its overlay), the
    // other network's endpoints are not on its L2 segment.
    exec_in_ok(
        t.red[0].ns(),
        &["ip", "route", "add", BLUE_SUBNET, "dev", "eth0"],
    );
    exec_in_ok(
        t.blue[1].ns(),
        &["ip", "route", "add", RED_SUBNET, "dev", "eth0"],
    );
    for (from, to) in [(&t.red[0], &t.blue[1]), (&t.blue[1], &t.red[0])] {
        assert!(
            !ping(from.ns(), to.ep.ip, 3),
            "{} reached {} over L2 across networks",
            from.ns(),
            to.ep.ip
        );
    }
    // And the positive control still holds afterwards.
    assert!(ping(t.red[0].ns(), t.red[1].ep.ip, 3));
    assert!(ping(t.blue[1].ns(), t.blue[0].ep.ip, 3));
}

/// No flood-and-learn: broadcasts and frames for unknown destinations stay in the sandbox.
/// The capture is validated by a known-good ping in the same window: its packets must be
/// there, so an empty capture cannot pass for "nothing flooded".
#[test]
fn broadcast_and_unknown_unicast_are_not_flooded() {
    let Some(t) = two_networks() else { return };
    let n1 = t.cluster.node(1);
    let (red1, red2) = (&t.red[0], &t.red[1]);
    eventually(CONVERGE, "overlay reachable", || {
        pingable(red1.ns(), red2.ep.ip)
    });
    let cap = Capture::start(
        &n1.netns,
        "eth0",
        "udp port 4789",
        &t.cluster.dir,
        "tcpdump-flood",
    )
    .unwrap();
    // An address of the subnet nobody has: ARP requests (broadcast) and nothing learnt.
    let net = red1.ep.ip.octets();
    let unknown = Ipv4Addr::new(net[0], net[1], net[2], 200);
    assert!(
        !ping(red1.ns(), unknown, 2),
        "{unknown} answered: it should not exist"
    );
    // A frame to an unknown MAC: a static neighbor entry pointing nowhere.
    exec_in_ok(
        red1.ns(),
        &[
            "ip",
            "neigh",
            "replace",
            "10.255.255.1",
            "lladdr",
            "02:00:00:00:be:ef",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
    exec_in_ok(
        red1.ns(),
        &["ip", "route", "add", "10.255.255.1/32", "dev", "eth0"],
    );
    let _ = exec_in(red1.ns(), &["ping", "-c", "2", "-W", "1", "10.255.255.1"]);
    // Subnet broadcast.
    let bcast = Ipv4Addr::new(net[0], net[1], net[2], 255);
    let _ = exec_in(
        red1.ns(),
        &["ping", "-b", "-c", "2", "-W", "1", &bcast.to_string()],
    );
    assert!(
        ping(red1.ns(), red2.ep.ip, 2),
        "known-good ping during capture"
    );
    let out = cap.finish();
    let packets = parse_vxlan(&out);
    let good = format!("{} > {}: ICMP echo request", red1.ep.ip, red2.ep.ip);
    assert!(
        packets.iter().any(|p| p.inner.contains(&good)),
        "capture missed the known-good ping:\n{out}"
    );
    let leaked: Vec<_> = packets
        .iter()
        .filter(|p| {
            p.inner.contains("ARP")
                || p.inner.contains(&unknown.to_string())
                || p.inner.contains("10.255.255.1")
                || p.inner.contains(&bcast.to_string())
        })
        .collect();
    assert!(leaked.is_empty(), "flooded onto the underlay: {leaked:?}");
}
