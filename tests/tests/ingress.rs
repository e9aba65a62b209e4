//! Published ports (routing mesh) on three nodes. The client is the underlay host that is not
//! a node (`Cluster::client_ns`, 192.168.77.100); tasks are containers attached to the ingress
//! network with their service's ports; servers answer `<task> <peer address>`.

use netd_tests::ingress::{host_listener, same_flow_via, try_bind};
use netd_tests::lb::{self, IdServer};
use netd_tests::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const INGRESS_VNI: u32 = 4300;
const INGRESS_SUBNET: &str = "10.233.0.0/16";
const APP_VNI: u32 = 4301;
const APP_SUBNET: &str = "10.234.1.0/24";
const TCP_TARGET: u16 = 8080;
const UDP_TARGET: u16 = 5353;

fn ingress_cluster() -> Option<Cluster> {
    ingress_cluster_with(&[])
}

fn ingress_cluster_with(config: &[String]) -> Option<Cluster> {
    let mut b = Cluster::builder(3);
    for l in config {
        b = b.config_line(l);
    }
    ingress_cluster_built(b)
}

fn ingress_cluster_built(b: netd_tests::cluster::ClusterBuilder) -> Option<Cluster> {
    let c = b.start()?;
    c.create_network(
        "ingress",
        &json!({"subnet": INGRESS_SUBNET, "vni": INGRESS_VNI, "ingress": true}),
    );
    Some(c)
}

/// A service spec: a TCP and a UDP port, both published in `mode`.
fn service(id: &str, tcp: Option<u16>, udp: Option<u16>, mode: &str, extra: Value) -> Value {
    let mut tcp_port = json!({"protocol": "tcp", "target_port": TCP_TARGET, "publish_mode": mode});
    let mut udp_port = json!({"protocol": "udp", "target_port": UDP_TARGET, "publish_mode": mode});
    if let Some(p) = tcp {
        tcp_port["published_port"] = json!(p);
    }
    if let Some(p) = udp {
        udp_port["published_port"] = json!(p);
    }
    if let Value::Object(o) = extra {
        for (k, v) in o {
            tcp_port[&k] = v.clone();
            udp_port[&k] = v;
        }
    }
    json!({"name": id, "id": id, "endpoint_mode": "vip", "vip": "10.233.255.250",
           "ports": [tcp_port, udp_port]})
}

struct Task {
    container: Container,
    name: String,
    node: usize,
    _server: IdServer,
}

fn start_task(c: &Cluster, node: usize, network: &str, svc: &Value, name: &str) -> (Task, Value) {
    let container = c.container();
    let (status, body) =
        c.node(node)
            .try_attach(&container, network, "eth0", Some(json!({"service": svc})));
    assert!(
        status == 200 || status == 201,
        "attach {name}: {status} {body}"
    );
    let server = IdServer::start_telling_peer(&container.name, TCP_TARGET, UDP_TARGET, name)
        .unwrap_or_else(|e| panic!("server {name}: {e:#}"));
    (
        Task {
            container,
            name: name.to_string(),
            node,
            _server: server,
        },
        body,
    )
}

/// Tasks of `svc` on the ingress network, started where `placed` says ((node, name) each),
/// and the set of their names.
fn ingress_tasks(
    c: &Cluster,
    svc: &Value,
    placed: &[(usize, &str)],
) -> (Vec<Task>, BTreeSet<String>) {
    let tasks: Vec<Task> = placed
        .iter()
        .map(|&(n, name)| start_task(c, n, "ingress", svc, name).0)
        .collect();
    let all = tasks.iter().map(|t| t.name.clone()).collect();
    (tasks, all)
}

/// `counts` of a client run: "<task> <peer>" → connections.
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

fn tasks_seen(v: &Value) -> BTreeSet<String> {
    counts(v)
        .keys()
        .filter_map(|k| k.split(' ').next())
        .map(str::to_string)
        .collect()
}

