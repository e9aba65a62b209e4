//! Encrypted overlay networks (IPsec, ESP transport mode, rfc4106(gcm(aes))).
//!
//! On a kernel without ESP/GCM (the development machines) only the refusal is testable; the
//! rest is `#[ignore]`d (counted as skipped, with the reason) and run by the kernel-VM tier
//! (`scripts/kernel-vm/`, stock Debian 6.1 and 6.12 kernels) with `--include-ignored`. Judged by what the underlay carries (tcpdump), by real traffic
//! and by the kernel's XFRM and nftables state.

use netd_tests::capture::{parse_vxlan, Capture};
use netd_tests::checks::ping;
use netd_tests::tcp::{connect_in, echo_roundtrip, EchoServer};
use netd_tests::*;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

const SECURE_VNI: u32 = 4301;
const PLAIN_VNI: u32 = 4302;
const SECURE_SUBNET: &str = "10.233.1.0/24";
const PLAIN_SUBNET: &str = "10.233.2.0/24";
const VIP: &str = "10.233.1.250";
const SVC_PORT: u16 = 8080;
/// An encrypted ingress network (published ports).
const INGRESS_VNI: u32 = 4303;
const INGRESS_SUBNET: &str = "10.233.3.0/24";
const INGRESS_VIP: &str = "10.233.3.250";
const PUBLISHED: u16 = 30090;
const K1: &str = "netd-tests-esp-key-one-0123456789";
const K2: &str = "netd-tests-esp-key-two-0123456789";
/// Underlay MTU 1500 - VXLAN 50 - ESP 40.
const SECURE_MTU: u32 = 1410;

/// Whether this kernel can do ESP with AES-GCM (the same probe netd makes).
fn kernel_can_encrypt() -> bool {
    run(
        "unshare",
        &[
            "--net",
            "ip",
            "xfrm",
            "state",
            "add",
            "src",
            "192.0.2.1",
            "dst",
            "192.0.2.2",
            "proto",
            "esp",
            "spi",
            "0x100",
            "mode",
            "transport",
            "aead",
            "rfc4106(gcm(aes))",
            "0x1111111111111111111111111111111111111111",
            "128",
        ],
    )
    .map(|o| o.success)
    .unwrap_or(false)
}

/// The tests that need ESP/GCM are `#[ignore]`d, so the host run counts them as skipped with
/// the reason; the kernel-VM tier runs them with `--include-ignored`. Run on a kernel that
/// cannot encrypt, they fail rather than pass without testing anything.
fn require_esp() {
    assert!(
        kernel_can_encrypt(),
        "this kernel has no ESP/GCM (CONFIG_INET_ESP, CONFIG_CRYPTO_GCM): the test needs it \
         (the kernel-VM tier, scripts/kernel-vm/tier.sh, runs it on stock Debian kernels)"
    );
}

fn set_keys(cluster: &Cluster, keys: &[&str]) {
    for node in &cluster.nodes {
        let (status, body) = node.api(
            "PUT",
            "/v1/cluster/encryption-keys",
            Some(&json!({ "keys": keys })),
        );
        assert_eq!(status, 204, "{}: set keys: {body}", node.name);
    }
}

fn crypto_view(node: &Node) -> Value {
    node.get("/v1/encryption")
}

fn count_esp(tcpdump: &str) -> usize {
    tcpdump.matches("ESP(spi=").count()
}

fn vxlan_of(tcpdump: &str, vni: u32) -> usize {
    parse_vxlan(tcpdump).iter().filter(|p| p.vni == vni).count()
}

struct Rig {
    cluster: Cluster,
    /// secure[i] / plain[i]: container on node i+1 (the same namespace is on both networks).
    secure: Vec<Attached>,
    plain: Vec<Attached>,
}

