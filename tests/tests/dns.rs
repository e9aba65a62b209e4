//! Embedded DNS at 127.0.0.11: from containers on different nodes, with `dig` and the libc
//! resolver; names, services (VIP and DNSRR), `tasks.`, network scoping, PTR, empty answers for
//! other types, forwarding to a real upstream (dnsmasq on the underlay), caching, SERVFAIL,
//! internal networks, drain/removal, and malformed input.

use netd_tests::cmd::Background;
use netd_tests::dns::{dig, getent, query, raw_udp, rcode};
use netd_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

const FRONT_VNI: u32 = 4301;
const VIP: &str = "10.60.0.250";

struct World {
    cluster: Cluster,
    /// A container on `front` (and `back`) on node 1 that asks the questions.
    asker: Container,
    /// Only on `front`, node 1.
    front_only: Container,
    /// Only on the internal network `sealed`, node 1.
    sealed: Container,
    eps: Vec<(String, Ipv4Addr, usize)>,
    dnsmasq: Option<Background>,
}

impl World {
    fn ip(&self, id: &str) -> Ipv4Addr {
        self.eps
            .iter()
            .find(|e| e.0 == id)
            .unwrap_or_else(|| panic!("no endpoint {id}"))
            .1
    }
}

fn svc(name: &str, mode: &str, vip: Option<&str>) -> Value {
    let mut s =
        json!({"service": {"name": name, "id": format!("id-{name}"), "endpoint_mode": mode}});
    if let Some(v) = vip {
        s["service"]["vip"] = json!(v);
    }
    s
}

/// 3 nodes; networks `front` (10.60/24), `back` (10.61/24), `sealed` (internal, 10.62/24);
/// service `web` (VIP) with tasks on n2 and n3, `rr` (DNSRR) with three tasks, a container
/// `db` only on `back`, an upstream dnsmasq at 192.168.77.100 serving `example.test`.
fn world() -> Option<World> {
    let cluster = Cluster::builder(3)
        .config_line(&format!("dns_upstreams = [\"{CLIENT_ADDR}\"]"))
        .config_line("dns_upstream_timeout_ms = 500")
        .start()?;
    cluster.create_network(
        "front",
        &json!({"subnet": "10.60.0.0/24", "vni": FRONT_VNI}),
    );
    cluster.create_network("back", &json!({"subnet": "10.61.0.0/24", "vni": 4302}));
    cluster.create_network(
        "sealed",
        &json!({"subnet": "10.62.0.0/24", "vni": 4303, "internal": true}),
    );

    let hosts = cluster.dir.join("upstream-hosts");
    std::fs::write(&hosts, "192.168.77.77 up.example.test\n192.168.77.78 cached.example.test\n192.168.77.79 sealed-probe.example.test\n").unwrap();
    let dnsmasq = Background::spawn_in(
        cluster.client_ns(),
        &[
            "dnsmasq",
            "-k",
            "--no-resolv",
            "--no-hosts",
            "--log-queries",
            &format!(
                "--log-facility={}",
                cluster.dir.join("dnsmasq.log").display()
            ),
            &format!("--addn-hosts={}", hosts.display()),
            &format!("--listen-address={CLIENT_ADDR}"),
            "--bind-interfaces",
            "--local=/example.test/",
            "--pid-file=",
            // dnsmasq answers its hosts with TTL 0 by default: nothing could be cached
            "--local-ttl=300",
        ],
        &cluster.dir,
        "dnsmasq",
    )
    .expect("dnsmasq");

    let mut eps = Vec::new();
    let mut attach = |node: usize, c: &Container, net: &str, ifname: &str, extra: Value| {
        let ep = cluster.node(node).attach(c, net, ifname, Some(extra));
        eps.push((ep.id.clone(), ep.ip, node));
    };
    let asker = cluster.container();
    asker.use_embedded_dns();
    attach(
        1,
        &asker,
        "front",
        "eth0",
        json!({"name": "asker", "aliases": ["questions"]}),
    );
    attach(1, &asker, "back", "eth1", json!({"name": "asker"}));
    let front_only = cluster.container();
    attach(
        1,
        &front_only,
        "front",
        "eth0",
        json!({"name": "frontonly"}),
    );
    let sealed = cluster.container();
    attach(1, &sealed, "sealed", "eth0", json!({"name": "sealedbox"}));
    for (node, name) in [(2, "web.1"), (3, "web.2")] {
        let c = cluster.container();
        let mut extra = svc("web", "vip", Some(VIP));
        extra["name"] = json!(name);
        extra["aliases"] = json!(["www"]);
        attach(node, &c, "front", "eth0", extra);
    }
    for (node, name) in [(2, "rr.1"), (3, "rr.2"), (3, "rr.3")] {
        let c = cluster.container();
        let mut extra = svc("rr", "dnsrr", None);
        extra["name"] = json!(name);
        attach(node, &c, "front", "eth0", extra);
    }
    let db = cluster.container();
    attach(2, &db, "back", "eth0", json!({"name": "db"}));
    let w = World {
        cluster,
        asker,
        front_only,
        sealed,
        eps,
        dnsmasq: Some(dnsmasq),
    };
    // Every remote task is known on node 1 before the questions start.
    let want = w.eps.iter().filter(|e| e.2 != 1).count();
    eventually(CONVERGE, "node 1 learns all remote endpoints", || {
        let n = w.cluster.node(1).try_remote_endpoints()?.len();
        if n == want {
            Ok(())
        } else {
            Err(format!("{n} of {want}"))
        }
    });
    Some(w)
}