fn peers_seen(v: &Value) -> BTreeSet<String> {
    counts(v)
        .keys()
        .filter_map(|k| k.split(' ').nth(1))
        .map(str::to_string)
        .collect()
}

fn client(ns: &str, args: &[String]) -> Result<Value, String> {
    lb::client(ns, None, args).map_err(|e| format!("{e:#}"))
}

fn tcp(ns: &str, dst: Ipv4Addr, port: u16, n: usize) -> Result<Value, String> {
    client(
        ns,
        &[
            "tcp".into(),
            dst.to_string(),
            port.to_string(),
            n.to_string(),
        ],
    )
}

fn udp(ns: &str, dst: Ipv4Addr, port: u16, n: usize) -> Result<Value, String> {
    client(
        ns,
        &[
            "udp".into(),
            dst.to_string(),
            port.to_string(),
            n.to_string(),
        ],
    )
}

/// The node's ingress leg address (its endpoint `ingress-sbox`).
fn leg_ip(node: &Node) -> String {
    node.endpoints()
        .into_iter()
        .find(|e| e.id == "ingress-sbox")
        .map(|e| e.ip.to_string())
        .unwrap_or_else(|| panic!("{}: no ingress leg endpoint", node.name))
}

/// Every node serves every task until `all` are seen from the client through each node.
/// A client on the underlay holding one flow (`hold`: an idle TCP connection; `udphold`: a
/// connected UDP socket sending every 50 ms) through `node`'s published `port`, until the file
/// it returns exists; and the task that answered first.
fn hold_through(
    c: &Cluster,
    mode: &str,
    node: usize,
    port: u16,
    tag: &str,
) -> (Background, PathBuf, String) {
    let flag = c.dir.join(format!("release-{tag}"));
    let bg = lb::client_bg(
        c.client_ns(),
        None,
        &[
            mode.into(),
            c.node(node).addr.to_string(),
            port.to_string(),
            flag.display().to_string(),
        ],
        &c.dir,
        tag,
    )
    .unwrap();
    let first = lb::first_line(&bg, 0, std::time::Duration::from_secs(10)).unwrap();
    let task = task_of(&first);
    (bg, flag, task)
}

/// The task named in a client line's `backend` (`<task> <peer ip>`).
fn task_of(line: &Value) -> String {
    let answer = line["backend"].as_str().unwrap_or_default();
    answer.split(' ').next().unwrap_or_default().to_string()
}

fn delete_task(c: &Cluster, t: &Task) {
    let (s, body) = c.node(t.node).api(
        "DELETE",
        &format!("/v1/endpoints/{}", t.container.endpoint_id("eth0")),
        None,
    );
    assert_eq!(s, 204, "{body}");
}

fn wait_all_reachable(c: &Cluster, port: u16, all: &BTreeSet<String>) {
    for node in &c.nodes {
        eventually(
            CONVERGE,
            &format!("{port} via {} reaches {all:?}", node.name),
            || {
                let v = tcp(c.client_ns(), node.addr, port, 30)?;
                if tasks_seen(&v) == *all {
                    Ok(())
                } else {
                    Err(format!("{v}"))
                }
            },
        );
    }
}

