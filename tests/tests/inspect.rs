//! `netd inspect` against a real two-node cluster with the eBPF LB: every view's JSON parses
//! and carries its documented fields; drift made on purpose (an FDB entry deleted, a stray one
//! added, a service entry removed from the pinned LB map) is reported with a non-zero exit and
//! repaired by the reconcile loop (inspect clean again, `drift_repaired` events streamed);
//! `path` names the broken hop (missing FDB entry, a service whose backends are all draining,
//! a DNS name not on a shared network); with the daemon stopped, inspect still shows the
//! kernel and says desired state is unavailable.
//!
//! Timing: the drift is made by hand while the periodic repair runs (every 2 s in the harness), so a
//! repair may land between making the drift and inspecting it. Each check is therefore retried
//! (up to 5 times, drift made afresh) and must be caught at least once.

use netd_tests::inspect::{inspect, watch, Inspect};
use netd_tests::lb::{LbCleanup, LbKind};
use netd_tests::*;
use serde_json::{json, Value};

const VNI: u32 = 4301;
const OTHER_VNI: u32 = 4302;
const SUBNET: &str = "10.233.1.0/24";
const OTHER_SUBNET: &str = "10.233.2.0/24";
const VIP: &str = "10.233.1.250";
const PORT: u16 = 8080;
const STRAY_MAC: &str = "02:42:de:ad:be:ef";

fn service() -> Value {
    json!({"service": {"name": "web", "id": "web", "vip": VIP, "endpoint_mode": "vip",
        "ports": [{"protocol": "tcp", "target_port": PORT}]}})
}

#[track_caller]
fn has_fields(v: &Value, fields: &[&str], what: &str) {
    for f in fields {
        assert!(v.get(*f).is_some(), "{what}: field {f:?} missing in {v:#}");
    }
}

fn drift_has(v: &Value, kind: &str, object: &str, key: &str) -> bool {
    v["drift"].as_array().is_some_and(|d| {
        d.iter()
            .any(|e| e["kind"] == kind && e["object"] == object && e["key"].as_str() == Some(key))
    })
}

/// Makes drift with `make` and inspects with `check` right away, up to 5 times (the periodic
/// repair may win a race); returns the first inspect that caught it.
#[track_caller]
fn caught<T>(
    what: &str,
    mut make: impl FnMut(),
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let mut last = String::new();
    for attempt in 1..=5 {
        make();
        match check() {
            Ok(t) => {
                eprintln!("{what}: reported (attempt {attempt})");
                return t;
            }
            Err(e) => last = e,
        }
    }
    panic!("{what}: never reported; last: {last}");
}

