//! Scale benchmark of the eBPF LB (run by `scripts/bench/lb.sh`; ignored by `cargo test`, needs
//! root, a cgroup v2 mount and bpffs): map programming time for 10k services x 10 backends
//! (from the cluster view, as a reconcile pass does it, and the map writes alone), one backend
//! change until the maps show it (p99: the incremental reconcile pass, and the full one), what
//! the gossip watcher does before (view and endpoint changes read whole and incrementally from
//! the records, DNS names rebuilt), process RSS at 10k x 10 (cluster view, LB model with its
//! index, LB state, then with chitchat's copy of the records, which a netd also holds), and p99
//! connect latency through a VIP with 1, 10k and 30k services programmed.
//!
//! The process moves itself into the LB cgroup for the connect measurements (and back).

use super::ebpf::EbpfLb;
use super::model::{Backend, Frontend, LbIndex, LbModel, Proto, Service};
use super::LoadBalancer;
use crate::api::types::{
    EndpointMode, PortSpec, Protocol, PublishMode, RemoteEndpointView, ServiceSpec,
};
use crate::bench_util::{env, pct};
use crate::gossip::follow::{NodeInput, ViewReader};
use crate::gossip::record::EndpointRecord;
use crate::gossip::{ClusterView, ViewInterner};
use crate::state::DesiredState;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CG_ROOT: &str = "/sys/fs/cgroup/unified";

fn vip(i: u32) -> Ipv4Addr {
    // 10.128.0.0/9: one VIP per service.
    Ipv4Addr::from(0x0a80_0000 + i)
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `n` services (TCP port 80), backend i of service s at 127.x.y.z:`port` (connectable) when
/// `local`, else 10.0.0.0/9 addresses.
fn model(n: u32, per: u32, port: u16, local: bool) -> LbModel {
    let mut m = LbModel::default();
    for s in 0..n {
        let backends = (0..per)
            .map(|b| {
                let k = s * per + b;
                Backend {
                    ip: if local {
                        Ipv4Addr::from(0x7f00_0001 + k)
                    } else {
                        Ipv4Addr::from(0x0a00_0001 + k)
                    },
                    port,
                }
            })
            .collect();
        m.services.insert(
            Frontend {
                vip: vip(s),
                port: 80,
                proto: Proto::Tcp,
            },
            Service {
                network: "bench".into(),
                backends,
                ..Service::default()
            },
        );
    }
    m
}

/// The cluster view a node holds when other nodes run `n` services x `per` tasks.
fn view(n: u32, per: u32) -> (DesiredState, ClusterView) {
    let mut d = DesiredState::default();
    d.networks.insert(
        "bench".into(),
        serde_json::from_str(r#"{"subnet":"10.0.0.0/8","vni":4999}"#).unwrap(),
    );
    let mut endpoints = Vec::with_capacity((n * per) as usize);
    let mut interner = ViewInterner::default();
    for s in 0..n {
        let spec = ServiceSpec {
            name: format!("svc{s}"),
            id: format!("svc{s}"),
            vip: Some(vip(s)),
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                target_port: 80,
                published_port: None,
                publish_mode: PublishMode::Ingress,
                preserve_client_ip: false,
            }],
            endpoint_mode: EndpointMode::Vip,
        };
        for b in 0..per {
            let k = s * per + b;
            // As the gossip watcher makes it from the records (names and specs shared); the
            // MAC netd assigns when none is given (derived from the address).
            let ip = Ipv4Addr::from(0x0a00_0001 + k);
            let rec = EndpointRecord {
                ip,
                mac: crate::ipam::mac_for(ip),
                vtep: Ipv4Addr::new(192, 168, 0, (k % 16) as u8 + 2),
                name: format!("svc{s}.{b}"),
                aliases: vec![],
                service: Some(spec.clone()),
                disabled: false,
            };
            let node = format!("n{}", k % 16);
            endpoints.push(Arc::new(interner.endpoint(
                &node,
                "bench",
                &format!("ep{k}"),
                rec,
            )));
        }
    }
    // In view order: by node, then by key.
    endpoints.sort_unstable_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
    (
        d,
        ClusterView {
            endpoints: endpoints.into(),
            ..ClusterView::default()
        },
    )
}

/// The record of a view's endpoint, as its node publishes it.
fn record_of(e: &RemoteEndpointView) -> EndpointRecord {
    EndpointRecord {
        ip: e.ip,
        mac: e.mac.clone(),
        vtep: e.vtep,
        name: e.name.clone(),
        aliases: e.aliases.clone(),
        service: e.service.as_deref().cloned(),
        disabled: e.service_disabled,
    }
}

/// The gossip address of bench node `n<i>` (its endpoints' VTEP, as in [`view`]).
fn node_ip(node: &str) -> Ipv4Addr {
    let i: u8 = node.trim_start_matches('n').parse().unwrap();
    Ipv4Addr::new(192, 168, 0, i + 2)
}