fn ips_of(w: &World, ids: &[&str]) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = ids.iter().map(|id| w.ip(id)).collect();
    v.sort();
    v
}

fn id_of(w: &World, name: &str) -> String {
    // container endpoint ids are "<ns>-<ifname>"; find the one whose container was named `name`
    w.cluster
        .nodes
        .iter()
        .flat_map(|n| n.endpoints())
        .find(|e| e.name == name)
        .map(|e| e.id)
        .unwrap_or_else(|| panic!("no endpoint named {name}"))
}

#[test]
fn names_services_and_tasks_resolve_across_nodes() {
    let Some(w) = world() else { return };
    let ns = &w.asker.name;
    let vip: Ipv4Addr = VIP.parse().unwrap();
    let web_tasks = ips_of(&w, &[&id_of(&w, "web.1"), &id_of(&w, "web.2")]);
    let rr_tasks = ips_of(
        &w,
        &[&id_of(&w, "rr.1"), &id_of(&w, "rr.2"), &id_of(&w, "rr.3")],
    );

    let d = dig(ns, &["web"]).unwrap();
    assert_eq!(
        (d.status.as_str(), d.ips()),
        ("NOERROR", vec![vip]),
        "service name -> VIP: {d:?}"
    );
    assert!(
        d.flags.contains("aa"),
        "netd is authoritative for its names: {d:?}"
    );
    assert_eq!(
        dig(ns, &["www"]).unwrap().ips(),
        vec![vip],
        "service alias -> VIP"
    );
    assert_eq!(
        dig(ns, &["WeB."]).unwrap().ips(),
        vec![vip],
        "case-insensitive, trailing dot"
    );
    assert_eq!(
        dig(ns, &["tasks.web"]).unwrap().ips(),
        web_tasks,
        "tasks. on a VIP service"
    );
    assert_eq!(
        dig(ns, &["web.1"]).unwrap().ips(),
        vec![w.ip(&id_of(&w, "web.1"))],
        "task container name"
    );
    assert_eq!(
        dig(ns, &["rr"]).unwrap().ips(),
        rr_tasks,
        "DNSRR: every task"
    );
    assert_eq!(dig(ns, &["tasks.rr"]).unwrap().ips(), rr_tasks);
    assert_eq!(
        dig(ns, &["questions"]).unwrap().ips(),
        vec![w.ip(&id_of(&w, "asker"))],
        "container alias"
    );

    // DNSRR order is shuffled per query.
    let orders: BTreeSet<Vec<String>> =
        (0..20).map(|_| dig(ns, &["rr"]).unwrap().answers).collect();
    assert!(
        orders.len() > 1,
        "20 DNSRR answers all in one order: {orders:?}"
    );

    // Known name, other type: NOERROR with no answer (not forwarded, not NXDOMAIN).
    for t in ["AAAA", "MX", "TXT"] {
        let d = dig(ns, &["web", t]).unwrap();
        assert_eq!(
            (d.status.as_str(), d.answers.len()),
            ("NOERROR", 0),
            "{t} of a v4-only name: {d:?}"
        );
    }

    // PTR for a VIP and for a task.
    assert_eq!(
        dig(ns, &["-x", VIP]).unwrap().answers,
        vec!["web.front.".to_string()]
    );
    let t1 = w.ip(&id_of(&w, "web.1")).to_string();
    assert_eq!(
        dig(ns, &["-x", &t1]).unwrap().answers,
        vec!["web.1.front.".to_string()]
    );

    // TCP.
    assert_eq!(
        dig(ns, &["+tcp", "tasks.web"]).unwrap().ips(),
        web_tasks,
        "over TCP"
    );

    // The libc resolver, through resolv.conf (nameserver 127.0.0.11, ndots:0).
    assert_eq!(getent(ns, "web"), vec![vip]);
    assert_eq!(getent(ns, "web.1"), vec![w.ip(&id_of(&w, "web.1"))]);
}