#[test]
fn ingress_port_answers_on_every_node_over_all_tasks_tcp_udp_and_localhost() {
    let Some(c) = ingress_cluster() else { return };
    let svc = service("web", Some(30080), Some(30053), "ingress", json!({}));
    // Two tasks on node 1, one on node 2, none on node 3.
    let (tasks, all) = ingress_tasks(&c, &svc, &[(1, "t1"), (1, "t2"), (2, "t3")]);
    wait_all_reachable(&c, 30080, &all);
    for node in &c.nodes {
        // Many connections: all tasks, local and remote; the task sees the node's leg (SNAT).
        let v = tcp(c.client_ns(), node.addr, 30080, 90).unwrap();
        assert_eq!(tasks_seen(&v), all, "via {}: {v}", node.name);
        assert!(
            v["errors"].as_object().unwrap().is_empty(),
            "via {}: {v}",
            node.name
        );
        assert_eq!(
            peers_seen(&v),
            BTreeSet::from([leg_ip(node)]),
            "via {}: {v}",
            node.name
        );
        // UDP: every datagram from a new socket (new source port) is balanced anew.
        let u = eventually(CONVERGE, "udp via node", || {
            let u = udp(c.client_ns(), node.addr, 30053, 40)?;
            (tasks_seen(&u) == all)
                .then_some(u.clone())
                .ok_or(format!("{u}"))
        });
        assert_eq!(
            u["connected_from"].as_str().unwrap(),
            format!("{}:30053", node.addr),
            "UDP replies come from the published address"
        );
        // The node itself, through localhost.
        let v = tcp(&node.netns, Ipv4Addr::LOCALHOST, 30080, 40).unwrap();
        assert_eq!(tasks_seen(&v), all, "localhost on {}: {v}", node.name);
    }
    // Node 3 has no task, and has the ingress sandbox all the same.
    assert!(c.node(3).endpoints().iter().all(|e| e.id == "ingress-sbox"));
    assert!(netd_tests::netns::exists(&c.node(3).sandbox(INGRESS_VNI)));
    drop(tasks);
}

#[test]
fn same_flow_gets_the_same_backend_through_any_node() {
    let Some(c) = ingress_cluster() else { return };
    let svc = service("web", Some(30081), Some(30054), "ingress", json!({}));
    let (_tasks, all) = ingress_tasks(&c, &svc, &[(1, "a1"), (2, "a2"), (3, "a3"), (2, "a4")]);
    wait_all_reachable(&c, 30081, &all);
    let addrs: Vec<Ipv4Addr> = c.nodes.iter().map(|n| n.addr).collect();
    let sports: Vec<u16> = (0..40).map(|i| 21000 + i * 7).collect();
    let rows = same_flow_via(c.client_ns(), &addrs, 30081, &sports).unwrap();
    let mut chosen = BTreeSet::new();
    for (sport, row) in &rows {
        let row: Vec<&str> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(all.contains(row[0]), "source port {sport}: {row:?}");
        assert!(
            row.iter().all(|b| *b == row[0]),
            "source port {sport}: backends differ by node: {row:?}"
        );
        chosen.insert(row[0].to_string());
    }
    assert!(chosen.len() >= 3, "40 flows spread over only {chosen:?}");
}

#[test]
fn client_ip_is_preserved_on_request_for_local_and_remote_tasks() {
    let Some(c) = ingress_cluster() else { return };
    let svc = service(
        "keep",
        Some(30082),
        Some(30055),
        "ingress",
        json!({"preserve_client_ip": true}),
    );
    let (_tasks, all) = ingress_tasks(&c, &svc, &[(1, "p1"), (2, "p2")]);
    wait_all_reachable(&c, 30082, &all);
    let client_ip = BTreeSet::from([CLIENT_ADDR.to_string()]);
    for node in &c.nodes {
        let v = tcp(c.client_ns(), node.addr, 30082, 40).unwrap();
        assert_eq!(tasks_seen(&v), all, "via {}: {v}", node.name);
        assert_eq!(
            peers_seen(&v),
            client_ip,
            "via {}: the tasks must see the client: {v}",
            node.name
        );
        let u = eventually(CONVERGE, "udp", || {
            let u = udp(c.client_ns(), node.addr, 30055, 30)?;
            (tasks_seen(&u) == all)
                .then_some(u.clone())
                .ok_or(format!("{u}"))
        });
        assert_eq!(peers_seen(&u), client_ip, "UDP via {}: {u}", node.name);
    }
}

