//! `remote_pass_bench`: one network with 100k remote endpoints programmed on a real VXLAN
//! device; then one endpoint comes and goes, again and again, and each change is reconciled in
//! turn by a whole pass (dump the FDB and neighbors, plan against the whole view, as every
//! pass did before) and by a followed pass (plan from the change against what was programmed).
//! Both apply with the same `bridge`/`ip -batch`; the time of that alone is printed too.

use super::*;
use crate::bench_util::{env, pct};
use crate::kernel::test_ns::{is_root, TestNs};
use std::time::{Duration, Instant};

fn endpoint(i: u32) -> Arc<RemoteEndpointView> {
    let [_, a, b, c] = i.to_be_bytes();
    Arc::new(RemoteEndpointView {
        id: format!("e{i}"),
        node: "n2".into(),
        network: "bench".into(),
        ip: Ipv4Addr::new(10, a, b, c),
        mac: format!("02:42:0a:{a:02x}:{b:02x}:{c:02x}"),
        vtep: Ipv4Addr::new(192, 168, (i / 250 % 250) as u8, (1 + i % 250) as u8),
        name: String::new(),
        aliases: vec![],
        service: None,
        service_disabled: false,
    })
}

fn view(eps: &[Arc<RemoteEndpointView>], generation: u64) -> ClusterView {
    ClusterView {
        endpoints: eps.to_vec().into(),
        generation,
        ..Default::default()
    }
}

/// The `p` quantile of `v`, in ms.
fn pctl(v: &mut [Duration], p: f64) -> f64 {
    pct(v, p).as_secs_f64() * 1e3
}

#[test]
#[ignore = "benchmark: root; 100k remote endpoints on a VXLAN device"]
fn remote_pass_bench() {
    assert!(is_root(), "remote_pass_bench needs root");
    let n = env("REMOTES_BENCH_ENTRIES", 100_000) as u32;
    const ROUNDS: usize = 25;
    let t = TestNs::new("remotesbench");
    t.vxlan("vx", 42);
    let (ns, none) = (t.ns(), BTreeSet::new());
    let mut eps: Vec<_> = (1..=n).map(endpoint).collect();
    let mut generation = 0;
    let v = view(&eps, generation);
    let want = wanted(&v, "bench", &none);
    let setup = Instant::now();
    let all = NeighPlan::compute(&want, &BTreeMap::new(), &BTreeMap::new(), false);
    neigh::apply(&ns, "vx", &all).unwrap();
    println!(
        "setup of {n} remote endpoints: {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    let mut programmed = Programmed::new(generation, none.clone(), &want);
    let (mut whole, mut followed) = (Vec::new(), Vec::new());
    let (mut apply, mut new) = (Vec::new(), Vec::new());
    for round in 0..2 * ROUNDS {
        let extra = endpoint(n + 1 + round as u32);
        for change in [(None, Some(extra.clone())), (Some(extra), None)] {
            match &change.1 {
                Some(e) => eps.push(e.clone()),
                None => {
                    eps.pop();
                }
            }
            generation += 1;
            let v = view(&eps, generation);
            let t0 = Instant::now();
            let plan = if round % 2 == 0 {
                let want = wanted(&v, "bench", &none);
                let plan = NeighPlan::compute(
                    &want,
                    &neigh::fdb(&ns, "vx").unwrap(),
                    &neigh::neighbors(&ns, "vx").unwrap(),
                    false,
                );
                let tn = Instant::now();
                programmed = Programmed::new(generation, none.clone(), &want);
                new.push(tn.elapsed());
                plan
            } else {
                programmed
                    .follow("bench", &[Arc::new(vec![change])], generation, false)
                    .expect("the change fits")
            };
            let t1 = Instant::now();
            neigh::apply(&ns, "vx", &plan).unwrap();
            let done = t0.elapsed();
            apply.push(t1.elapsed());
            if round % 2 == 0 {
                whole.push(done);
            } else {
                followed.push(done);
            }
        }
    }
    let fdb = neigh::fdb(&ns, "vx").unwrap();
    assert_eq!(fdb.len(), n as usize, "the device holds the 100k again");
    let (w50, w99) = (pctl(&mut whole, 0.5), pctl(&mut whole, 0.99));
    let (f50, f99) = (pctl(&mut followed, 0.5), pctl(&mut followed, 0.99));
    println!(
        "one remote endpoint change at {n}, pass until applied ({} each): whole p50 {w50:.1} ms, p99 {w99:.1} ms; followed p50 {f50:.1} ms, p99 {f99:.1} ms; ratio p50 {:.1}x; of which applying (bridge + ip -batch) p50 {:.1} ms, and in the whole pass, making what is followed p50 {:.1} ms",
        whole.len(),
        w50 / f50,
        pctl(&mut apply, 0.5),
        pctl(&mut new, 0.5)
    );
}