#[test]
fn dns_follows_network_scoping_and_isolation() {
    let Some(w) = world() else { return };
    let db = w.ip(&id_of(&w, "db"));
    // asker is on front and back: sees db (back only) by name and as db.back.
    assert_eq!(dig(&w.asker.name, &["db"]).unwrap().ips(), vec![db]);
    assert_eq!(dig(&w.asker.name, &["db.back"]).unwrap().ips(), vec![db]);
    assert!(
        dig(&w.asker.name, &["db.front"]).unwrap().ips().is_empty(),
        "db is not on front"
    );
    // <name>.<network> restricts to that network: asker's two addresses.
    let asker_front = w
        .eps
        .iter()
        .find(|e| e.0.ends_with("-eth0") && e.0.starts_with(&w.asker.name))
        .unwrap()
        .1;
    let asker_back = w
        .eps
        .iter()
        .find(|e| e.0.ends_with("-eth1") && e.0.starts_with(&w.asker.name))
        .unwrap()
        .1;
    assert_eq!(
        dig(&w.front_only.name, &["asker.front"]).unwrap().ips(),
        vec![asker_front]
    );
    let mut both = vec![asker_front, asker_back];
    both.sort();
    assert_eq!(
        dig(&w.asker.name, &["asker"]).unwrap().ips(),
        both,
        "own name on both networks"
    );
    // front_only shares only front: db is invisible, asker only by its front address.
    for name in ["db", "db.back"] {
        let d = dig(&w.front_only.name, &[name]).unwrap();
        assert!(!d.ips().contains(&db), "isolation broken: {name} -> {d:?}");
    }
    assert_eq!(
        dig(&w.front_only.name, &["asker"]).unwrap().ips(),
        vec![asker_front]
    );
    let d = dig(&w.front_only.name, &["-x", &db.to_string()]).unwrap();
    assert!(
        d.answers.iter().all(|a| !a.starts_with("db")),
        "PTR leaks across networks: {d:?}"
    );
    // The internal network sees nothing of front.
    assert!(!dig(&w.sealed.name, &["web"])
        .unwrap()
        .ips()
        .contains(&VIP.parse().unwrap()));
}

fn dnsmasq_log(w: &World) -> String {
    std::fs::read_to_string(w.cluster.dir.join("dnsmasq.log")).unwrap_or_default()
}