#[test]
fn host_mode_answers_only_where_a_task_runs_with_the_client_ip() {
    let Some(c) = Cluster::new(3) else { return };
    c.create_network("app", &json!({"subnet": APP_SUBNET, "vni": APP_VNI}));
    let mut svc = service("hosted", Some(31001), Some(31002), "host", json!({}));
    svc["endpoint_mode"] = json!("dnsrr");
    svc.as_object_mut().unwrap().remove("vip");
    let (task, _) = start_task(&c, 2, "app", &svc, "h1");
    let v = eventually(CONVERGE, "host port on node 2", || {
        tcp(c.client_ns(), c.node(2).addr, 31001, 10).and_then(|v| {
            (tasks_seen(&v) == BTreeSet::from(["h1".to_string()]))
                .then_some(v.clone())
                .ok_or(format!("{v}"))
        })
    });
    assert_eq!(
        peers_seen(&v),
        BTreeSet::from([CLIENT_ADDR.to_string()]),
        "{v}"
    );
    let u = udp(c.client_ns(), c.node(2).addr, 31002, 5).unwrap();
    assert_eq!(
        peers_seen(&u),
        BTreeSet::from([CLIENT_ADDR.to_string()]),
        "{u}"
    );
    for n in [1, 3] {
        let v = tcp(c.client_ns(), c.node(n).addr, 31001, 3).unwrap();
        assert!(
            counts(&v).is_empty(),
            "node {n} has no task but answered: {v}"
        );
        assert_eq!(v["errors"]["ECONNREFUSED"], json!(3), "node {n}: {v}");
    }
    // A task on an internal network only has no egress leg to reach: refused.
    c.create_network(
        "inner",
        &json!({"subnet": "10.234.2.0/24", "vni": 4302, "internal": true}),
    );
    let k = c.container();
    let (s, b) = c
        .node(1)
        .try_attach(&k, "inner", "eth0", Some(json!({"service": svc})));
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("service.ports[0].publish_mode")),
        "{b}"
    );
    drop(task);
}

