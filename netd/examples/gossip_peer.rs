//! A gossip peer for `scripts/bench/lb-e2e.sh`: runs netd's own gossip code
//! (`netd::gossip::Gossip`, the same config file format and keys as a netd node, so it is a
//! real protocol peer), publishes `--services` x `--tasks` endpoint records of network
//! `--network` (each task a `vip` service task) and changes them on command, and watches a
//! running netd's pinned eBPF LB maps (`--pin-dir`, opened read-only by path) to time when a
//! change is in the kernel.
//!
//! Commands, one per line on stdin; answers on stdout (progress on stderr):
//! - `publish`: publishes all records (`--publish api`: one `publish_endpoint` each, as netd
//!   does for an API attach, every one nudging the peers; `--publish initial`: the gossip
//!   instance starts then with all of them as its initial state, as a restarted netd
//!   publishes its endpoints), then waits until `lb_services` holds every service with all
//!   its tasks. Answers `published <s>` and `synced <s since publish began>`.
//! - `remote <n> <gap_ms>`: n changes of remote tasks, alternately drain and enable of one
//!   task (`publish_endpoint` with the record's drained flag), each timed until the
//!   service's `lb_services` entry shows the new number of enabled backends. Answers one
//!   `change remote <i> <start, µs since the epoch> <latency µs>` per change, then
//!   `summary remote <p50 µs> <p99 µs> <max µs>`.
//! - `local <n> <gap_ms> <api socket> <endpoint id> <vip> <port>`: the same for a local task of
//!   a netd node, drained and enabled through its API (`PATCH /v1/endpoints/<id>`); the change
//!   lines add the API's response time (µs).
//! - `quit`.
//!
//! Task k = s * tasks + b (service s, task b): address 10.1.0.0 + k, VIP of service s
//! 10.128.0.1 + s, port 80/tcp, VTEP the peer's own address.

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use netd::config::Config;
use netd::gossip::record::{decode, EndpointRecord};
use netd::gossip::{initial_endpoint_state, Gossip};
use netd::lb::maps::{SvcKey, SvcVal, MAP_SERVICES};
use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    config: PathBuf,
    network: String,
    services: u32,
    tasks: u32,
    pin_dir: PathBuf,
    publish_initial: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        config: PathBuf::new(),
        network: "bench".into(),
        services: 10_000,
        tasks: 10,
        pin_dir: PathBuf::new(),
        publish_initial: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k}: value missing"))?;
        match k.as_str() {
            "--config" => a.config = v.into(),
            "--network" => a.network = v,
            "--services" => a.services = v.parse()?,
            "--tasks" => a.tasks = v.parse()?,
            "--pin-dir" => a.pin_dir = v.into(),
            "--publish" => a.publish_initial = v == "initial",
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.config.as_os_str().is_empty() || a.pin_dir.as_os_str().is_empty() {
        bail!("usage: gossip_peer --config FILE --pin-dir DIR [--network N] [--services N] [--tasks N] [--publish api|initial]");
    }
    Ok(a)
}

fn vip(s: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0001 + s)
}

/// Task `b` of service `s` as its node publishes it (built from the wire format, so that only
/// the record's encoding is relied on).
fn record(a: &Args, me: Ipv4Addr, s: u32, b: u32, drained: bool) -> EndpointRecord {
    let ip = Ipv4Addr::from(0x0a01_0000 + s * a.tasks + b);
    let json = format!(
        r#"{{"i":"{ip}","n":"svc{s}.{b}","s":{{"n":"svc{s}","i":"svc{s}","v":"{}","p":[{{"t":80}}]}},"d":{drained}}}"#,
        vip(s)
    );
    decode(&json, me).expect("record decodes")
}

fn id(s: u32, b: u32) -> String {
    format!("svc{s}-t{b}")
}

fn epoch_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

fn services_map(dir: &Path) -> Result<BpfHashMap<MapData, SvcKey, SvcVal>> {
    let p = dir.join(MAP_SERVICES);
    let data = MapData::from_pin(&p).with_context(|| format!("opening {}", p.display()))?;
    Ok(BpfHashMap::try_from(Map::from_map_data(data)?)?)
}

fn key(vip: Ipv4Addr, port: u16) -> SvcKey {
    SvcKey {
        vip: u32::from_ne_bytes(vip.octets()),
        port: port.to_be(),
        proto: 6,
        pad: 0,
    }
}

fn count_of(m: &BpfHashMap<MapData, SvcKey, SvcVal>, k: &SvcKey) -> Option<u32> {
    m.get(k, 0).ok().map(|v| v.count)
}