/// The gossip key-values of `view`'s endpoints, each as its node publishes it.
fn records(view: &ClusterView) -> Vec<(String, String, String)> {
    view.endpoints
        .iter()
        .map(|e| {
            let v = crate::gossip::record::encode(&record_of(e), node_ip(&e.node));
            let k = crate::gossip::record::endpoint_key(&e.network, &e.id);
            (e.node.to_string(), k, v)
        })
        .collect()
}

/// What chitchat holds for the records of `view` (each node keeps every node's records): a
/// chitchat instance (loopback, no peers) started with them as its own key-values, which are
/// stored as a remote node's are (`NodeState`). Returns it (to keep it) and its runtime.
fn chitchat_with(view: &ClusterView) -> (tokio::runtime::Runtime, chitchat::ChitchatHandle) {
    let kvs: Vec<(String, String)> = records(view).into_iter().map(|(_, k, v)| (k, v)).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = chitchat::ChitchatConfig {
        chitchat_id: chitchat::ChitchatId::new("bench".to_string(), 1, addr),
        cluster_id: "bench".into(),
        gossip_interval: Duration::from_secs(3600),
        listen_addr: addr,
        seed_nodes: vec![],
        failure_detector_config: chitchat::FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let h = rt
        .block_on(chitchat::spawn_chitchat(
            config,
            kvs,
            &chitchat::transport::UdpTransport,
        ))
        .unwrap();
    (rt, h)
}

/// The gossip watcher's work per change at the scale of `view` (records spread over 16 node
/// states as chitchat holds them): reading the state into a view and finding the endpoint
/// changes, whole (what every change cost before: parse every record, compare the views) and
/// incrementally (parse the changed record, see `gossip::follow`); then the DNS names rebuilt
/// from the new view, which the watcher does before it publishes the view.
fn watcher(desired: &DesiredState, view: &ClusterView, changes: u32) {
    fn inputs(states: &[(chitchat::ChitchatId, chitchat::NodeState)]) -> Vec<NodeInput<'_>> {
        states
            .iter()
            .map(|(id, state)| NodeInput {
                id,
                state,
                live: true,
                touched: None,
            })
            .collect()
    }
    let mut states: Vec<(chitchat::ChitchatId, chitchat::NodeState)> = (0..16)
        .map(|i| {
            let node = format!("n{i}");
            let addr = SocketAddr::new(node_ip(&node).into(), 7946);
            let id = chitchat::ChitchatId::new(node, 1, addr);
            (id, chitchat::NodeState::for_test())
        })
        .collect();
    for (node, k, v) in records(view) {
        let i: usize = node.trim_start_matches('n').parse().unwrap();
        states[i].1.set(k, v);
    }
    let mut reader = ViewReader::default();
    let t = Instant::now();
    let (mut current, all) = reader.read("me", inputs(&states), &ClusterView::default());
    let first = t.elapsed();
    let (rss0, t) = (rss_kib(), Instant::now());
    let mut names = crate::dns::index::DnsIndex::build(desired, &current);
    println!(
        "DNS index of the view: built in {:.1} ms, RSS +{:.1} MiB",
        t.elapsed().as_secs_f64() * 1e3,
        rss_kib().saturating_sub(rss0) as f64 / 1024.0
    );
    assert_eq!(all.len(), view.endpoints.len());
    assert_eq!(current.endpoints, view.endpoints);
    drop(all);
    let n = view.endpoints.len();
    let (mut whole, mut incr, mut dns, mut dns_incr) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..changes {
        // One task's address changes on its node (as `Gossip::publish_endpoint` sets it).
        let e = &view.endpoints[(i.wrapping_mul(7919) as usize) % n];
        let mut rec = record_of(e);
        rec.ip = Ipv4Addr::from(0x0b00_0001 + i);
        let ni: usize = e.node.trim_start_matches('n').parse().unwrap();
        states[ni].1.set(
            crate::gossip::record::endpoint_key(&e.network, &e.id),
            crate::gossip::record::encode(&rec, node_ip(&e.node)),
        );
        if i.is_multiple_of(10) {
            let t = Instant::now();
            let (v, c) = ViewReader::default().read("me", inputs(&states), &current);
            whole.push(t.elapsed());
            assert_eq!(c.len(), 1);
            drop(v);
        }
        let t = Instant::now();
        let (v, c) = reader.read("me", inputs(&states), &current);
        incr.push(t.elapsed());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1.as_ref().unwrap().ip, rec.ip);
        current = v;
        let t = Instant::now();
        names.change_remote(&c);
        names.finish();
        dns_incr.push(t.elapsed());
        if i.is_multiple_of(10) {
            let t = Instant::now();
            let idx = crate::dns::index::DnsIndex::build(desired, &current);
            dns.push(t.elapsed());
            drop(idx);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "gossip watcher per change at {n} records: view and endpoint changes read whole p50 {:.1} ms p99 {:.1} ms ({}; first read {:.1} ms), incrementally p50 {:.3} ms p99 {:.3} ms ({})",
        ms(pct(&mut whole, 0.5)),
        ms(pct(&mut whole, 0.99)),
        whole.len(),
        ms(first),
        ms(pct(&mut incr, 0.5)),
        ms(pct(&mut incr, 0.99)),
        incr.len()
    );
    println!(
        "DNS names after one change (the watcher, before publishing the view): followed p50 {:.3} ms p99 {:.3} ms ({}), rebuilt whole p50 {:.1} ms p99 {:.1} ms ({})",
        ms(pct(&mut dns_incr, 0.5)),
        ms(pct(&mut dns_incr, 0.99)),
        dns_incr.len(),
        ms(pct(&mut dns, 0.5)),
        ms(pct(&mut dns, 0.99)),
        dns.len()
    );
    // The followed index answers what a fresh one does.
    let fresh = crate::dns::index::DnsIndex::build(desired, &current);
    let nets = vec!["bench".to_string()];
    assert_eq!(names.records(&nets), fresh.records(&nets));
}