#[test]
fn published_ports_are_reserved_checked_and_assigned() {
    let Some(c) = ingress_cluster() else { return };
    // A host process holds 30555 on node 1: refused, naming the holder; nothing changes.
    let holder = host_listener(&c.node(1).netns, 30555, &c.dir, "holder").unwrap();
    let cont = c.container();
    let svc = service("clash", Some(30555), None, "ingress", json!({}));
    let (status, body) =
        c.node(1)
            .try_attach(&cont, "ingress", "eth0", Some(json!({"service": svc})));
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"]["field"], "service.ports[0].published_port",
        "{body}"
    );
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("30555/tcp")
            && msg.contains(&format!("pid {}", holder.pid()))
            && msg.contains("python3"),
        "{msg}"
    );
    assert!(!c
        .node(1)
        .endpoints()
        .iter()
        .any(|e| e.id == cont.endpoint_id("eth0")));
    let links = exec_in_ok(&cont.name, &["ip", "-o", "link"]).stdout;
    assert_eq!(
        links.lines().count(),
        1,
        "only lo in the container: {links}"
    );
    drop(holder);

    // Service A publishes 30600 (node 1); service B asking for it on node 2 is refused.
    let (_a, _) = start_task(
        &c,
        1,
        "ingress",
        &service("svc-a", Some(30600), None, "ingress", json!({})),
        "a1",
    );
    eventually(CONVERGE, "node 2 learns svc-a", || {
        c.node(2)
            .remote_endpoints()
            .iter()
            .any(|e| e.name == _a.container.name)
            .then_some(())
            .ok_or("not yet".to_string())
    });
    let cont_b = c.container();
    let (status, body) = c.node(2).try_attach(
        &cont_b,
        "ingress",
        "eth0",
        Some(json!({"service": service("svc-b", Some(30600), None, "ingress", json!({}))})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("svc-a"),
        "{body}"
    );
    // The port is reserved on every node, also where no task runs.
    for node in &c.nodes {
        eventually(CONVERGE, "reserved", || {
            match try_bind(&node.netns, 30600) {
                Err(e) if e == "EADDRINUSE" => Ok(()),
                other => Err(format!("{}: bind 30600 gave {other:?}", node.name)),
            }
        });
    }

    // No number: one from 30000-32767, reported in the endpoint, the same for the next task.
    let auto = service("svc-auto", None, None, "ingress", json!({}));
    let (_t1, body1) = start_task(&c, 1, "ingress", &auto, "auto1");
    let port = body1["service"]["ports"][0]["published_port"]
        .as_u64()
        .unwrap_or(0);
    assert!((30000..=32767).contains(&port), "{body1}");
    let uport = body1["service"]["ports"][1]["published_port"]
        .as_u64()
        .unwrap_or(0);
    assert!((30000..=32767).contains(&uport), "{body1}");
    eventually(CONVERGE, "node 3 learns svc-auto", || {
        c.node(3)
            .remote_endpoints()
            .iter()
            .any(|e| e.name == _t1.container.name)
            .then_some(())
            .ok_or("not yet".to_string())
    });
    let (_t2, body2) = start_task(&c, 3, "ingress", &auto, "auto2");
    assert_eq!(
        body2["service"]["ports"][0]["published_port"].as_u64(),
        Some(port),
        "{body2}"
    );
    let all = BTreeSet::from(["auto1".to_string(), "auto2".to_string()]);
    wait_all_reachable(&c, port as u16, &all);

    // Bad input: 400/409 naming the field.
    let bad = |svc: Value| {
        let k = c.container();
        c.node(1)
            .try_attach(&k, "ingress", "eth0", Some(json!({"service": svc})))
    };
    let (s, b) = bad(service("z", Some(0), None, "ingress", json!({})));
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("service.ports[0].published_port")),
        "{b}"
    );
    let (s, b) = bad(service("z", None, Some(1), "host", json!({})));
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("service.ports[0].published_port")),
        "{b}"
    );
    let (s, b) = c.node(1).api(
        "PUT",
        "/v1/networks/ingress2",
        Some(&json!({"subnet": "10.235.0.0/16", "vni": 4399, "ingress": true})),
    );
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (409, Some("ingress")),
        "{b}"
    );
    let (s, _) = c.node(1).api("PUT", "/v1/endpoints/ingress-sbox", Some(&json!({
        "network": "ingress", "netns": cont.path().display().to_string(), "ifname": "eth0", "name": "x"})));
    assert_eq!(s, 400);
}