#[test]
fn other_names_are_forwarded_cached_and_fail_cleanly() {
    let Some(mut w) = world() else { return };
    let ns = w.asker.name.clone();
    let d = dig(&ns, &["up.example.test"]).unwrap();
    assert_eq!(
        (d.status.as_str(), d.ips()),
        ("NOERROR", vec!["192.168.77.77".parse().unwrap()]),
        "{d:?}"
    );
    assert!(
        !d.flags.contains("aa"),
        "forwarded answers are not ours: {d:?}"
    );
    assert_eq!(
        dig(&ns, &["nope.example.test"]).unwrap().status,
        "NXDOMAIN",
        "NXDOMAIN passes through"
    );
    assert_eq!(
        dig(&ns, &["+tcp", "up.example.test"]).unwrap().ips(),
        vec!["192.168.77.77".parse::<Ipv4Addr>().unwrap()]
    );
    assert_eq!(
        getent(&ns, "up.example.test"),
        vec!["192.168.77.77".parse::<Ipv4Addr>().unwrap()]
    );

    // An internal network does not forward: the upstream never sees the query.
    let d = dig(&w.sealed.name, &["sealed-probe.example.test"]).unwrap();
    assert!(
        d.ips().is_empty(),
        "internal network got a forwarded answer: {d:?}"
    );
    assert!(
        !dnsmasq_log(&w).contains("sealed-probe.example.test"),
        "internal network forwarded a query"
    );

    // Cache: asked once, then the upstream goes away; the cached answer still comes back.
    assert_eq!(
        dig(&ns, &["cached.example.test"]).unwrap().ips(),
        vec!["192.168.77.78".parse::<Ipv4Addr>().unwrap()]
    );
    let hits_before = w.cluster.node(1).api("GET", "/v1/node", None).1["dns"]["cache_hits"]
        .as_u64()
        .unwrap();
    drop(w.dnsmasq.take()); // kills dnsmasq
    let d = dig(&ns, &["cached.example.test"]).unwrap();
    assert_eq!(
        d.ips(),
        vec!["192.168.77.78".parse::<Ipv4Addr>().unwrap()],
        "cache miss after upstream loss: {d:?}"
    );
    let hits_after = w.cluster.node(1).api("GET", "/v1/node", None).1["dns"]["cache_hits"]
        .as_u64()
        .unwrap();
    assert!(
        hits_after > hits_before,
        "cache hit not counted ({hits_before} -> {hits_after})"
    );
    // Not cached and upstream down: SERVFAIL, promptly.
    assert_eq!(
        dig(&ns, &["uncached.example.test"]).unwrap().status,
        "SERVFAIL"
    );
}

#[test]
fn drained_removed_and_new_tasks_show_in_answers() {
    let Some(w) = world() else { return };
    let n3 = w.cluster.node(3);
    let web2 = id_of(&w, "web.2");
    let web2_ip = w.ip(&web2);
    // A container on node 3 sees the drain at once (same node), node 1 within the gossip bound.
    let local = w.cluster.container();
    n3.attach(&local, "front", "eth0", Some(json!({"name": "n3asker"})));
    let (st, body) = n3.api(
        "PATCH",
        &format!("/v1/endpoints/{web2}"),
        Some(&json!({"service_disabled": true})),
    );
    assert_eq!(st, 200, "{body}");
    let d = dig(&local.name, &["tasks.web"]).unwrap();
    assert!(
        !d.ips().contains(&web2_ip),
        "drained task still answered on its own node: {d:?}"
    );
    eventually(CONVERGE, "node 1 drops the drained task", || {
        let d = dig(&w.asker.name, &["tasks.web"])?;
        if d.ips().contains(&web2_ip) {
            Err(format!("{d:?}"))
        } else {
            Ok(())
        }
    });
    assert_eq!(
        dig(&w.asker.name, &["web"]).unwrap().ips(),
        vec![VIP.parse::<Ipv4Addr>().unwrap()],
        "VIP stays"
    );

    // Removed task.
    let rr3 = id_of(&w, "rr.3");
    let rr3_ip = w.ip(&rr3);
    assert_eq!(
        n3.api("DELETE", &format!("/v1/endpoints/{rr3}"), None).0,
        204
    );
    eventually(CONVERGE, "node 1 drops the removed task", || {
        let d = dig(&w.asker.name, &["rr"])?;
        if d.ips().contains(&rr3_ip) || d.ips().len() != 2 {
            Err(format!("{d:?}"))
        } else {
            Ok(())
        }
    });

    // A new task on node 2 becomes resolvable on node 1.
    let c = w.cluster.container();
    let mut extra = svc("rr", "dnsrr", None);
    extra["name"] = json!("rr.4");
    let ep = w.cluster.node(2).attach(&c, "front", "eth0", Some(extra));
    eventually(CONVERGE, "node 1 resolves the new task", || {
        let d = dig(&w.asker.name, &["rr.4"])?;
        if d.ips() == vec![ep.ip] {
            Ok(())
        } else {
            Err(format!("{d:?}"))
        }
    });
    assert!(dig(&w.asker.name, &["tasks.rr"])
        .unwrap()
        .ips()
        .contains(&ep.ip));
}