/// Two nodes, an encrypted and a plain network, one container per node on both (`eth0` on
/// secure, `eth1` on plain). No keys yet.
fn rig(extra: &[&str]) -> Option<Rig> {
    let mut b = Cluster::builder(2);
    for l in extra {
        b = b.config_line(l);
    }
    let cluster = b.start()?;
    cluster.create_network(
        "secure",
        &json!({"subnet": SECURE_SUBNET, "vni": SECURE_VNI, "encrypted": true}),
    );
    cluster.create_network("plain", &json!({"subnet": PLAIN_SUBNET, "vni": PLAIN_VNI}));
    let secure = attach_on_every_node(&cluster, "secure", 1);
    let mut plain = Vec::new();
    for a in &secure {
        let ep = cluster
            .node(a.node)
            .attach(&a.container, "plain", "eth1", None);
        plain.push(Attached {
            node: a.node,
            container: a.container.clone(),
            ep,
        });
    }
    wait_meshed(&cluster, SECURE_VNI, &secure);
    wait_meshed(&cluster, PLAIN_VNI, &plain);
    Some(Rig {
        cluster,
        secure,
        plain,
    })
}

impl Rig {
    fn capture(&self, node: usize, tag: &str) -> Capture {
        Capture::start(
            &self.cluster.node(node).netns,
            "eth0",
            "udp port 4789 or esp",
            &self.cluster.dir,
            tag,
        )
        .unwrap()
    }

    fn secure_ping(&self, count: u32) -> bool {
        ping(self.secure[0].ns(), self.secure[1].ep.ip, count)
    }
}

#[test]
fn encrypted_network_is_refused_when_the_kernel_cannot_encrypt() {
    let Some(cluster) = Cluster::new(1) else {
        return;
    };
    let n1 = cluster.node(1);
    let spec = json!({"subnet": SECURE_SUBNET, "vni": SECURE_VNI, "encrypted": true});
    let (status, body) = n1.api("PUT", "/v1/networks/secure", Some(&spec));
    if kernel_can_encrypt() {
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["effective_mtu"],
            json!(SECURE_MTU),
            "ESP overhead: {body}"
        );
        return;
    }
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], json!("encrypted"), "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("ESP") && msg.contains("gcm"), "{msg}");
    // Nothing was created, and the daemon carries on.
    let (status, _) = n1.api("GET", "/v1/networks/secure", None);
    assert_eq!(status, 404);
    let plain = json!({"subnet": SECURE_SUBNET, "vni": SECURE_VNI});
    let (status, body) = n1.api("PUT", "/v1/networks/secure", Some(&plain));
    assert_eq!(status, 201, "{body}");
    let view = crypto_view(n1);
    assert_eq!(view["esp_supported"], json!(false), "{view}");
    assert_eq!(view["drop_rules"]["present"], json!(false), "{view}");
}

#[test]
fn encryption_keys_are_validated() {
    let Some(cluster) = Cluster::new(1) else {
        return;
    };
    let n1 = cluster.node(1);
    for (body, field) in [
        (json!({"keys": []}), "keys"),
        (json!({"keys": ["short"]}), "keys[0]"),
        (json!({"keys": [K1, K1]}), "keys[1]"),
        (
            json!({"keys": [K1, K2, "a-third-key-0123456789", "a-fourth-key-0123456789"]}),
            "keys",
        ),
    ] {
        let (status, resp) = n1.api("PUT", "/v1/cluster/encryption-keys", Some(&body));
        assert_eq!(status, 400, "{body}: {resp}");
        assert_eq!(resp["error"]["field"], json!(field), "{body}: {resp}");
    }
    let (status, _) = n1.api(
        "PUT",
        "/v1/cluster/encryption-keys",
        Some(&json!({"keys": [K1]})),
    );
    assert_eq!(status, 204);
    let view = crypto_view(n1);
    let text = view.to_string();
    assert!(!text.contains(K1), "key material in the view: {text}");
    assert_eq!(view["key_tags"].as_array().map(Vec::len), Some(1), "{view}");
}