#[test]
fn removed_task_gets_no_new_connections_and_idle_connections_survive() {
    let Some(c) = ingress_cluster() else { return };
    let svc = service("web", Some(30090), Some(30091), "ingress", json!({}));
    let (mut tasks, all) = ingress_tasks(&c, &svc, &[(1, "r1"), (2, "r2"), (3, "r3")]);
    wait_all_reachable(&c, 30090, &all);
    // A connection through node 3, held idle while a task goes away.
    let (hold, flag, held_task) = hold_through(&c, "hold", 3, 30090, "hold");
    let gone_idx = tasks.iter().position(|t| t.name != held_task).unwrap();
    let gone = tasks.remove(gone_idx);
    delete_task(&c, &gone);
    let rest: BTreeSet<String> = tasks.iter().map(|t| t.name.clone()).collect();
    for node in &c.nodes {
        eventually(CONVERGE, "removed task leaves", || {
            let v = tcp(c.client_ns(), node.addr, 30090, 40)?;
            (tasks_seen(&v) == rest)
                .then_some(())
                .ok_or(format!("via {}: {v}", node.name))
        });
    }
    for node in &c.nodes {
        let v = tcp(c.client_ns(), node.addr, 30090, 60).unwrap();
        assert_eq!(tasks_seen(&v), rest, "via {}: {v}", node.name);
        assert!(v["errors"].as_object().unwrap().is_empty(), "{v}");
    }
    // Drain the held task: no new connections, the idle one still answers.
    let h = tasks.iter().find(|t| t.name == held_task).unwrap();
    let (s, _) = c.node(h.node).api(
        "PATCH",
        &format!("/v1/endpoints/{}", h.container.endpoint_id("eth0")),
        Some(&json!({"service_disabled": true})),
    );
    assert_eq!(s, 200);
    let left: BTreeSet<String> = rest.iter().filter(|n| **n != held_task).cloned().collect();
    eventually(CONVERGE, "drained task leaves", || {
        let v = tcp(c.client_ns(), c.node(1).addr, 30090, 40)?;
        (tasks_seen(&v) == left).then_some(()).ok_or(format!("{v}"))
    });
    std::fs::write(&flag, "").unwrap();
    let echo = lb::first_line(&hold, 1, std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(echo["echo"], "still-there", "{echo}");
    drop(gone);
}

/// A task drained on another node leaves the routing mesh by gossip alone: with drift repair
/// (the periodic full pass) out of the picture, node 1 stops sending new connections to node 2's
/// drained task, and takes it back once enabled.
#[test]
fn a_remote_drain_leaves_the_routing_mesh_without_a_full_pass() {
    let Some(c) = ingress_cluster_built(
        Cluster::builder(2).reconcile_interval(std::time::Duration::from_secs(3600)),
    ) else {
        return;
    };
    let svc = service("web", Some(30099), None, "ingress", json!({}));
    let (tasks, all) = ingress_tasks(&c, &svc, &[(1, "d1"), (2, "d2")]);
    wait_all_reachable(&c, 30099, &all);
    let remote = &tasks[1];
    for (disabled, want) in [(true, vec!["d1"]), (false, vec!["d1", "d2"])] {
        let (s, body) = c.node(remote.node).api(
            "PATCH",
            &format!("/v1/endpoints/{}", remote.container.endpoint_id("eth0")),
            Some(&json!({ "service_disabled": disabled })),
        );
        assert_eq!(s, 200, "{body}");
        let want: BTreeSet<String> = want.into_iter().map(String::from).collect();
        eventually(
            CONVERGE,
            &format!("node 1 after drained={disabled}"),
            || {
                let v = tcp(c.client_ns(), c.node(1).addr, 30099, 30)?;
                (tasks_seen(&v) == want).then_some(()).ok_or(format!("{v}"))
            },
        );
    }
}

#[test]
fn a_restart_keeps_published_ports_and_established_flows() {
    let Some(c) = ingress_cluster() else { return };
    let svc = service("web", Some(30095), Some(30096), "ingress", json!({}));
    let (_tasks, all) = ingress_tasks(&c, &svc, &[(1, "k1"), (2, "k2")]);
    wait_all_reachable(&c, 30095, &all);
    let (hold, flag, _) = hold_through(&c, "hold", 3, 30095, "restart-hold");
    c.node(3).restart();
    // At once after the restart (before any gossip round): still reserved and serving.
    assert_eq!(
        try_bind(&c.node(3).netns, 30095),
        Err("EADDRINUSE".to_string())
    );
    let v = tcp(c.client_ns(), c.node(3).addr, 30095, 30).unwrap();
    assert!(v["errors"].as_object().unwrap().is_empty(), "{v}");
    wait_all_reachable(&c, 30095, &all);
    std::fs::write(&flag, "").unwrap();
    let echo = lb::first_line(&hold, 1, std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(echo["echo"], "still-there", "{echo}");
    // Still exactly one leg on node 3 (adopted, not re-created).
    let legs = c
        .node(3)
        .endpoints()
        .into_iter()
        .filter(|e| e.id == "ingress-sbox")
        .count();
    assert_eq!(legs, 1);
}

#[test]
fn every_node_gets_a_leg_and_deleting_the_ingress_network_removes_it_all() {
    let Some(c) = ingress_cluster() else { return };
    let mut legs = BTreeSet::new();
    for node in &c.nodes {
        let leg = leg_ip(node);
        assert!(legs.insert(leg.clone()), "leg addresses repeat: {legs:?}");
        let addrs = netd_tests::kernel::ipv4_addrs(&node.netns, "netd_ingress").unwrap();
        assert!(
            addrs.iter().any(|a| a.starts_with(&format!("{leg}/"))),
            "{}: {addrs:?}",
            node.name
        );
        assert!(netd_tests::netns::exists(&node.sandbox(INGRESS_VNI)));
    }
    // The legs reach each other over the overlay (node 1 to node 3, neither has a task).
    let leg3: Ipv4Addr = leg_ip(c.node(3)).parse().unwrap();
    eventually(CONVERGE, "leg to leg", || {
        netd_tests::checks::pingable(&c.node(1).netns, leg3)
    });
    let (s, b) = c.node(1).api("DELETE", "/v1/endpoints/ingress-sbox", None);
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("id")), "{b}");
    // No longer the ingress network (node 3): its leg goes; the other nodes keep theirs.
    let (s, b) = c.node(3).api(
        "PUT",
        "/v1/networks/ingress",
        Some(&json!({"subnet": INGRESS_SUBNET, "vni": INGRESS_VNI})),
    );
    assert_eq!(s, 200, "{b}");
    assert!(!c.node(3).endpoints().iter().any(|e| e.id == "ingress-sbox"));
    assert!(!netd_tests::netns::exists(&c.node(3).sandbox(INGRESS_VNI)));
    for node in &c.nodes {
        let (s, b) = node.api("DELETE", "/v1/networks/ingress", None);
        assert_eq!(s, 204, "{b}");
        assert!(!node.endpoints().iter().any(|e| e.id == "ingress-sbox"));
        assert!(!netd_tests::netns::exists(&node.sandbox(INGRESS_VNI)));
        assert!(netd_tests::kernel::ipv4_addrs(&node.netns, "netd_ingress")
            .map_or(true, |a| a.is_empty()));
        let tables = exec_in_ok(&node.netns, &["nft", "list", "tables"]).stdout;
        assert!(!tables.contains("netd_ingress"), "{}: {tables}", node.name);
    }
}