#[test]
fn malformed_queries_get_the_right_rcode_and_do_not_hurt() {
    let Some(w) = world() else { return };
    let ns = &w.asker.name;
    const FORMERR: u8 = 1;
    const NOTIMP: u8 = 4;
    const REFUSED: u8 = 5;
    let wait = Duration::from_millis(700);
    let mut garbage = query(9, 0, 1, "web", 1, 1);
    garbage.truncate(15); // question cut short
    let cases: Vec<(&str, Vec<u8>, Option<u8>)> = vec![
        ("5 bytes: shorter than a header", vec![1, 2, 3, 4, 5], None),
        (
            "header only, claims a question",
            query(1, 0, 1, "", 1, 1)[..12].to_vec(),
            Some(FORMERR),
        ),
        ("truncated question", garbage, Some(FORMERR)),
        ("two questions", query(2, 0, 2, "web", 1, 1), Some(FORMERR)),
        ("opcode STATUS", query(3, 2, 1, "web", 1, 1), Some(NOTIMP)),
        ("opcode UPDATE", query(4, 5, 1, "web", 6, 1), Some(NOTIMP)),
        (
            "class CHAOS",
            query(5, 0, 1, "version.bind", 16, 3),
            Some(NOTIMP),
        ),
        (
            "AXFR over UDP",
            query(6, 0, 1, "front", 252, 1),
            Some(REFUSED),
        ),
    ];
    let packets = cases.iter().map(|c| c.1.clone()).collect();
    let replies = raw_udp(ns, packets, wait);
    let mut wrong = Vec::new();
    for ((what, _, want), got) in cases.iter().zip(replies) {
        let got = got.as_deref().map(rcode);
        if got != *want {
            wrong.push(format!("{what}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong answers to bad input:\n{}",
        wrong.join("\n")
    );

    // A flood of random bytes and of queries; netd keeps answering correctly afterwards.
    let flood: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| {
            if i % 2 == 0 {
                (0..(i % 700) as usize)
                    .map(|j| ((j as u32).wrapping_mul(2654435761u32) ^ i) as u8)
                    .collect()
            } else {
                query(i as u16, 0, 1, "web", 1, 1)
            }
        })
        .collect();
    raw_udp(ns, flood, Duration::from_millis(1));
    let d = dig(ns, &["web"]).unwrap();
    assert_eq!(
        d.ips(),
        vec![VIP.parse::<Ipv4Addr>().unwrap()],
        "after the flood: {d:?}"
    );
    assert!(w.cluster.node(1).is_running(), "netd died");
}

/// A process in the container may run its own DNS server on port 53 (even on 0.0.0.0): netd's
/// resolver lives on another port behind a DNAT for 127.0.0.11:53 only, so both keep working.
#[test]
fn a_container_process_on_port_53_coexists_with_the_resolver() {
    let Some(w) = world() else { return };
    let ns = &w.asker.name;
    let hosts = w.cluster.dir.join("own-hosts");
    std::fs::write(&hosts, "10.99.99.99 mine.internal\n").unwrap();
    let own = Background::spawn_in(
        ns,
        &[
            "dnsmasq",
            "-k",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            "--pid-file=",
            &format!("--addn-hosts={}", hosts.display()),
            "--local=/internal/",
        ],
        &w.cluster.dir,
        "own-dnsmasq",
    )
    .unwrap();
    let my_ip = w
        .eps
        .iter()
        .find(|e| e.0.starts_with(ns.as_str()))
        .unwrap()
        .1
        .to_string();
    eventually(CONVERGE, "the container's own DNS server answers", || {
        let out = exec_in(
            ns,
            &[
                "dig",
                "+short",
                "+time=1",
                "+tries=1",
                &format!("@{my_ip}"),
                "mine.internal",
            ],
        )
        .map_err(|e| e.to_string())?;
        if out.stdout.trim() == "10.99.99.99" {
            Ok(())
        } else {
            Err(format!("{out:?} / {}", own.stderr()))
        }
    });
    let d = dig(ns, &["web"]).unwrap();
    assert_eq!(
        d.ips(),
        vec![VIP.parse::<Ipv4Addr>().unwrap()],
        "netd's resolver with a port-53 server beside it: {d:?}"
    );
    assert_eq!(getent(ns, "web"), vec![VIP.parse::<Ipv4Addr>().unwrap()]);
}