/// Before keys: nothing of the encrypted network leaves in clear. With keys: the underlay
/// carries only ESP for it (container traffic and VIP-balanced traffic), cleartext VXLAN for
/// the plain one; forged cleartext VXLAN of the encrypted VNI is dropped on arrival; a
/// published port on an encrypted ingress network is encrypted between nodes too.
#[test]
#[ignore = "needs a kernel with ESP/GCM: run by the kernel-VM tier (scripts/kernel-vm/tier.sh)"]
fn underlay_carries_only_esp_for_the_encrypted_network() {
    require_esp();
    let Some(r) = rig(&["lb_backend = \"nftables\""]) else {
        return;
    };
    let (n1, n2) = (r.cluster.node(1), r.cluster.node(2));
    assert_eq!(r.secure[0].ep.mtu, SECURE_MTU, "MTU leaves room for ESP");
    assert_eq!(r.plain[0].ep.mtu, 1450);

    // No keys yet: fail closed.
    let cap = r.capture(1, "before-keys");
    assert!(
        !r.secure_ping(3),
        "encrypted network carried traffic before any key"
    );
    assert!(
        ping(r.plain[0].ns(), r.plain[1].ep.ip, 2),
        "plain network must work"
    );
    let out = cap.finish();
    assert_eq!(
        vxlan_of(&out, SECURE_VNI),
        0,
        "cleartext before keys:\n{out}"
    );
    assert!(vxlan_of(&out, PLAIN_VNI) > 0, "no plain VXLAN seen:\n{out}");
    let v = crypto_view(n1);
    assert!(
        v["drop_rules"]["dropped_out_packets"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    assert!(
        v["problems"].to_string().contains("no data-path keys"),
        "{v}"
    );

    // A task of a service on the encrypted network, on node 2.
    let task = r.cluster.container();
    let svc = json!({"service": {"name": "web", "id": "web", "vip": VIP, "endpoint_mode": "vip",
                     "ports": [{"protocol": "tcp", "target_port": SVC_PORT}]}});
    let task_ep = n2.attach(&task, "secure", "eth0", Some(svc));
    let _server = EchoServer::start(&task.name, task_ep.ip, SVC_PORT).unwrap();

    set_keys(&r.cluster, &[K1]);
    eventually(CONVERGE, "secure ping with keys", || {
        if r.secure_ping(1) {
            Ok(())
        } else {
            Err("no reply".to_string())
        }
    });
    let vip: Ipv4Addr = VIP.parse().unwrap();
    eventually(CONVERGE, "TCP through the VIP", || {
        let mut s = connect_in(r.secure[0].ns(), vip, SVC_PORT).map_err(|e| format!("{e:#}"))?;
        echo_roundtrip(&mut s, b"warm-up").map_err(|e| format!("{e:#}"))
    });

    let cap = r.capture(1, "with-keys");
    assert!(r.secure_ping(3), "secure ping");
    // Full-size packet without fragmentation: the MTU handed out really fits.
    let big = exec_in(
        r.secure[0].ns(),
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            &(SECURE_MTU - 28).to_string(),
            &r.secure[1].ep.ip.to_string(),
        ],
    )
    .unwrap();
    assert!(
        big.success,
        "full-MTU ping on the encrypted network: {}",
        big.stdout
    );
    assert!(ping(r.plain[0].ns(), r.plain[1].ep.ip, 3), "plain ping");
    for _ in 0..3 {
        let mut s = connect_in(r.secure[0].ns(), vip, SVC_PORT).unwrap();
        echo_roundtrip(&mut s, b"load-balanced and encrypted").unwrap();
    }
    let out = cap.finish();
    assert_eq!(
        vxlan_of(&out, SECURE_VNI),
        0,
        "cleartext VXLAN of the encrypted VNI:\n{out}"
    );
    assert!(
        vxlan_of(&out, PLAIN_VNI) > 0,
        "plain network not in clear:\n{out}"
    );
    assert!(count_esp(&out) >= 6, "too little ESP:\n{out}");

    // The SPIs on the wire are the ones netd reports, with counters that moved.
    let v = crypto_view(n1);
    assert_eq!(v["problems"], json!([]), "{v}");
    let peer = &v["peers"][0];
    assert_eq!(peer["peer"], json!(n2.addr.to_string()), "{v}");
    let out_spi = peer["out_spi"].as_str().unwrap().to_string();
    assert!(
        out.contains(&format!("ESP(spi={out_spi}")),
        "SPI {out_spi} not on the wire:\n{out}"
    );
    let sas = peer["states"].as_array().unwrap();
    assert_eq!(sas.len(), 2, "{v}");
    for sa in sas {
        assert!(sa["packets"].as_u64().unwrap() > 0, "{sa}");
        assert_eq!(sa["esn"], json!(true), "{sa}");
    }

    // netd inspect crypto: tags only, never material; healthy.
    let inspect = run(
        netd_bin().to_str().unwrap(),
        &[
            "inspect",
            "--socket",
            n1.socket.to_str().unwrap(),
            "--json",
            "crypto",
        ],
    )
    .unwrap();
    assert!(inspect.success, "inspect crypto: {}", inspect.stdout);
    assert!(!inspect.stdout.contains(K1), "key material printed");
    assert!(inspect.stdout.contains(&out_spi), "{}", inspect.stdout);

    // Forged cleartext VXLAN of the encrypted VNI from an underlay host is dropped at node 2;
    // the same forgery on the plain VNI arrives (so the forgery itself works).
    for (vni, target, expect_seen) in [
        (SECURE_VNI, &r.secure[1], false),
        (PLAIN_VNI, &r.plain[1], true),
    ] {
        let ifname = if vni == SECURE_VNI { "eth0" } else { "eth1" };
        let seen = forge_vxlan_ping(&r.cluster, n2.addr, vni, target, ifname);
        assert_eq!(
            seen, expect_seen,
            "forged VXLAN ping on vni {vni} seen by the container: {seen}"
        );
    }
    let v2 = crypto_view(n2);
    assert!(
        v2["drop_rules"]["dropped_in_packets"].as_u64().unwrap_or(0) > 0,
        "{v2}"
    );

    // A published port on an encrypted ingress network: a client on the underlay reaches the
    // task on n2 through n1's port, and the n1 -> n2 leg carries only ESP.
    r.cluster.create_network(
        "ingress",
        &json!({"subnet": INGRESS_SUBNET, "vni": INGRESS_VNI, "ingress": true, "encrypted": true}),
    );
    let published = r.cluster.container();
    let svc = json!({"service": {"name": "pub", "id": "pub", "vip": INGRESS_VIP,
        "endpoint_mode": "vip", "ports": [{"protocol": "tcp", "target_port": SVC_PORT,
        "published_port": PUBLISHED}]}});
    let published_ep = n2.attach(&published, "ingress", "eth0", Some(svc));
    let _published_server = EchoServer::start(&published.name, published_ep.ip, SVC_PORT).unwrap();
    let via_n1 = || -> Result<(), String> {
        let mut s =
            connect_in(r.cluster.client_ns(), n1.addr, PUBLISHED).map_err(|e| format!("{e:#}"))?;
        echo_roundtrip(&mut s, b"published and encrypted").map_err(|e| format!("{e:#}"))
    };
    eventually(CONVERGE, "published port through n1", via_n1);
    let cap = r.capture(1, "ingress");
    for _ in 0..3 {
        via_n1().unwrap();
    }
    let out = cap.finish();
    assert_eq!(
        vxlan_of(&out, INGRESS_VNI),
        0,
        "cleartext VXLAN of the encrypted ingress network:\n{out}"
    );
    assert!(count_esp(&out) >= 6, "too little ESP for ingress:\n{out}");
}

/// Sends ICMP to `target` from the client (underlay host, not a node) inside cleartext VXLAN
/// of `vni`, straight to node `vtep`; returns whether the container saw it.
fn forge_vxlan_ping(
    cluster: &Cluster,
    vtep: Ipv4Addr,
    vni: u32,
    target: &Attached,
    ifname: &str,
) -> bool {
    let cl = cluster.client_ns();
    let dev = format!("fx{vni}");
    let net = target.ep.ip.octets();
    let forged = format!("{}.{}.{}.{}/24", net[0], net[1], net[2], 199);
    exec_in_ok(
        cl,
        &[
            "ip",
            "link",
            "add",
            &dev,
            "type",
            "vxlan",
            "id",
            &vni.to_string(),
            "remote",
            &vtep.to_string(),
            "dstport",
            "4789",
            "dev",
            "eth0",
        ],
    );
    exec_in_ok(cl, &["ip", "addr", "add", &forged, "dev", &dev]);
    exec_in_ok(cl, &["ip", "link", "set", &dev, "up"]);
    exec_in_ok(
        cl,
        &[
            "ip",
            "neigh",
            "replace",
            &target.ep.ip.to_string(),
            "lladdr",
            &target.ep.mac,
            "dev",
            &dev,
            "nud",
            "permanent",
        ],
    );
    let cap = Capture::start(
        target.ns(),
        ifname,
        "icmp",
        &cluster.dir,
        &format!("forge-{vni}"),
    )
    .unwrap();
    let _ = exec_in(
        cl,
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            &target.ep.ip.to_string(),
        ],
    );
    let out = cap.finish();
    exec_in_ok(cl, &["ip", "link", "del", &dev]);
    out.contains("ICMP echo request")
}

