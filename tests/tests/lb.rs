//! Service VIP load balancing on three nodes, real traffic from container namespaces: the same
//! behaviour suite runs against the eBPF (cgroup socket LB), the nftables and the IPVS backends
//! (IPVS only in the kernel-VM tier: the development kernel has none).
//! Six tasks (two per node) of one `vip`-mode service with a TCP and a UDP port; clients are
//! containers on nodes 1 and 3 that are not tasks.
//! The smoke tests (`*_vip_smoke`, what the kernel-VM tier runs) use a small rig instead: two
//! nodes, one task on each, one client on node 1.

use netd_tests::lb::{self, IdServer, LbCleanup, LbKind};
use netd_tests::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const VNI: u32 = 4201;
const SUBNET: &str = "10.232.1.0/24";
const VIP: &str = "10.232.1.250";
const EMPTY_VIP: &str = "10.232.1.251";
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
/// `lb_max_services` of the rig (below the default, so the test sees the setting take effect).
const MAX_SERVICES: u32 = 1024;
/// How long a background client may take to print its first line (python starting in a
/// namespace, connect, the task's greeting): under emulation on a busy host python alone took
/// 16-25 s of guest time (x8 scaling makes this 240 s there).
const STARTED: Duration = Duration::from_secs(30);

fn service(id: &str, vip: &str, mode: &str) -> Value {
    let mut s = json!({
        "name": id, "id": id, "endpoint_mode": mode,
        "ports": [{"protocol": "tcp", "target_port": TCP_PORT},
                  {"protocol": "udp", "target_port": UDP_PORT}],
    });
    if mode == "vip" {
        s["vip"] = json!(vip);
    }
    s
}