/// Moves this process into `cg`; returns the cgroup it was in.
fn enter_cgroup(cg: &Path) -> PathBuf {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).unwrap();
    Path::new(CG_ROOT).join(rel)
}

/// Connect (and reset-close) latencies to random VIPs among the first `n`.
fn connects(n: u32, count: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(count);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let to = SocketAddr::V4(SocketAddrV4::new(vip((x % u64::from(n)) as u32), 80));
        let t = Instant::now();
        let s = TcpStream::connect(to).expect("connect through the VIP");
        out.push(t.elapsed());
        let lg = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt(2) on an open socket with a valid struct.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &lg as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as u32,
            );
        }
    }
    out
}

#[test]
#[ignore = "benchmark: root, cgroup v2 and bpffs; run by scripts/bench/lb.sh"]
fn lb_scale_bench() {
    let tag = std::env::var("NETD_LB_BENCH_TAG").unwrap_or_else(|_| "lbbench".into());
    let cg = Path::new(CG_ROOT).join(format!("netd-{tag}"));
    let pins = PathBuf::from(format!("/sys/fs/bpf/netd-{tag}"));
    let _ = std::fs::remove_dir_all(&pins);
    let rss0 = rss_kib();
    let mut lb = EbpfLb::open(&cg, &pins, super::maps::MAX_SERVICES).expect("open eBPF LB");
    let (n_big, per) = (env("LB_BENCH_SERVICES", 10_000) as u32, 10);

    // 1. 10k x 10 from the cluster view (model build + map writes) and the map writes alone.
    let (desired, view) = view(n_big, per);
    let rss_view = rss_kib();
    let t = Instant::now();
    let mut index = LbIndex::build(&desired, &view);
    let build = t.elapsed();
    let rss_model = rss_kib();
    let t = Instant::now();
    lb.apply(&index.model).unwrap();
    let program = t.elapsed();
    assert_eq!(lb.current().services.len(), n_big as usize);
    let rss = rss_kib();
    println!(
        "program {n_big} services x {per} backends: model from the view {:.1} ms + maps {:.1} ms = {:.1} ms",
        build.as_secs_f64() * 1e3,
        program.as_secs_f64() * 1e3,
        (build + program).as_secs_f64() * 1e3
    );
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "RSS at {n_big} x {per}: {:.1} MiB = start {:.1} + cluster view {:.1} + LB model (with its index) {:.1} + LB state {:.1}",
        mib(rss),
        mib(rss0),
        mib(rss_view - rss0),
        mib(rss_model - rss_view),
        mib(rss - rss_model)
    );

    // What a netd also holds: chitchat's copy of the records (the JSON values by key).
    let chitchat = chitchat_with(&view);
    let rss_cc = rss_kib();
    println!(
        "RSS with chitchat's copy of the {} records: {:.1} MiB (+{:.1})",
        view.endpoints.len(),
        mib(rss_cc),
        mib(rss_cc.saturating_sub(rss))
    );

    // 2. One backend change (a task's address) until it is in the maps: the incremental
    // reconcile pass (model updated from the endpoint change, the changed frontend applied),
    // there and back; and, for some, the full pass (model from the whole view + apply).
    let mut view = view;
    let (mut pass, mut full) = (Vec::new(), Vec::new());
    let mut delta = |index: &mut LbIndex,
                     lb: &mut EbpfLb,
                     old: &RemoteEndpointView,
                     new: &RemoteEndpointView| {
        let t = Instant::now();
        let mut dirty = BTreeSet::new();
        index.set_locals(&desired, &mut dirty);
        index.change_remote(Some(old), Some(new), &mut dirty);
        index.finish(&dirty);
        lb.apply_changed(&index.model, &dirty).unwrap();
        pass.push(t.elapsed());
    };
    let changes = env("LB_BENCH_CHANGES", 200) as u32;
    for i in 0..changes {
        let k = (i.wrapping_mul(7919) % (n_big * per)) as usize;
        let old = (*view.endpoints[k]).clone();
        let fe = Frontend {
            vip: old.service.as_ref().and_then(|s| s.vip).unwrap(),
            port: 80,
            proto: Proto::Tcp,
        };
        let mut new = old.clone();
        new.ip = Ipv4Addr::from(0x0b00_0001 + i);
        delta(&mut index, &mut lb, &old, &new);
        let b = |ip| Backend { ip, port: 80 };
        let programmed = &lb.current().services[&fe].backends;
        assert!(programmed.contains(&b(new.ip)) && !programmed.contains(&b(old.ip)));
        if i.is_multiple_of(10) {
            view.endpoints.set(k, Arc::new(new.clone()));
            let t = Instant::now();
            let w = LbModel::build(&desired, &view);
            lb.apply(&w).unwrap();
            full.push(t.elapsed());
            view.endpoints.set(k, Arc::new(old.clone()));
        }
        delta(&mut index, &mut lb, &new, &old);
    }
    assert_eq!(
        lb.current(),
        LbModel::build(&desired, &view).services.into_iter().fold(
            LbModel::default(),
            |mut m, (fe, s)| {
                m.services.insert(
                    fe,
                    Service {
                        drained: Default::default(),
                        ..s
                    },
                );
                m
            }
        )
    );
    println!(
        "one backend change until in the maps: incremental reconcile pass p50 {:.2} ms p99 {:.2} ms ({} changes); full pass p50 {:.2} ms p99 {:.2} ms ({})",
        pct(&mut pass, 0.5).as_secs_f64() * 1e3,
        pct(&mut pass, 0.99).as_secs_f64() * 1e3,
        pass.len(),
        pct(&mut full, 0.5).as_secs_f64() * 1e3,
        pct(&mut full, 0.99).as_secs_f64() * 1e3,
        full.len()
    );
    // Drift repair's read-back of the maps, a slice per hold of the LB's lock.
    let (mut slices, t) = (Vec::new(), Instant::now());
    loop {
        let ts = Instant::now();
        let (drift, done) = lb.verify_kernel().unwrap();
        slices.push(ts.elapsed());
        assert!(drift.is_empty(), "{drift:?}");
        if done {
            break;
        }
    }
    let whole = t.elapsed();
    let last = *slices.last().unwrap();
    println!(
        "drift repair read-back of the maps: {:.1} ms in {} slices (the LB's lock held for one at a time): longest {:.1} ms, the last (with the walk for stray entries) {:.1} ms",
        whole.as_secs_f64() * 1e3,
        slices.len(),
        slices.iter().max().unwrap().as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e3
    );
    // What the gossip watcher does before: the view and the endpoint changes.
    watcher(&desired, &view, changes.min(200));
    drop(view);
    drop(index);
    let (rt, h) = chitchat;
    rt.block_on(h.shutdown()).unwrap();

    // 3. Connect latency with 1, 10k and 30k services (one local backend each).
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let count = env("LB_BENCH_CONNECTS", 20_000);
    let rounds = env("LB_BENCH_ROUNDS", 3);
    let back = enter_cgroup(&cg);
    let sizes = [1u32, 10_000, 30_000];
    let mut p99s = vec![Vec::new(); sizes.len()];
    for _ in 0..rounds {
        for (i, n) in sizes.iter().enumerate() {
            let t = Instant::now();
            lb.apply(&model(*n, 1, port, true)).unwrap();
            let programmed = t.elapsed();
            connects(*n, 2000); // warm up
            let mut v = connects(*n, count);
            let (p50, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
            println!(
                "{n:>6} services (programmed in {:.0} ms): connect p50 {:.1} us p99 {:.1} us",
                programmed.as_secs_f64() * 1e3,
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6
            );
            p99s[i].push(p99);
        }
    }
    std::fs::write(back.join("cgroup.procs"), std::process::id().to_string()).unwrap();
    let med = |v: &mut Vec<Duration>| pct(v, 0.5).as_secs_f64() * 1e6;
    let (a, b, c) = (med(&mut p99s[0]), med(&mut p99s[1]), med(&mut p99s[2]));
    println!(
        "connect p99 (median of {rounds} rounds): 1 service {a:.1} us, 10k {b:.1} us, 30k {c:.1} us; 30k / 1 = {:.3}",
        c / a
    );
    lb.apply(&LbModel::default()).unwrap();
    drop(lb);
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir(&cg);
}
