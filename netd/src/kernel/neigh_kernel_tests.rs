//! `neigh::fdb` / `neigh::neighbors` against the real kernel (root; skipped otherwise), and
//! `neigh_dump_bench`, the 100k-entry measurement of the netlink dump against what it
//! replaced (`bridge -j fdb show` / `ip -j neigh show` and serde):
//!
//! `cargo test --release -p netd neigh_dump_bench -- --ignored --nocapture`
//!
//! Each test works in a namespace of its own, removed (devices first) when the test ends,
//! also by a panic.

use super::{fdb, neighbors};
use crate::kernel::cmd::{batch, Ns};
use crate::kernel::test_ns::{is_root, TestNs};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn mac(s: &str) -> [u8; 6] {
    super::parse_mac(s).unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The reads as they were before the netlink dump: iproute2's JSON, parsed with serde. Kept
/// here only, to compare results and cost.
mod iproute2 {
    use crate::kernel::cmd::{run, Ns};
    use crate::kernel::neigh::parse_mac;
    use anyhow::Result;
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    #[derive(Deserialize)]
    struct FdbEntry {
        mac: String,
        #[serde(default)]
        dst: Option<String>,
    }

    #[derive(Deserialize)]
    struct NeighEntry {
        dst: String,
        #[serde(default)]
        lladdr: Option<String>,
    }

    /// `cmd::json`, with the size of the JSON read.
    fn json<T: serde::de::DeserializeOwned>(
        ns: &Ns,
        prog: &str,
        args: &[&str],
    ) -> Result<(T, usize)> {
        let out = run(ns, prog, args)?;
        let text = if out.trim().is_empty() {
            "[]"
        } else {
            out.trim()
        };
        Ok((serde_json::from_str(text)?, out.len()))
    }

    pub fn fdb(sandbox: &Ns, dev: &str) -> Result<(BTreeMap<[u8; 6], Ipv4Addr>, usize)> {
        let (entries, bytes): (Vec<FdbEntry>, _) =
            json(sandbox, "bridge", &["-j", "fdb", "show", "dev", dev])?;
        let map = entries
            .into_iter()
            .filter_map(|e| Some((parse_mac(&e.mac)?, e.dst?.parse().ok()?)))
            .filter(|(m, _)| *m != [0; 6])
            .collect();
        Ok((map, bytes))
    }

    pub fn neighbors(sandbox: &Ns, dev: &str) -> Result<(BTreeMap<Ipv4Addr, [u8; 6]>, usize)> {
        let (entries, bytes): (Vec<NeighEntry>, _) =
            json(sandbox, "ip", &["-j", "-4", "neigh", "show", "dev", dev])?;
        let map = entries
            .into_iter()
            .filter_map(|e| Some((e.dst.parse().ok()?, parse_mac(e.lladdr.as_deref()?)?)))
            .collect();
        Ok((map, bytes))
    }
}

/// Exactly the static entries of the device asked for: not the flood list, not the bridge's
/// own entries, not a NOARP neighbor, nothing of a second VXLAN device; the same as iproute2
/// lists; by namespace name and by path; a missing device is named in the error.
#[test]
fn dumps_read_exactly_the_devices_entries() {
    if !is_root() {
        println!("SKIP: needs root (network namespaces)");
        return;
    }
    let t = TestNs::new("neigh");
    t.ip("link add br0 type bridge");
    t.ip("link set br0 up");
    t.vxlan("vx", 42);
    t.ip("link set vx master br0");
    t.vxlan("vx2", 43);
    let br = |lines: &[&str]| {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        batch(&t.ns(), "bridge", &lines).unwrap();
    };
    br(&[
        "fdb append 00:00:00:00:00:00 dev vx dst 192.168.0.9 self permanent",
        "fdb replace 02:42:0a:00:00:02 dev vx dst 192.168.0.1 self permanent",
        "fdb replace 02:42:0a:00:00:03 dev vx dst 192.168.0.2 self permanent",
        "fdb replace 02:42:0a:00:00:04 dev vx dst 192.168.0.2 self permanent",
        "fdb replace 02:42:0a:00:00:05 dev vx2 dst 192.168.0.3 self permanent",
        "fdb append 00:00:00:00:00:00 dev vx2 dst 192.168.0.3 self permanent",
    ]);
    t.ip("neigh replace 10.0.0.2 lladdr 02:42:0a:00:00:02 dev vx nud permanent");
    t.ip("neigh replace 10.0.0.3 lladdr 02:42:0a:00:00:03 dev vx nud permanent");
    t.ip("neigh replace 10.0.0.99 lladdr 02:42:0a:00:00:63 dev vx nud noarp");
    t.ip("neigh replace 10.0.0.5 lladdr 02:42:0a:00:00:05 dev vx2 nud permanent");

    let want_fdb = BTreeMap::from([
        (mac("02:42:0a:00:00:02"), ip("192.168.0.1")),
        (mac("02:42:0a:00:00:03"), ip("192.168.0.2")),
        (mac("02:42:0a:00:00:04"), ip("192.168.0.2")),
    ]);
    let want_neigh = BTreeMap::from([
        (ip("10.0.0.2"), mac("02:42:0a:00:00:02")),
        (ip("10.0.0.3"), mac("02:42:0a:00:00:03")),
    ]);
    let by_path = Ns::path(&std::path::Path::new("/run/netns").join(&t.0));
    for ns in [t.ns(), by_path] {
        assert_eq!(fdb(&ns, "vx").unwrap(), want_fdb, "{ns}");
        assert_eq!(neighbors(&ns, "vx").unwrap(), want_neigh, "{ns}");
    }
    assert_eq!(iproute2::fdb(&t.ns(), "vx").unwrap().0, want_fdb);
    assert_eq!(iproute2::neighbors(&t.ns(), "vx").unwrap().0, want_neigh);
    assert_eq!(
        fdb(&t.ns(), "vx2").unwrap(),
        BTreeMap::from([(mac("02:42:0a:00:00:05"), ip("192.168.0.3"))])
    );
    assert_eq!(
        neighbors(&t.ns(), "vx2").unwrap(),
        BTreeMap::from([(ip("10.0.0.5"), mac("02:42:0a:00:00:05"))])
    );

    for e in [
        fdb(&t.ns(), "vx9").unwrap_err(),
        neighbors(&t.ns(), "vx9").map(|_| ()).unwrap_err(),
    ] {
        let msg = format!("{e:#}");
        assert!(
            msg.contains("vx9") && msg.contains(&t.0),
            "the error names the device and the namespace: {msg}"
        );
    }
}

/// The peak RSS (KiB), first reset to the current RSS (after giving free heap back, so that
/// what an earlier read left in malloc's arenas does not hide this one's) when `reset`.
fn hwm_kib(reset: bool) -> u64 {
    if reset {
        // SAFETY: malloc_trim(3) has no preconditions; it only returns free memory.
        unsafe { libc::malloc_trim(0) };
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What one way of reading costs: the best time of each read and the median of both, over
/// `RUNS`; the CPU time of both (user and system, this process's and its children's) per
/// run, which a loaded machine disturbs less; how far the first pair raised the peak RSS (the
/// two maps included).
struct Cost {
    fdb: Duration,
    neigh: Duration,
    median: Duration,
    cpu: Duration,
    rss_kib: u64,
}

/// CPU time used so far by this process and its waited-for children.
fn cpu_time() -> Duration {
    let used = |who| {
        // SAFETY: an all-zero rusage is valid; getrusage(2) fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage(2) with a valid rusage to fill.
        unsafe { libc::getrusage(who, &mut ru) };
        let d = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        d(ru.ru_utime) + d(ru.ru_stime)
    };
    used(libc::RUSAGE_SELF) + used(libc::RUSAGE_CHILDREN)
}

const RUNS: usize = 5;

fn cost<F, N>(mut fdb: impl FnMut() -> F, mut neigh: impl FnMut() -> N) -> (F, N, Cost) {
    let base = hwm_kib(true);
    let (f, n) = (fdb(), neigh());
    let rss_kib = hwm_kib(false).saturating_sub(base);
    let cpu0 = cpu_time();
    let mut times: Vec<(Duration, Duration)> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            fdb();
            let mid = t.elapsed();
            neigh();
            (mid, t.elapsed() - mid)
        })
        .collect();
    let cpu = (cpu_time() - cpu0) / RUNS as u32;
    let best = |g: fn(&(Duration, Duration)) -> Duration| times.iter().map(g).min().unwrap();
    let (fdb_best, neigh_best) = (best(|t| t.0), best(|t| t.1));
    times.sort_by_key(|t| t.0 + t.1);
    let median = times[RUNS / 2].0 + times[RUNS / 2].1;
    let c = Cost {
        fdb: fdb_best,
        neigh: neigh_best,
        median,
        cpu,
        rss_kib,
    };
    (f, n, c)
}

/// The peak RSS (KiB) of `prog args...` (output dropped), by GNU time: it forks the command
/// from its own small process. (The rusage of a child of ours would not do: it is spawned
/// sharing our memory until its exec, and the kernel counts that as the child's peak.)
fn child_peak_kib(prog: &str, args: &[&str]) -> Option<u64> {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", prog])
        .args(args)
        .stdout(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// 100k FDB and 100k neighbor entries on one VXLAN device (set up with `bridge -batch` and
/// `ip -batch`): the time of one full read (FDB and neighbors, best of 3) by iproute2 JSON and
/// by the netlink dump, and the peak RSS each adds to this process.
#[test]
#[ignore = "benchmark: root; 100k FDB + 100k neighbor entries"]
fn neigh_dump_bench() {
    assert!(is_root(), "neigh_dump_bench needs root");
    let n = crate::bench_util::env("NEIGH_BENCH_ENTRIES", 100_000) as u32;
    let t = TestNs::new("neighbench");
    t.vxlan("vx", 42);
    let (mut br, mut nb) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let [_, a, b, c] = i.to_be_bytes();
        let m = format!("02:42:0a:{a:02x}:{b:02x}:{c:02x}");
        let vtep = format!("192.168.{}.{}", (i / 250) % 250, 1 + i % 250);
        br.push(format!("fdb replace {m} dev vx dst {vtep} self permanent"));
        nb.push(format!(
            "neigh replace 10.{a}.{b}.{c} lladdr {m} dev vx nud permanent"
        ));
    }
    let setup = Instant::now();
    batch(&t.ns(), "bridge", &br).unwrap();
    batch(&t.ns(), "ip", &nb).unwrap();
    println!(
        "setup of {n} FDB + {n} neighbor entries: {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    drop((br, nb));

    let ns = t.ns();
    let (new_f, new_n, new) = cost(|| fdb(&ns, "vx").unwrap(), || neighbors(&ns, "vx").unwrap());
    let ((old_f, a), (old_n, b), old) = cost(
        || iproute2::fdb(&ns, "vx").unwrap(),
        || iproute2::neighbors(&ns, "vx").unwrap(),
    );
    assert_eq!(new_f.len(), n as usize);
    assert_eq!(new_n.len(), n as usize);
    assert!(new_f == old_f && new_n == old_n, "both ways read the same");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (what, c) in [("iproute2 JSON", &old), ("netlink dump", &new)] {
        println!(
            "{what}: FDB {:.1} ms + neighbors {:.1} ms (best of {RUNS}); both, median: {:.1} ms, CPU {:.1} ms",
            ms(c.fdb),
            ms(c.neigh),
            ms(c.median),
            ms(c.cpu)
        );
    }
    println!(
        "full read of {n} + {n}: {:.1}x faster (best), {:.1}x (median), {:.1}x less CPU; the JSON was {:.1} MB",
        (old.fdb + old.neigh).as_secs_f64() / (new.fdb + new.neigh).as_secs_f64(),
        old.median.as_secs_f64() / new.median.as_secs_f64(),
        old.cpu.as_secs_f64() / new.cpu.as_secs_f64(),
        (a + b) as f64 / 1e6
    );
    let mib = |k: u64| k as f64 / 1024.0;
    let ns_arg = ["-n", t.0.as_str(), "-j"];
    let bridge = child_peak_kib(
        "bridge",
        &[&ns_arg[..], &["fdb", "show", "dev", "vx"]].concat(),
    );
    let ip = child_peak_kib(
        "ip",
        &[&ns_arg[..], &["-4", "neigh", "show", "dev", "vx"]].concat(),
    );
    let child = |k: Option<u64>| k.map_or("?".to_string(), |k| format!("{:.1}", mib(k)));
    println!(
        "peak RSS added to this process (the two maps included): iproute2 JSON {:.1} MiB, netlink dump {:.1} MiB; the children's own peaks (MiB): bridge {}, ip {}",
        mib(old.rss_kib),
        mib(new.rss_kib),
        child(bridge),
        child(ip)
    );
}