struct Task {
    node: usize,
    container: Container,
    id: String,
    _server: Option<IdServer>,
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v["counts"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

struct Rig {
    kind: LbKind,
    _cleanup: LbCleanup,
    tasks: Vec<Task>,
    /// (node, container) of the clients.
    clients: Vec<(usize, Container)>,
    cluster: Cluster,
}

impl Rig {
    fn cgroup(&self, node: usize) -> Option<PathBuf> {
        (self.kind == LbKind::Ebpf).then(|| lb::cgroup_of(self.cluster.node(node)))
    }

    fn run(&self, client: usize, args: &[&str]) -> Result<Value, String> {
        let (node, c) = &self.clients[client];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        lb::client(&c.name, self.cgroup(*node).as_deref(), &args).map_err(|e| format!("{e:#}"))
    }

    /// A client outside the LB cgroup: no socket hook, the packet-level (tc) LB only.
    fn run_outside(&self, client: usize, args: &[&str]) -> Result<Value, String> {
        let (_, c) = &self.clients[client];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        lb::client(&c.name, None, &args).map_err(|e| format!("{e:#}"))
    }

    fn ping(&self, client: usize, dst: &str) -> Result<Vec<String>, String> {
        let (node, c) = &self.clients[client];
        lb::ping(&c.name, self.cgroup(*node).as_deref(), dst).map_err(|e| format!("{e:#}"))
    }

    fn tcp(&self, client: usize, n: usize) -> Result<Value, String> {
        self.run(client, &["tcp", VIP, &TCP_PORT.to_string(), &n.to_string()])
    }
}

/// Shape of a rig: nodes, tasks of `web` per node, the nodes with a (non-task) client.
struct Layout {
    nodes: usize,
    tasks_per_node: usize,
    clients: &'static [usize],
}

/// The behaviour suite's rig.
const FULL: Layout = Layout {
    nodes: 3,
    tasks_per_node: 2,
    clients: &[1, 3],
};

/// The smoke tests' rig: one task per node, so one of the two is always across the overlay.
const SMOKE: Layout = Layout {
    nodes: 2,
    tasks_per_node: 1,
    clients: &[1],
};

fn rig(kind: LbKind, layout: &Layout) -> Option<Rig> {
    let mut b = Cluster::builder(layout.nodes);
    for l in kind.config_lines() {
        b = b.config_line(&l);
    }
    b = b.config_line(&format!("lb_max_services = {MAX_SERVICES}"));
    let cluster = b.start()?;
    let cleanup = LbCleanup::new(&cluster);
    cluster.create_network("lbnet", &json!({"subnet": SUBNET, "vni": VNI}));
    let mut tasks = Vec::new();
    let mut attached = Vec::new();
    for node in &cluster.nodes {
        for _ in 0..layout.tasks_per_node {
            let container = cluster.container();
            let ep = node.attach(
                &container,
                "lbnet",
                "eth0",
                Some(json!({"service": service("web", VIP, "vip")})),
            );
            let server = IdServer::start(&container.name, TCP_PORT, UDP_PORT, &container.name)
                .expect("backend server");
            attached.push(Attached {
                node: node.index,
                container: container.clone(),
                ep: ep.clone(),
            });
            tasks.push(Task {
                node: node.index,
                container,
                id: ep.id,
                _server: Some(server),
            });
        }
    }
    let mut clients = Vec::new();
    for &n in layout.clients {
        let container = cluster.container();
        let ep = cluster.node(n).attach(&container, "lbnet", "eth0", None);
        attached.push(Attached {
            node: n,
            container: container.clone(),
            ep,
        });
        clients.push((n, container));
    }
    wait_meshed(&cluster, VNI, &attached);
    Some(Rig {
        kind,
        _cleanup: cleanup,
        tasks,
        clients,
        cluster,
    })
}

/// Every client reaches every task through the VIP (gossip and LB programming converged).
fn wait_all_backends(r: &Rig, expect: usize) {
    for client in 0..r.clients.len() {
        eventually(
            CONVERGE,
            &format!("client {client} reaches {expect} tasks via the VIP"),
            || {
                let v = r.tcp(client, 60)?;
                let c = counts(&v);
                if c.len() == expect && v["errors"].as_object().is_some_and(|e| e.is_empty()) {
                    Ok(())
                } else {
                    Err(v.to_string())
                }
            },
        );
    }
}

fn suite(kind: LbKind) {
    let Some(r) = rig(kind, &FULL) else { return };
    wait_all_backends(&r, 6);

    // Distribution: 600 connections from node 1, every task (on every node) hit, none more
    // than twice its fair share; getpeername shows the VIP.
    let v = r.tcp(0, 600).unwrap();
    let c = counts(&v);
    eprintln!("{kind:?}: 600 connections over 6 tasks: {c:?}");
    assert_eq!(c.len(), 6, "every task hit: {v}");
    assert!(
        c.values().all(|n| *n <= 200),
        "no task over 2x its share (100): {v}"
    );
    assert_eq!(c.values().sum::<u64>(), 600, "{v}");
    assert_eq!(
        v["peers"],
        json!([format!("{VIP}:{TCP_PORT}")]),
        "getpeername: {v}"
    );

    // UDP through the VIP: replies come from the VIP, unconnected and connected sockets.
    let u = r
        .run(1, &["udp", VIP, &UDP_PORT.to_string(), "60"])
        .unwrap();
    assert_eq!(
        u["froms"],
        json!([format!("{VIP}:{UDP_PORT}")]),
        "UDP replies: {u}"
    );
    assert_eq!(
        u["connected_peer"],
        json!(format!("{VIP}:{UDP_PORT}")),
        "{u}"
    );
    assert_eq!(
        u["connected_from"],
        json!(format!("{VIP}:{UDP_PORT}")),
        "{u}"
    );
    assert!(counts(&u).len() >= 3, "UDP spread over tasks: {u}");

    // eBPF, traffic no socket hook saw (a process outside the LB cgroup): the tc programs on
    // the container's veth DNAT it to the tasks (Maglev on the 5-tuple) and reverse it.
    if kind == LbKind::Ebpf {
        for client in 0..2 {
            eventually(CONVERGE, "packet-level LB", || {
                let v = r.run_outside(client, &["tcp", VIP, &TCP_PORT.to_string(), "120"])?;
                let c = counts(&v);
                eprintln!("outside the LB cgroup, client {client}: {v}");
                let ok = c.len() >= 4
                    && c.values().sum::<u64>() == 120
                    && v["peers"] == json!([format!("{VIP}:{TCP_PORT}")]);
                if ok {
                    Ok(())
                } else {
                    Err(v.to_string())
                }
            });
            let u = r
                .run_outside(client, &["udp", VIP, &UDP_PORT.to_string(), "30"])
                .unwrap();
            assert_eq!(
                u["froms"],
                json!([format!("{VIP}:{UDP_PORT}")]),
                "UDP replies: {u}"
            );
            assert_eq!(
                u["connected_from"],
                json!(format!("{VIP}:{UDP_PORT}")),
                "{u}"
            );
        }
    }

    // ICMP echo to the VIP is answered (from the VIP) while the service has a backend.
    for client in 0..2 {
        eventually(CONVERGE, "ping to the VIP answered", || {
            let from = r.ping(client, VIP)?;
            if from.len() == 2 && from.iter().all(|f| f == VIP) {
                Ok(())
            } else {
                Err(format!("replies from {from:?}"))
            }
        });
    }

    // Drain: a held connection to some task survives draining it; new ones avoid it.
    let dir = r.cluster.dir.clone();
    // The held connection comes from outside the LB cgroup: with eBPF it is the packet-level
    // LB's (whose conntrack must keep it on the drained task); a socket-hook connection has no
    // per-flow state at all (see `idle_connection` and the restart check).
    let go = dir.join("hold-go");
    let (node, c0) = &r.clients[0];
    let mut hold = hold_through_vip(&c0.name, None, &go, &dir, "hold");
    let held = first_line_or_explain(&r, &hold)["backend"]
        .as_str()
        .unwrap()
        .to_string();
    let drained = r.tasks.iter().find(|t| t.container.name == held).unwrap();
    let (st, body) = r.cluster.node(drained.node).api(
        "PATCH",
        &format!("/v1/endpoints/{}", drained.id),
        Some(&json!({"service_disabled": true})),
    );
    assert_eq!(st, 200, "{body}");
    for client in 0..2 {
        eventually(CONVERGE, "drained task gets no new connections", || {
            let v = r.tcp(client, 120)?;
            let c = counts(&v);
            if c.len() == 5 && !c.contains_key(&held) {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
    }
    std::fs::write(&go, "").unwrap();
    let echo = lb::first_line(&hold, 1, Duration::from_secs(10)).unwrap();
    assert_eq!(
        echo["echo"],
        json!("still-there"),
        "held connection to the drained task"
    );
    hold.wait_exit(Duration::from_secs(10)).unwrap();

    // Removal: a deleted task gets no new connections. The task removed is the one a
    // connected UDP socket is pinned to, and that client keeps getting answers: eBPF closes
    // the socket (it reconnects on the error), nftables forgets the flow's conntrack entry
    // (its next datagram is balanced afresh); neither leaves it sending into a black hole.
    let udp_go = dir.join("udphold-go");
    let mut udp_hold = lb::client_bg(
        &c0.name,
        r.cgroup(*node).as_deref(),
        &[
            "udphold".into(),
            VIP.into(),
            UDP_PORT.to_string(),
            udp_go.display().to_string(),
        ],
        &dir,
        "udphold",
    )
    .unwrap();
    let first = lb::first_line(&udp_hold, 0, STARTED).unwrap();
    let pinned = first["backend"].as_str().unwrap().to_string();
    let removed = r.tasks.iter().find(|t| t.container.name == pinned).unwrap();
    assert_ne!(
        removed.container.name, held,
        "a drained task is never picked"
    );
    let (st, body) =
        r.cluster
            .node(removed.node)
            .api("DELETE", &format!("/v1/endpoints/{}", removed.id), None);
    assert!(st == 200 || st == 204, "{body}");
    for client in 0..2 {
        eventually(CONVERGE, "removed task gets no new connections", || {
            let v = r.tcp(client, 120)?;
            let c = counts(&v);
            if c.len() == 4 && !c.contains_key(&removed.container.name) {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
    }

    let next = lb::first_line(&udp_hold, 1, Duration::from_secs(15)).unwrap();
    eprintln!("{kind:?}: connected UDP client after its backend was removed: {next}");
    assert_ne!(next["backend"], json!(removed.container.name), "{next}");
    if kind == LbKind::Ebpf {
        assert!(next["reconnects"].as_u64().unwrap_or(0) >= 1, "{next}");
    }
    std::fs::write(&udp_go, "").unwrap();
    udp_hold.wait_exit(Duration::from_secs(10)).unwrap();

    // A service whose only task is drained: connect is refused at once, not a hang.
    let lonely = r.cluster.container();
    let node2 = r.cluster.node(2);
    let ep = node2.attach(
        &lonely,
        "lbnet",
        "eth0",
        Some(json!({"service": service("empty", EMPTY_VIP, "vip")})),
    );
    let (st, _) = node2.api(
        "PATCH",
        &format!("/v1/endpoints/{}", ep.id),
        Some(&json!({"service_disabled": true})),
    );
    assert_eq!(st, 200);
    // dnsrr: no VIP, nothing programmed; its task stays reachable directly.
    let rr = r.cluster.container();
    r.cluster.node(3).attach(
        &rr,
        "lbnet",
        "eth0",
        Some(json!({"service": service("rr", "", "dnsrr")})),
    );
    for client in 0..2 {
        eventually(CONVERGE, "service without tasks refuses", || {
            let v = r.run(client, &["refused", EMPTY_VIP, &TCP_PORT.to_string()])?;
            if v["result"] == json!("ECONNREFUSED") && v["secs"].as_f64().unwrap_or(99.0) < 1.0 {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
    }
    // ... and not while it has none.
    for client in 0..2 {
        let from = r.ping(client, EMPTY_VIP).unwrap();
        assert!(from.is_empty(), "ping to a VIP without backends: {from:?}");
    }
    // Its last task deleted (scaled to zero): the VIP keeps refusing (lb_service_linger_ms)
    // rather than hanging on an address nobody answers for.
    let (st, body) = node2.api("DELETE", &format!("/v1/endpoints/{}", ep.id), None);
    assert!(st == 200 || st == 204, "{body}");
    eventually(CONVERGE, "task gone from every node's view", || {
        let (_, v) = r.cluster.node(1).api("GET", "/v1/remote-endpoints", None);
        if v.to_string().contains(&ep.id) {
            Err(format!("node 1 still lists {}", ep.id))
        } else {
            Ok(())
        }
    });
    for client in 0..2 {
        let v = r
            .run(client, &["refused", EMPTY_VIP, &TCP_PORT.to_string()])
            .unwrap();
        assert_eq!(v["result"], json!("ECONNREFUSED"), "after deletion: {v}");
        assert!(v["secs"].as_f64().unwrap_or(99.0) < 1.0, "{v}");
    }
    if kind == LbKind::Ebpf {
        check_programmed_frontends(&r, 4); // web tcp+udp, empty tcp+udp; none for dnsrr
        same_maglev_everywhere(&r, 4);
        restart_adopts(&r, held.as_str(), &removed.container.name);
        idle_connection(&r);
    }
    // IPVS keeps its state in each client's namespace (adopted after a restart, not pinned
    // maps: the eBPF map checks above do not apply) and its own connection table, whose TCP
    // timeout netd sets to the maximum.
    if kind == LbKind::Ipvs {
        restart_adopts(&r, held.as_str(), &removed.container.name);
        idle_connection(&r);
    }
}

/// The VIP smoke test (small: the kernel-VM tier runs it on every kernel): two nodes with one
/// task each and a client on node 1. TCP connections through the VIP reach both tasks (the
/// local one and the one across the overlay) and see the VIP as their peer; UDP requests
/// through the VIP are answered by the tasks, from the VIP; ping to the VIP is answered, from
/// the VIP. eBPF: the same TCP check from outside the LB cgroup (the tc programs' packet-level
/// LB, not the socket hooks).
fn smoke(kind: LbKind) {
    let t0 = std::time::Instant::now();
    // Where a slow run spends its time (the kernel-VM tier budgets this test).
    let phase = |what: &str| eprintln!("{kind:?} smoke: {what} at {:.1?}", t0.elapsed());
    let Some(r) = rig(kind, &SMOKE) else { return };
    phase("rig ready");
    let tasks: BTreeSet<String> = r.tasks.iter().map(|t| t.container.name.clone()).collect();
    let peer = json!([format!("{VIP}:{TCP_PORT}")]);
    let both = |v: &Value, n: u64| {
        let c = counts(v);
        c.keys().cloned().collect::<BTreeSet<_>>() == tasks
            && c.values().sum::<u64>() == n
            && v["errors"].as_object().is_some_and(|e| e.is_empty())
            && v["peers"] == peer
    };
    // TCP and UDP from one client run (a python start costs seconds in an emulated guest).
    // 12 connections: with two tasks, all on one by chance is a 2^-11 event (and retried).
    let u = eventually(
        CONVERGE,
        "connections through the VIP reach both tasks",
        || {
            let v = r.run(
                0,
                &[
                    "tcpudp",
                    VIP,
                    &TCP_PORT.to_string(),
                    "12",
                    &UDP_PORT.to_string(),
                    "10",
                ],
            )?;
            eprintln!("{kind:?} smoke: 12 connections, 10 UDP requests via the VIP: {v}");
            if both(&v["tcp"], 12) {
                Ok(v["udp"].clone())
            } else {
                Err(v.to_string())
            }
        },
    );
    phase("TCP and UDP checked");
    let from = json!([format!("{VIP}:{UDP_PORT}")]);
    assert_eq!(u["froms"], from, "UDP replies come from the VIP: {u}");
    assert_eq!(
        u["connected_from"],
        json!(format!("{VIP}:{UDP_PORT}")),
        "connected UDP socket: {u}"
    );
    let c = counts(&u);
    assert_eq!(c.values().sum::<u64>(), 10, "every request answered: {u}");
    assert!(
        c.keys().all(|k| tasks.contains(k)),
        "answered by the tasks: {u}"
    );

    eventually(CONVERGE, "ping to the VIP answered from the VIP", || {
        let from = r.ping(0, VIP)?;
        if from.len() == 2 && from.iter().all(|f| f == VIP) {
            Ok(())
        } else {
            Err(format!("replies from {from:?}"))
        }
    });
    phase("ping checked");

    if kind == LbKind::Ebpf {
        eventually(CONVERGE, "packet-level LB reaches both tasks", || {
            let v = r.run_outside(0, &["tcp", VIP, &TCP_PORT.to_string(), "12"])?;
            eprintln!("{kind:?} smoke: outside the LB cgroup: {v}");
            if both(&v, 12) {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
        phase("packet-level LB checked");
    }
}

/// The socket LB keeps no per-flow state for TCP (the address is rewritten once, at
/// connect): nothing can time out. A connection through the VIP stays idle far longer than
/// every timeout on its path (conntrack's established timeout in the client's namespace cut
/// to 1 s; `lb_rev_nat` is an LRU without time), then carries data both ways.
fn idle_connection(r: &Rig) {
    let dir = r.cluster.dir.clone();
    let go = dir.join("idle-go");
    let (node, c0) = &r.clients[0];
    let ns = netd_tests::netns::path(&c0.name);
    // Loaded by the nftables suite or not at all; either way nothing tracks this flow longer.
    let _ = run_ok(
        "sh",
        &[
            "-c",
            &format!(
                "nsenter --net={} sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established=1 || true",
                ns.display()
            ),
        ],
    );
    let mut hold = hold_through_vip(&c0.name, r.cgroup(*node).as_deref(), &go, &dir, "idle");
    lb::first_line(&hold, 0, STARTED).unwrap();
    let idle = Duration::from_secs(
        std::env::var("NETD_TEST_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8),
    );
    std::thread::sleep(idle);
    std::fs::write(&go, "").unwrap();
    let echo = lb::first_line(&hold, 1, Duration::from_secs(10)).unwrap();
    assert_eq!(
        echo["echo"],
        json!("still-there"),
        "connection idle for {idle:?}"
    );
    hold.wait_exit(Duration::from_secs(10)).unwrap();
}

/// The first line of a held connection; on failure, what the LB and node 1 looked like (IPVS:
/// services and connection table in the client's namespace) and whether the line came late.
fn first_line_or_explain(r: &Rig, hold: &Background) -> Value {
    let err = match lb::first_line(hold, 0, STARTED) {
        Ok(v) => return v,
        Err(e) => format!("{e:#}"),
    };
    let (_, c0) = &r.clients[0];
    let ns = netd_tests::netns::path(&c0.name);
    let late = lb::first_line(hold, 0, Duration::from_secs(5));
    let mut diag = format!("late: {late:?}\n");
    if r.kind == LbKind::Ipvs {
        for list in ["-Ln", "-Lnc"] {
            let out = run_ok(
                "sh",
                &[
                    "-c",
                    &format!("nsenter --net={} ipvsadm {list} 2>&1 || true", ns.display()),
                ],
            );
            diag.push_str(&out.stdout);
        }
    }
    diag.push_str(&r.cluster.node(1).log_tail(60));
    panic!("{err}\n{diag}");
}

/// A TCP connection through the VIP that stays open until the file `go` appears.
fn hold_through_vip(
    ns: &str,
    cgroup: Option<&Path>,
    go: &Path,
    dir: &Path,
    tag: &str,
) -> Background {
    let args = [
        "hold".to_string(),
        VIP.into(),
        TCP_PORT.to_string(),
        go.display().to_string(),
    ];
    lb::client_bg(ns, cgroup, &args, dir, tag).unwrap()
}

/// Every node programmed the same Maglev table for the web service (built from the same
/// backend set with the same fixed hash), so a flow gets the same backend whichever node
/// balances it; all `enabled` tasks have entries and their shares are near-equal.
fn same_maglev_everywhere(r: &Rig, enabled: usize) {
    let vip: Ipv4Addr = VIP.parse().unwrap();
    eventually(CONVERGE, "same Maglev table on every node", || {
        let tables: Vec<Vec<Ipv4Addr>> = r
            .cluster
            .nodes
            .iter()
            .map(|n| lb::maglev_table(n, vip, TCP_PORT, 6))
            .collect::<anyhow::Result<_>>()
            .map_err(|e| format!("{e:#}"))?;
        let first = &tables[0];
        let mut share = BTreeMap::<Ipv4Addr, usize>::new();
        for a in first {
            *share.entry(*a).or_default() += 1;
        }
        if share.len() != enabled || tables.iter().any(|t| t != first) {
            return Err(format!(
                "backends per node table: {share:?}, equal: {}",
                tables.iter().all(|t| t == first)
            ));
        }
        let fair = first.len() / enabled;
        assert!(
            share.values().all(|n| n.abs_diff(fair) <= fair / 10),
            "{share:?}"
        );
        Ok(())
    });
}

/// Number of services in node 1's pinned `lb_services` map (bpftool), and the per-service
/// maps sized by `lb_max_services` (see [`MAX_SERVICES`]).
fn check_programmed_frontends(r: &Rig, want: usize) {
    let maglev = lb::pin_dir_of(r.cluster.node(1)).join("lb_maglev");
    let out = run_ok(
        "bpftool",
        &["-j", "map", "show", "pinned", maglev.to_str().unwrap()],
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["max_entries"], json!(MAX_SERVICES), "lb_maglev: {v}");
    let pin = lb::pin_dir_of(r.cluster.node(1)).join("lb_services");
    let out = run_ok(
        "bpftool",
        &["-j", "map", "dump", "pinned", pin.to_str().unwrap()],
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(want), "lb_services: {v}");
}

/// netd restarts on node 1: it adopts the pinned programs (no reload) or the IPVS services, a
/// connection opened before the restart keeps working, and new connections are still balanced.
fn restart_adopts(r: &Rig, drained: &str, removed: &str) {
    let dir = r.cluster.dir.clone();
    let go = dir.join("hold2-go");
    let (node, c0) = &r.clients[0];
    let mut hold = hold_through_vip(&c0.name, r.cgroup(*node).as_deref(), &go, &dir, "hold2");
    lb::first_line(&hold, 0, STARTED).unwrap();
    let n1 = r.cluster.node(1);
    n1.restart();
    let adopting = match r.kind {
        LbKind::Ipvs => "adopting IPVS services found in the kernel",
        _ => "adopting pinned LB programs",
    };
    // IPVS adopts on the first LB pass, right after the start.
    eventually(CONVERGE, "restart adopts what the kernel holds", || {
        if n1.log_tail(2000).contains(adopting) {
            Ok(())
        } else {
            Err(n1.log_tail(60))
        }
    });
    std::fs::write(&go, "").unwrap();
    let echo = lb::first_line(&hold, 1, Duration::from_secs(10)).unwrap();
    assert_eq!(
        echo["echo"],
        json!("still-there"),
        "connection across restart"
    );
    hold.wait_exit(Duration::from_secs(10)).unwrap();
    eventually(CONVERGE, "balanced after restart", || {
        let v = r.tcp(0, 120)?;
        let c = counts(&v);
        if c.len() == 4 && !c.contains_key(drained) && !c.contains_key(removed) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
}

#[test]
fn ebpf_service_load_balancing() {
    if !Path::new(lb::CGROUP_ROOT).join("cgroup.procs").exists() {
        println!("SKIP: no cgroup v2 at {}", lb::CGROUP_ROOT);
        return;
    }
    suite(LbKind::Ebpf);
}

#[test]
fn ebpf_vip_smoke() {
    if !Path::new(lb::CGROUP_ROOT).join("cgroup.procs").exists() {
        println!("SKIP: no cgroup v2 at {}", lb::CGROUP_ROOT);
        return;
    }
    smoke(LbKind::Ebpf);
}

/// `lb_backend = "ebpf"` needs TCX (BPF links on the tc hooks, Linux 6.6 and later). `netd
/// check` reports whether the kernel has it, in agreement with the kernel's version; on a kernel
/// without it (6.1 in the kernel-VM tier) netd refuses to start with that backend, naming what
/// is missing, the setting and the backends to use instead.
#[test]
fn ebpf_backend_needs_tcx() {
    if !is_root() {
        println!("SKIP: netd check needs root");
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = release.trim();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap());
    let version = (v.next().unwrap(), v.next().unwrap());
    let tcx_expected = version >= (6, 6);

    let bin = netd_bin();
    let check = run(bin.to_str().unwrap(), &["check", "--json"]).unwrap();
    let probes: Value = serde_json::from_str(&check.stdout)
        .unwrap_or_else(|e| panic!("netd check --json: {e}: {check:?}"));
    let tcx = probes
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["feature"] == "bpf-tcx")
        .unwrap_or_else(|| panic!("no bpf-tcx probe: {probes}"));
    eprintln!("kernel {release}: {tcx}");
    assert_eq!(tcx["ok"], json!(tcx_expected), "kernel {release}: {tcx}");
    if tcx_expected {
        return; // the eBPF suites show it working
    }

    let Some(cluster) = Cluster::builder(1)
        .config_line("lb_backend = \"nftables\"")
        .start()
    else {
        return;
    };
    let _cleanup = LbCleanup::new(&cluster);
    // The same node, restarted with the eBPF backend: refused at start, with the reason.
    let n1 = cluster.node(1);
    assert!(n1.stop(), "netd was running");
    let config = std::fs::read_to_string(&n1.config_path).unwrap();
    let ebpf = LbKind::Ebpf.config_lines().join("\n");
    std::fs::write(
        &n1.config_path,
        config.replace("lb_backend = \"nftables\"", &ebpf),
    )
    .unwrap();
    let limit = netd_tests::wait::scaled(Duration::from_secs(30)).as_secs();
    let out = run(
        "timeout",
        &[
            limit.to_string(),
            "nsenter".into(),
            format!("--net={}", netns::path(&n1.netns).display()),
            bin.display().to_string(),
            "run".into(),
            "--config".into(),
            n1.config_path.display().to_string(),
        ],
    )
    .unwrap();
    eprintln!(
        "netd run with lb_backend = \"ebpf\" on {}: {:?} {}",
        release,
        out.code,
        out.stderr
            .split("Stack backtrace")
            .next()
            .unwrap_or_default()
    );
    assert_eq!(
        out.code,
        Some(1),
        "refused at start (124: still running after {limit} s): {out:?}"
    );
    for word in ["lb_backend = \"ebpf\"", "TCX", "6.6", "nftables", "ipvs"] {
        assert!(
            out.stderr.contains(word),
            "the error names {word:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn nftables_vip_smoke() {
    smoke(LbKind::Nftables);
}

#[test]
fn nftables_service_load_balancing() {
    suite(LbKind::Nftables);
}

#[test]
#[ignore = "needs IPVS (not in this kernel): run by the kernel-VM tier on 6.12 (scripts/kernel-vm/tier.sh)"]
fn ipvs_service_load_balancing() {
    suite(LbKind::Ipvs);
}