/// Polls `k` until its backend count is `want`; the instant it was seen.
fn wait_count(
    m: &BpfHashMap<MapData, SvcKey, SvcVal>,
    k: &SvcKey,
    want: u32,
    timeout: Duration,
) -> Option<Instant> {
    let end = Instant::now() + timeout;
    loop {
        if count_of(m, k) == Some(want) {
            return Some(Instant::now());
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn pct(v: &mut [u128], p: f64) -> u128 {
    if v.is_empty() {
        return 0;
    }
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// `PATCH /v1/endpoints/<id>` over the API socket; the HTTP status.
fn api_drain(sock: &Path, id: &str, drained: bool) -> Result<u16> {
    let body = format!(r#"{{"service_disabled":{drained}}}"#);
    let (status, _) =
        netd::client::request(sock, "PATCH", &format!("/v1/endpoints/{id}"), Some(&body))?;
    Ok(status)
}

/// Services whose `lb_services` entry has `tasks` backends, among those of this peer.
fn full_services(a: &Args, m: &BpfHashMap<MapData, SvcKey, SvcVal>) -> usize {
    let (lo, hi) = (u32::from(vip(0)), u32::from(vip(a.services - 1)));
    m.iter()
        .flatten()
        .filter(|(k, v)| {
            let ip = u32::from(Ipv4Addr::from(k.vip.to_ne_bytes()));
            (lo..=hi).contains(&ip) && v.count == a.tasks
        })
        .count()
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let cfg = Config::load(&a.config)?;
    let me = cfg.advertise_addr;
    let mut gossip = if a.publish_initial {
        None
    } else {
        Some(Gossip::start(&cfg, &cfg.gossip_keys, vec![]).await?)
    };
    let mut drained = std::collections::HashSet::new();
    // stdin on a thread of its own: the runtime's workers stay free for gossip.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = std::io::stdout();
    while let Some(line) = lines.recv().await {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["publish"] => {
                let t0 = Instant::now();
                if a.publish_initial {
                    let eps = (0..a.services).flat_map(|s| {
                        let a = &a;
                        (0..a.tasks)
                            .map(move |b| (a.network.clone(), id(s, b), record(a, me, s, b, false)))
                    });
                    let initial = initial_endpoint_state(&cfg, eps);
                    gossip = Some(Gossip::start(&cfg, &cfg.gossip_keys, initial).await?);
                } else {
                    let g = gossip.as_ref().expect("started");
                    for s in 0..a.services {
                        for b in 0..a.tasks {
                            g.publish_endpoint(&a.network, &id(s, b), &record(&a, me, s, b, false))
                                .await;
                        }
                    }
                }
                writeln!(out, "published {:.3}", t0.elapsed().as_secs_f64())?;
                out.flush()?;
                let m = services_map(&a.pin_dir)?;
                let mut last = Instant::now();
                loop {
                    let n = tokio::task::block_in_place(|| full_services(&a, &m));
                    if n == a.services as usize {
                        break;
                    }
                    if last.elapsed() > Duration::from_secs(5) {
                        eprintln!(
                            "gossip_peer: {:.1} s: {n} of {} services in the maps",
                            t0.elapsed().as_secs_f64(),
                            a.services
                        );
                        last = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                writeln!(out, "synced {:.3}", t0.elapsed().as_secs_f64())?;
            }
            ["remote", n, gap] => {
                let (n, gap): (u32, u64) = (n.parse()?, gap.parse()?);
                let g = gossip.as_ref().context("publish first")?;
                let m = services_map(&a.pin_dir)?;
                let mut lat = Vec::new();
                for i in 0..n {
                    let (s, b) = (((i / 2) * 7919) % a.services, (i / 2) % a.tasks);
                    let d = !drained.contains(&(s, b));
                    let others = drained.iter().filter(|(x, _)| *x == s).count() as u32;
                    let want = if d {
                        a.tasks - others - 1
                    } else {
                        a.tasks - others + 1
                    };
                    let k = key(vip(s), 80);
                    let (t0e, t0) = (epoch_us(), Instant::now());
                    g.publish_endpoint(&a.network, &id(s, b), &record(&a, me, s, b, d))
                        .await;
                    let seen = tokio::task::block_in_place(|| {
                        wait_count(&m, &k, want, Duration::from_secs(10))
                    });
                    if d {
                        drained.insert((s, b));
                    } else {
                        drained.remove(&(s, b));
                    }
                    let Some(seen) = seen else {
                        writeln!(out, "timeout remote {i} service {s} task {b}")?;
                        continue;
                    };
                    let us = (seen - t0).as_micros();
                    lat.push(us);
                    writeln!(out, "change remote {i} {t0e} {us}")?;
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
                let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
                writeln!(out, "summary remote {p50} {p99} {max} n={}", lat.len())?;
            }
            ["local", n, gap, sock, ep, v, port] => {
                let (n, gap): (u32, u64) = (n.parse()?, gap.parse()?);
                let k = key(v.parse()?, port.parse()?);
                let m = services_map(&a.pin_dir)?;
                let sock = PathBuf::from(sock);
                let ep = ep.to_string();
                let base = count_of(&m, &k).context("local frontend not in lb_services")?;
                let (mut lat, mut api) = (Vec::new(), Vec::new());
                for i in 0..n {
                    let d = i % 2 == 0;
                    let want = if d { base - 1 } else { base };
                    let (s2, ep2) = (sock.clone(), ep.clone());
                    let (t0e, t0) = (epoch_us(), Instant::now());
                    let req = std::thread::spawn(move || {
                        let r = api_drain(&s2, &ep2, d);
                        (r, Instant::now())
                    });
                    let seen = tokio::task::block_in_place(|| {
                        wait_count(&m, &k, want, Duration::from_secs(10))
                    });
                    let (r, done) = req.join().expect("request thread");
                    let status = r?;
                    if status != 200 {
                        bail!("PATCH {ep}: HTTP {status}");
                    }
                    let Some(seen) = seen else {
                        writeln!(out, "timeout local {i}")?;
                        continue;
                    };
                    let (us, api_us) = ((seen - t0).as_micros(), (done - t0).as_micros());
                    lat.push(us);
                    api.push(api_us);
                    writeln!(out, "change local {i} {t0e} {us} {api_us}")?;
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
                let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
                let (a50, a99) = (pct(&mut api, 0.5), pct(&mut api, 0.99));
                writeln!(
                    out,
                    "summary local {p50} {p99} {max} n={} api_p50={a50} api_p99={a99}",
                    lat.len()
                )?;
            }
            ["quit"] => break,
            _ => writeln!(out, "error unknown command {line:?}")?,
        }
        out.flush()?;
    }
    Ok(())
}