/// Rotation under traffic loses nothing; with netd killed (and even with the XFRM policies
/// gone) nothing leaves in clear; a restart repairs the SAs.
#[test]
#[ignore = "needs a kernel with ESP/GCM: run by the kernel-VM tier (scripts/kernel-vm/tier.sh)"]
fn key_rotation_under_traffic_and_fail_closed_while_netd_is_down() {
    require_esp();
    let Some(r) = rig(&[]) else { return };
    let (n1, n2) = (r.cluster.node(1), r.cluster.node(2));
    set_keys(&r.cluster, &[K1]);
    eventually(CONVERGE, "secure ping with K1", || {
        if r.secure_ping(1) {
            Ok(())
        } else {
            Err("no reply".to_string())
        }
    });

    // Steady pings (100/s) while the key rotates the lossless way: new key as secondary
    // everywhere, then primary everywhere, then the old key removed. The pinger runs until a
    // second after the rotation is complete; every echo sent before that must be answered.
    let mut pinger = Background::spawn_in(
        r.secure[0].ns(),
        &[
            "ping",
            "-n",
            "-i",
            "0.01",
            "-W",
            "2",
            &r.secure[1].ep.ip.to_string(),
        ],
        &r.cluster.dir,
        "rotation-ping",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    set_keys(&r.cluster, &[K1, K2]);
    set_keys(&r.cluster, &[K2, K1]);
    std::thread::sleep(Duration::from_secs(1)); // traffic under the new primary
    set_keys(&r.cluster, &[K2]);
    std::thread::sleep(Duration::from_secs(2));
    pinger.stop_with(libc::SIGINT, Duration::from_secs(5));
    let lines = pinger.stdout();
    let answered: std::collections::BTreeSet<u64> = lines
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    let sent = answered.iter().max().copied().unwrap_or(0);
    // Echoes of the last half second may still be in flight when ping is stopped.
    let settled = sent.saturating_sub(50);
    let lost: Vec<u64> = (1..=settled).filter(|s| !answered.contains(s)).collect();
    assert!(
        settled > 200,
        "too few echoes to judge: {sent}\n{}",
        pinger.stderr()
    );
    assert!(
        lost.is_empty(),
        "{} of {settled} echoes lost during rotation: {lost:?}",
        lost.len()
    );

    let v = crypto_view(n1);
    assert_eq!(v["problems"], json!([]), "{v}");
    let tags = v["key_tags"].as_array().unwrap().clone();
    assert_eq!(tags.len(), 1, "{v}");
    let peer = &v["peers"][0];
    assert_eq!(
        peer["out_key_tag"], tags[0],
        "sends with the new primary: {v}"
    );
    for sa in peer["states"].as_array().unwrap() {
        assert_eq!(sa["key_tag"], tags[0], "old key's SA left: {v}");
        assert!(
            sa["packets"].as_u64().unwrap() > 0,
            "new SA carried no traffic: {sa}"
        );
    }

    // netd crashes on both nodes: the kernel keeps encrypting and dropping cleartext.
    let epoch_before = crypto_view(n1)["sa_epoch"].as_u64();
    n1.kill9();
    n2.kill9();
    let cap = r.capture(1, "netd-down");
    assert!(
        r.secure_ping(3),
        "encrypted traffic must survive a netd crash"
    );
    let out = cap.finish();
    assert_eq!(
        vxlan_of(&out, SECURE_VNI),
        0,
        "cleartext with netd down:\n{out}"
    );
    assert!(count_esp(&out) > 0, "{out}");
    // Even with the SAs and policies gone while netd is down, nothing leaves in clear. Only
    // n1 loses them (as in a reboot of n1 alone): n2 keeps its inbound SA from n1 with a
    // replay window far ahead, so n1 must not re-create the same SA from sequence number 1
    // (it moves to a new SA epoch; checked after the restart).
    exec_in_ok(&n1.netns, &["ip", "xfrm", "policy", "flush"]);
    exec_in_ok(&n1.netns, &["ip", "xfrm", "state", "flush"]);
    let cap = r.capture(1, "no-sas");
    assert!(!r.secure_ping(3), "traffic without SAs");
    let out = cap.finish();
    assert_eq!(
        vxlan_of(&out, SECURE_VNI),
        0,
        "cleartext without SAs:\n{out}"
    );
    let forged_seen = forge_vxlan_ping(&r.cluster, n1.addr, SECURE_VNI, &r.secure[0], "eth0");
    assert!(!forged_seen, "forged cleartext accepted while netd is down");

    // Restart: the SAs come back from the persisted keys, the network works again.
    n1.restart();
    n2.restart();
    eventually(CONVERGE, "secure ping after restart", || {
        if r.secure_ping(1) {
            Ok(())
        } else {
            Err("no reply".to_string())
        }
    });
    let cap = r.capture(1, "after-restart");
    assert!(r.secure_ping(3));
    let out = cap.finish();
    assert_eq!(
        vxlan_of(&out, SECURE_VNI),
        0,
        "cleartext after restart:\n{out}"
    );
    assert_eq!(crypto_view(n1)["problems"], json!([]));
    let epoch = sa_epochs_agree(n1, n2);
    assert_ne!(
        Some(epoch),
        epoch_before,
        "n1 re-created its lost SAs at the same epoch"
    );

    // SAs lost while netd runs (a hand flush of n1's states): the drift repair moves n1 to a
    // new epoch and traffic flows again, although n2 kept its inbound SAs.
    exec_in_ok(&n1.netns, &["ip", "xfrm", "state", "flush"]);
    eventually(CONVERGE, "secure ping after n1's SAs were flushed", || {
        if r.secure_ping(1) {
            Ok(())
        } else {
            Err("no reply".to_string())
        }
    });
    let after = sa_epochs_agree(n1, n2);
    assert!(after > epoch, "epoch {epoch} -> {after}");
    assert!(r.secure_ping(3));
    assert_eq!(crypto_view(n1)["problems"], json!([]));
}

/// n1's SA epoch, once n2 sees the same one for n1 (crypto views of both nodes).
fn sa_epochs_agree(n1: &Node, n2: &Node) -> u64 {
    eventually(CONVERGE, "n2 sees n1's SA epoch", || {
        let mine = crypto_view(n1)["sa_epoch"].as_u64().unwrap_or(0);
        let v2 = crypto_view(n2);
        let seen = v2["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer"] == json!(n1.addr.to_string()))
            .and_then(|p| p["sa_epoch"].as_u64());
        if mine != 0 && seen == Some(mine) {
            Ok(mine)
        } else {
            Err(format!("n1 sends at epoch {mine}, n2 sees {seen:?}"))
        }
    })
}