fn events(w: &Background) -> Vec<Value> {
    w.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A view made with the daemon stopped: exit 1, desired state said to be unavailable.
#[track_caller]
fn daemon_down_reported(r: &Inspect, v: &Value) {
    assert_eq!(r.code, 1, "{v:#}");
    let state = v["desired_state"].as_str().unwrap_or_default();
    assert!(state.starts_with("unavailable"), "{v:#}");
}

fn clean(r: &Inspect) -> Result<Value, String> {
    let v = r.json();
    if r.code == 0 && v["problems"] == json!([]) {
        Ok(v)
    } else {
        Err(format!("exit {}: {}", r.code, r.stdout))
    }
}

#[test]
fn inspect_views_drift_paths_and_daemon_down() {
    let mut b = Cluster::builder(2);
    for l in LbKind::Ebpf.config_lines() {
        b = b.config_line(&l);
    }
    let Some(cluster) = b.start() else { return };
    let _cleanup = LbCleanup::new(&cluster);
    let (n1, n2) = (cluster.node(1), cluster.node(2));
    cluster.create_network("inet", &json!({"subnet": SUBNET, "vni": VNI}));
    cluster.create_network("other", &json!({"subnet": OTHER_SUBNET, "vni": OTHER_VNI}));
    let client = cluster.container();
    let client_ep = n1.attach(&client, "inet", "eth0", None);
    let task = cluster.container();
    let task_ep = n2.attach(&task, "inet", "eth0", Some(service()));
    let lonely = cluster.container();
    n2.attach(&lonely, "other", "eth0", None);
    wait_meshed(
        &cluster,
        VNI,
        &[
            Attached {
                node: 1,
                container: client.clone(),
                ep: client_ep.clone(),
            },
            Attached {
                node: 2,
                container: task.clone(),
                ep: task_ep.clone(),
            },
        ],
    );
    let sandbox = n1.sandbox(VNI);
    let vx = format!("vx-{VNI}");

    // Summary: identity, peers, networks, kernel features.
    let s = eventually(CONVERGE, "summary clean", || {
        clean(&inspect(n1, &["--json"]))
    });
    has_fields(
        &s,
        &[
            "desired_state",
            "node",
            "networks",
            "services",
            "lb_backend",
            "kernel_features",
            "warnings",
            "problems",
        ],
        "summary",
    );
    assert_eq!(s["desired_state"], "available");
    assert_eq!(s["node"]["node"], n1.name);
    // crypto: no encrypted network, no keys: nothing wrong, no SAs.
    let r = inspect(n1, &["--json", "crypto"]);
    let cv = r.json();
    has_fields(
        &cv,
        &[
            "desired_state",
            "esp_supported",
            "key_tags",
            "encrypted_networks",
            "drop_rules",
            "peers",
            "problems",
        ],
        "crypto",
    );
    assert_eq!(
        (r.code, &cv["desired_state"]),
        (0, &json!("available")),
        "{cv:#}"
    );
    assert_eq!(cv["encrypted_networks"], json!([]), "{cv:#}");
    assert_eq!(s["node"]["peers"][0]["live"], true, "{s:#}");
    let inet = s["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "inet")
        .cloned()
        .unwrap();
    has_fields(
        &inet,
        &[
            "name",
            "vni",
            "subnet",
            "sandbox",
            "sandbox_present",
            "local_endpoints",
            "remote_endpoints",
            "kernel_fdb_entries",
            "drift",
        ],
        "summary network",
    );
    assert_eq!(inet["drift"], 0);

    // Network: endpoints, peers, kernel entries, no drift.
    let net = eventually(CONVERGE, "network clean", || {
        clean(&inspect(n1, &["--json", "network", "inet"]))
    });
    has_fields(
        &net,
        &[
            "desired_state",
            "name",
            "vni",
            "network",
            "sandbox",
            "sandbox_present",
            "vxlan",
            "bridge_ports",
            "local_endpoints",
            "remote_endpoints",
            "kernel",
            "drift",
            "problems",
        ],
        "network",
    );
    assert_eq!(net["vni"], VNI);
    assert_eq!(net["vxlan"]["vni"], VNI);
    assert_eq!(net["vxlan"]["local"], n1.addr.to_string());
    let l = &net["local_endpoints"][0];
    has_fields(
        l,
        &[
            "id",
            "name",
            "container",
            "ifname",
            "ip",
            "mac",
            "host_end",
            "host_end_present",
        ],
        "local endpoint",
    );
    assert_eq!(l["id"], client_ep.id);
    assert_eq!(l["host_end_present"], true);
    let r = &net["remote_endpoints"][0];
    assert_eq!(
        (r["ip"].as_str(), r["node"].as_str()),
        (
            Some(task_ep.ip.to_string().as_str()),
            Some(n2.name.as_str())
        )
    );
    let fdb = net["kernel"]["fdb"].as_array().unwrap();
    assert!(
        fdb.iter()
            .any(|f| f["mac"] == task_ep.mac && f["dst"] == n2.addr.to_string()),
        "{net:#}"
    );
    assert!(net["kernel"]["neighbors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["ip"] == task_ep.ip.to_string()));

    // Service: desired backends and what the maps hold.
    let svc = eventually(CONVERGE, "service clean", || {
        let v = clean(&inspect(n1, &["--json", "service", "web"]))?;
        (v["frontends"][0]["kernel"]["maglev"]["filled"] == 1021)
            .then_some(v.clone())
            .ok_or(v.to_string())
    });
    has_fields(
        &svc,
        &[
            "desired_state",
            "name",
            "lb_backend",
            "lb_pin_dir",
            "service",
            "frontends",
            "drift",
            "warnings",
            "problems",
        ],
        "service",
    );
    assert_eq!(svc["lb_backend"], "ebpf");
    assert_eq!(
        svc["service"]["vips"],
        json!([{"network": "inet", "vip": VIP}])
    );
    let t = &svc["service"]["tasks"][0];
    has_fields(
        t,
        &[
            "endpoint_id",
            "node",
            "local",
            "network",
            "name",
            "ip",
            "mac",
            "state",
        ],
        "task",
    );
    assert_eq!(
        (t["node"].as_str(), t["state"].as_str()),
        (Some(n2.name.as_str()), Some("active"))
    );
    let fe = &svc["frontends"][0];
    assert_eq!(fe["frontend"], format!("{VIP}:{PORT}/tcp"));
    has_fields(
        &fe["kernel"],
        &[
            "slot",
            "backend_count",
            "backends",
            "maglev",
            "vip_enabled_backends",
            "conntrack",
            "udp_reverse_nat",
        ],
        "kernel frontend",
    );
    assert_eq!(fe["kernel"]["backends"][0]["ip"], task_ep.ip.to_string());
    assert_eq!(fe["kernel"]["backends"][0]["maglev_slots"], 1021);
    assert_eq!(
        fe["desired"]["backends"],
        json!([format!("{}:{PORT}", task_ep.ip)])
    );

    // DNS: the client sees the service and itself, not the other network's names.
    let d = inspect(n1, &["--json", "dns", "--container", &client_ep.id, "web"]);
    assert_eq!(d.code, 0, "{}", d.stdout);
    let d = d.json();
    has_fields(&d["dns"], &["networks", "records", "query"], "dns");
    assert_eq!(d["dns"]["networks"], json!(["inet"]));
    assert_eq!(d["dns"]["query"]["source"], "netd");
    assert_eq!(d["dns"]["query"]["ips"], json!([VIP]));
    assert_eq!(d["resolver_redirect"], true);
    let names: Vec<&str> = d["dns"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"web") && names.contains(&client.name.as_str()),
        "{names:?}"
    );
    assert!(!names.contains(&lonely.name.as_str()), "{names:?}");

    // Path: the whole walk works.
    let to = format!("web:{PORT}");
    let p = inspect(n1, &["--json", "path", "--from", &client.name, "--to", &to]);
    let pv = p.json();
    assert_eq!((p.code, pv["result"].as_str()), (0, Some("ok")), "{pv:#}");
    has_fields(
        &pv,
        &[
            "desired_state",
            "from",
            "to",
            "protocol",
            "port",
            "hops",
            "result",
            "failed_step",
            "reason",
            "problems",
        ],
        "path",
    );
    let steps: Vec<&str> = pv["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["step"].as_str())
        .collect();
    for s in [
        "source",
        "dns",
        "load_balancer",
        "route",
        "neighbor",
        "fdb",
        "vtep",
        "underlay",
        "encryption",
    ] {
        assert!(steps.contains(&s), "{s} missing in {steps:?}");
    }
    has_fields(&pv["hops"][0], &["step", "status", "detail"], "hop");
    assert!(pv["hops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["step"] == "encryption"
            && h["detail"].as_str().unwrap().contains("not encrypted")));

    // Path: a name on a network the client is not attached to.
    let p = inspect(
        n1,
        &[
            "--json",
            "path",
            "--from",
            &client.name,
            "--to",
            &format!("{}:80", lonely.name),
        ],
    );
    let pv = p.json();
    assert_eq!(
        (p.code, pv["failed_step"].as_str()),
        (1, Some("dns")),
        "{pv:#}"
    );
    assert!(
        pv["reason"].as_str().unwrap().contains("not attached"),
        "{pv:#}"
    );

    // The human forms (printed for people reading a failed run; spot-checked).
    for args in [
        vec![],
        vec!["network", "inet"],
        vec!["service", "web"],
        vec!["dns", "--container", &client.name],
        vec!["path", "--from", &client.name, "--to", &to],
    ] {
        let r = inspect(n1, &args);
        eprintln!(
            "$ netd inspect {}\n{}{}",
            args.join(" "),
            r.stdout,
            r.stderr
        );
        assert_eq!(r.code, 0, "{args:?}: {}", r.stdout);
    }
    let human = inspect(n1, &["network", "inet"]).stdout;
    assert!(
        human.contains(&task_ep.mac) && human.contains("drift: none"),
        "{human}"
    );

    let w = watch(n1, &cluster.dir, "inspect-events");

    // FDB drift: the task's entry deleted, a stray one added.
    let (task_mac, vtep) = (task_ep.mac.clone(), n2.addr.to_string());
    caught(
        "FDB drift",
        || {
            let _ = run(
                "bridge",
                &[
                    "-n", &sandbox, "fdb", "del", &task_mac, "dev", &vx, "dst", &vtep, "self",
                ],
            );
            let _ = run(
                "bridge",
                &[
                    "-n",
                    &sandbox,
                    "fdb",
                    "replace",
                    STRAY_MAC,
                    "dev",
                    &vx,
                    "dst",
                    "10.233.99.99",
                    "self",
                    "permanent",
                ],
            );
        },
        || {
            let r = inspect(n1, &["--json", "network", "inet"]);
            let v = r.json();
            let p = inspect(
                n1,
                &[
                    "--json",
                    "path",
                    "--from",
                    &client_ep.id,
                    "--to",
                    &format!("{}:{PORT}", task_ep.ip),
                ],
            )
            .json();
            if r.code == 1
                && drift_has(&v, "missing", "fdb", &task_mac)
                && drift_has(&v, "extra", "fdb", STRAY_MAC)
                && p["failed_step"] == "fdb"
            {
                assert!(
                    p["reason"].as_str().unwrap().contains("no FDB entry"),
                    "{p:#}"
                );
                Ok(())
            } else {
                Err(format!("exit {}: {v:#}\npath: {p:#}", r.code))
            }
        },
    );
    eventually(CONVERGE, "FDB drift repaired", || {
        clean(&inspect(n1, &["--json", "network", "inet"]))
    });
    eventually(CONVERGE, "drift_repaired events", || {
        let ev = events(&w);
        let repaired: Vec<&Value> = ev
            .iter()
            .filter(|e| e["kind"] == "drift_repaired")
            .collect();
        let fdb_restored = repaired
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains(&task_mac));
        let stray_removed = repaired
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains(STRAY_MAC));
        (fdb_restored && stray_removed)
            .then_some(())
            .ok_or(format!("{ev:?}"))
    });
    if let Some(e) = events(&w).first() {
        has_fields(e, &["time_ms", "kind", "subject"], "event");
    }

    // LB drift: the service's entry removed from the pinned lb_services map.
    let pins = netd_tests::lb::pin_dir_of(n1).join("lb_services");
    let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
    let mut key: Vec<String> = vip.octets().iter().map(|b| format!("{b:02x}")).collect();
    key.extend(PORT.to_be_bytes().iter().map(|b| format!("{b:02x}")));
    key.extend(["06".into(), "00".into()]);
    let frontend = format!("{VIP}:{PORT}/tcp");
    caught(
        "LB map drift",
        || {
            let mut args = vec![
                "map",
                "delete",
                "pinned",
                pins.to_str().unwrap(),
                "key",
                "hex",
            ];
            args.extend(key.iter().map(String::as_str));
            let _ = run("bpftool", &args);
        },
        || {
            let r = inspect(n1, &["--json", "service", "web"]);
            let v = r.json();
            if r.code == 1 && drift_has(&v, "missing", "lb_service", &frontend) {
                Ok(())
            } else {
                Err(format!("exit {}: {v:#}", r.code))
            }
        },
    );
    eventually(CONVERGE, "LB drift repaired", || {
        clean(&inspect(n1, &["--json", "service", "web"]))
    });
    eventually(CONVERGE, "LB drift_repaired event", || {
        let ev = events(&w);
        ev.iter()
            .any(|e| {
                e["kind"] == "drift_repaired"
                    && e["detail"].as_str().unwrap_or("").contains(&frontend)
            })
            .then_some(())
            .ok_or(format!("{ev:?}"))
    });

    // Drained-only backends: the path fails at the load balancer; events tell.
    let (st, body) = n2.api(
        "PATCH",
        &format!("/v1/endpoints/{}", task_ep.id),
        Some(&json!({"service_disabled": true})),
    );
    assert_eq!(st, 200, "{body}");
    let pv = eventually(CONVERGE, "path fails on drained backends", || {
        let p = inspect(n1, &["--json", "path", "--from", &client.name, "--to", &to]);
        let v = p.json();
        (p.code == 1 && v["failed_step"] == "load_balancer")
            .then_some(v.clone())
            .ok_or(v.to_string())
    });
    assert!(
        pv["reason"].as_str().unwrap().contains("draining"),
        "{pv:#}"
    );
    let sv = inspect(n1, &["--json", "service", "web"]).json();
    assert_eq!(sv["service"]["tasks"][0]["state"], "draining", "{sv:#}");
    assert!(!sv["warnings"].as_array().unwrap().is_empty(), "{sv:#}");
    eventually(CONVERGE, "remote_endpoint_drained event", || {
        let ev = events(&w);
        ev.iter()
            .any(|e| e["kind"] == "remote_endpoint_drained" && e["subject"] == task_ep.id)
            .then_some(())
            .ok_or(format!("{ev:?}"))
    });

    // Daemon stopped: the kernel is still shown, desired state is said to be unavailable.
    assert!(n1.stop(), "netd on node 1 stops");
    let r = inspect(n1, &["--json", "network", "inet"]);
    let v = r.json();
    daemon_down_reported(&r, &v);
    assert_eq!(v["network"], Value::Null);
    assert_eq!(v["sandbox_present"], true);
    assert!(
        v["kernel"]["fdb"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["mac"] == task_mac),
        "{v:#}"
    );
    let r = inspect(n1, &["--json", "service", VIP]);
    let v = r.json();
    daemon_down_reported(&r, &v);
    assert_eq!(v["frontends"][0]["kernel"]["frontend"], frontend, "{v:#}");
    let r = inspect(n1, &["--json"]);
    let v = r.json();
    assert_eq!(r.code, 1, "{v:#}");
    assert!(
        v["networks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["vni"] == VNI),
        "{v:#}"
    );
    let r = inspect(n1, &["--json", "crypto"]);
    let v = r.json();
    daemon_down_reported(&r, &v);
    has_fields(
        &v,
        &["drop_rules", "peers", "key_tags"],
        "crypto, daemon down",
    );
    let r = inspect(n1, &["network", "inet"]);
    assert!(
        r.stdout.contains("unavailable") && r.stdout.contains(&task_mac),
        "{}",
        r.stdout
    );
    let r = inspect(n1, &["--json", "dns", "--container", &client.name]);
    let v = r.json();
    assert_eq!(
        (r.code, &v["resolver_redirect"]),
        (1, &json!(true)),
        "{v:#}"
    );
    assert_eq!(v["dns"], Value::Null, "{v:#}");
    let target = format!("{}:{PORT}", task_ep.ip);
    let r = inspect(
        n1,
        &["--json", "path", "--from", &client.name, "--to", &target],
    );
    let v = r.json();
    daemon_down_reported(&r, &v);
    assert!(
        v["hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["step"] == "route" && h["detail"].as_str().unwrap().contains("dev eth0")),
        "{v:#}"
    );
}

/// Benchmark (run by `scripts/bench/inspect.sh`, not a pass/fail test): `netd inspect
/// network` on a network with INSPECT_BENCH_ENDPOINTS (1000) local endpoints on node 1 and as
/// many remote ones (node 2: FDB and neighbor entries), against the by-hand baseline an
/// engineer would run (`bridge fdb` and `ip neigh` of the VXLAN device, the local and remote
/// endpoint tables from the API): median of INSPECT_BENCH_RUNS (7) each, and the ratio.
#[test]
#[ignore = "benchmark: scripts/bench/inspect.sh"]
fn inspect_network_bench() {
    let n: usize = std::env::var("INSPECT_BENCH_ENDPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runs: usize = std::env::var("INSPECT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let Some(cluster) = Cluster::new(2) else {
        return;
    };
    cluster.create_network("big", &json!({"subnet": "10.234.0.0/16", "vni": 4303}));
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for node in &cluster.nodes {
            for part in 0..2 {
                let cluster = &cluster;
                s.spawn(move || {
                    for _ in (part..n).step_by(2) {
                        let c = cluster.container();
                        node.attach(&c, "big", "eth0", None);
                    }
                });
            }
        }
    });
    eprintln!("attached {} endpoints in {:?}", 2 * n, t0.elapsed());
    let n1 = cluster.node(1);
    let sandbox = n1.sandbox(4303);
    eventually(
        std::time::Duration::from_secs(120),
        "node 1 programs every remote endpoint",
        || {
            let v = inspect(n1, &["--json", "network", "big"]).json();
            let (l, r, f) = (
                v["local_endpoints"].as_array().map_or(0, Vec::len),
                v["remote_endpoints"].as_array().map_or(0, Vec::len),
                v["kernel"]["fdb"].as_array().map_or(0, Vec::len),
            );
            (l == n && r == n && f == n && v["drift"] == json!([]))
                .then_some(())
                .ok_or(format!("local {l} remote {r} fdb {f}"))
        },
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let time = |f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1000.0
    };
    let (mut human, mut js, mut by_hand) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        human.push(time(&mut || {
            assert_eq!(inspect(n1, &["network", "big"]).code, 0)
        }));
        js.push(time(&mut || {
            assert_eq!(inspect(n1, &["--json", "network", "big"]).code, 0)
        }));
        by_hand.push(time(&mut || {
            run_ok(
                "bridge",
                &["-n", &sandbox, "-j", "fdb", "show", "dev", "vx-4303"],
            );
            run_ok(
                "ip",
                &["-n", &sandbox, "-j", "neigh", "show", "dev", "vx-4303"],
            );
            n1.api("GET", "/v1/endpoints", None);
            n1.api("GET", "/v1/remote-endpoints", None);
        }));
    }
    let (h, j, b) = (median(human), median(js), median(by_hand));
    println!(
        "inspect network, {n} local + {n} remote endpoints: human {h:.0} ms, --json {j:.0} ms (target < 1000 ms); \
         by-hand baseline (bridge fdb + ip neigh + 2 API reads) {b:.0} ms; inspect/baseline {:.2}",
        h / b
    );
}

/// The nftables LB: `inspect service` reads each local container's service chain; a chain
/// emptied by hand (flushed: no DNAT) is drift, and `path` still walks the DNAT hop.
#[test]
fn nftables_service_view() {
    let mut b = Cluster::builder(1);
    for l in LbKind::Nftables.config_lines() {
        b = b.config_line(&l);
    }
    let Some(cluster) = b.start() else { return };
    let n1 = cluster.node(1);
    cluster.create_network("nnet", &json!({"subnet": "10.233.3.0/24", "vni": 4304}));
    let client = cluster.container();
    n1.attach(&client, "nnet", "eth0", None);
    let task = cluster.container();
    let vip = "10.233.3.250";
    let task_ep = n1.attach(
        &task,
        "nnet",
        "eth0",
        Some(
            json!({"service": {"name": "api", "id": "api", "vip": vip, "endpoint_mode": "vip",
            "ports": [{"protocol": "tcp", "target_port": 80}]}}),
        ),
    );
    let v = eventually(CONVERGE, "nftables chains programmed", || {
        clean(&inspect(n1, &["--json", "service", "api"]))
    });
    assert_eq!(v["lb_backend"], "nftables");
    let chains = v["frontends"][0]["nftables"].as_array().unwrap().clone();
    assert_eq!(chains.len(), 2, "one chain per local container: {v:#}");
    for c in &chains {
        has_fields(c, &["container", "present", "backends"], "nft chain");
        assert_eq!(c["present"], true, "{v:#}");
        assert_eq!(c["backends"], json!([task_ep.ip.to_string()]), "{v:#}");
    }
    let p = inspect(
        n1,
        &["--json", "path", "--from", &client.name, "--to", "api:80"],
    );
    let pv = p.json();
    assert_eq!(pv["result"], "ok", "{pv:#}");
    assert!(
        pv["hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["step"] == "load_balancer"
                && h["detail"].as_str().unwrap().contains("nftables")),
        "{pv:#}"
    );
    let ip: std::net::Ipv4Addr = vip.parse().unwrap();
    let chain = format!("svc_{:08x}_80_tcp", u32::from(ip));
    exec_in_ok(
        &client.name,
        &["nft", "flush", "chain", "ip", "netd_lb", &chain],
    );
    let r = inspect(n1, &["--json", "service", "api"]);
    let v = r.json();
    let key = format!("{vip}:80/tcp in {}", client.path().display());
    assert_eq!(r.code, 1, "{v:#}");
    assert!(drift_has(&v, "different", "nft_lb", &key), "{v:#}");
}