#[test]
fn ingress_works_alongside_the_ebpf_vip_load_balancer() {
    let Some(c) = ingress_cluster_with(&lb::LbKind::Ebpf.config_lines()) else {
        return;
    };
    let _cleanup = lb::LbCleanup::new(&c);
    let svc = service("web", Some(30097), Some(30098), "ingress", json!({}));
    let (_tasks, all) = ingress_tasks(&c, &svc, &[(1, "e1"), (2, "e2")]);
    wait_all_reachable(&c, 30097, &all);
    for node in &c.nodes {
        let v = tcp(c.client_ns(), node.addr, 30097, 40).unwrap();
        assert_eq!(tasks_seen(&v), all, "via {}: {v}", node.name);
    }
}

#[test]
fn a_udp_flow_pinned_to_a_removed_task_moves_to_a_live_one() {
    let Some(c) = ingress_cluster() else { return };
    let svc = service("dns", Some(30093), Some(30094), "ingress", json!({}));
    let (mut tasks, all) = ingress_tasks(&c, &svc, &[(1, "u1"), (2, "u2"), (3, "u3")]);
    wait_all_reachable(&c, 30093, &all);
    // One UDP socket sending every 50 ms through node 1: always the same flow.
    let (hold, flag, pinned) = hold_through(&c, "udphold", 1, 30094, "udphold");
    let idx = tasks.iter().position(|t| t.name == pinned).unwrap();
    let gone = tasks.remove(idx);
    delete_task(&c, &gone);
    // The same socket (no reconnect) is answered by a live task again.
    let next = lb::first_line(&hold, 1, CONVERGE).unwrap();
    let now = task_of(&next);
    assert!(now != pinned && all.contains(&now), "{next}");
    assert_eq!(next["reconnects"], json!(0), "{next}");
    std::fs::write(&flag, "").unwrap();
    drop(gone);
}
