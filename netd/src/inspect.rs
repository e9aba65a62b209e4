//! `netd inspect`: the node as netd wants it and as the kernel has it, and where they differ.
//! Exit code 1 when drift or a failure is found.

use crate::client;
use crate::kernel::cmd::Ns;
use crate::kernel::neigh;
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::Path;

#[derive(Subcommand, Clone)]
pub enum What {
    /// One overlay network: endpoints, peers, FDB/neighbor entries in the kernel, and drift.
    Network { name: String },
    /// Encryption: key tags, SPIs, XFRM states/policies per peer with counters, sequence
    /// headroom, fail-closed drop rules.
    Crypto,
}

pub fn run(socket: &Path, as_json: bool, what: Option<What>) -> i32 {
    let r = match what {
        Some(What::Crypto) => return crate::inspect_crypto::run(socket, as_json),
        None => summary(socket),
        Some(What::Network { name }) => network(socket, &name),
    };
    match r {
        Ok((v, healthy)) => {
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
            } else {
                print_human(&v);
            }
            if healthy {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("netd inspect: {e:#}");
            2
        }
    }
}

fn summary(socket: &Path) -> anyhow::Result<(Value, bool)> {
    let node = client::get_json(socket, "/v1/node")?;
    let networks = client::get_json(socket, "/v1/networks")?;
    Ok((json!({"node": node, "networks": networks}), true))
}

fn network(socket: &Path, name: &str) -> anyhow::Result<(Value, bool)> {
    let net = client::get_json(socket, &format!("/v1/networks/{name}"))?;
    let locals: Vec<Value> = client::get_json(socket, "/v1/endpoints")?
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["network"] == name)
        .collect();
    let remotes: Vec<Value> = client::get_json(socket, "/v1/remote-endpoints")?
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["network"] == name)
        .collect();
    let sandbox = net["sandbox"].as_str().unwrap_or_default().to_string();
    let vx = format!("vx-{}", net["vni"]);
    let mut drift = Vec::new();
    let (fdb, neighs) = if locals.is_empty() {
        (Default::default(), Default::default())
    } else {
        let sb = Ns::named(&sandbox);
        (neigh::fdb(&sb, &vx)?, neigh::neighbors(&sb, &vx)?)
    };
    if !locals.is_empty() {
        for r in &remotes {
            let mac = neigh::parse_mac(r["mac"].as_str().unwrap_or_default()).unwrap_or_default();
            let vtep: std::net::Ipv4Addr = r["vtep"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .unwrap_or([0, 0, 0, 0].into());
            let ip: std::net::Ipv4Addr = r["ip"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .unwrap_or([0, 0, 0, 0].into());
            match fdb.get(&mac) {
                None => drift.push(format!("missing fdb {} -> {vtep}", neigh::fmt_mac(&mac))),
                Some(v) if *v != vtep => {
                    drift.push(format!("fdb {} -> {v}, want {vtep}", neigh::fmt_mac(&mac)))
                }
                _ => {}
            }
            if neighs.get(&ip) != Some(&mac) {
                drift.push(format!("missing neighbor {ip} -> {}", neigh::fmt_mac(&mac)));
            }
        }
        let want: std::collections::BTreeSet<String> = remotes
            .iter()
            .map(|r| r["mac"].as_str().unwrap_or_default().to_string())
            .collect();
        for mac in fdb.keys() {
            if !want.contains(&neigh::fmt_mac(mac)) {
                drift.push(format!("extra fdb {}", neigh::fmt_mac(mac)));
            }
        }
    }
    let kernel_fdb: Vec<Value> = fdb
        .iter()
        .map(|(m, v)| json!({"mac": neigh::fmt_mac(m), "dst": v.to_string()}))
        .collect();
    let kernel_neigh: Vec<Value> = neighs
        .iter()
        .map(|(i, m)| json!({"ip": i.to_string(), "mac": neigh::fmt_mac(m)}))
        .collect();
    let healthy = drift.is_empty();
    Ok((
        json!({"network": net, "local_endpoints": locals, "remote_endpoints": remotes,
               "kernel": {"fdb": kernel_fdb, "neighbors": kernel_neigh}, "drift": drift}),
        healthy,
    ))
}

fn print_human(v: &Value) {
    if let Some(node) = v.get("node") {
        println!(
            "node {}  advertise {}  data port {}  gossip {}",
            node["node"], node["advertise_addr"], node["data_port"], node["gossip_addr"]
        );
        println!("peers:");
        for p in node["peers"].as_array().into_iter().flatten() {
            println!(
                "  {:<20} {:<22} {:<5} endpoints {}",
                p["node"].as_str().unwrap_or(""),
                p["gossip_addr"].as_str().unwrap_or(""),
                if p["live"] == true { "live" } else { "dead" },
                p["endpoints"]
            );
        }
        println!("networks:");
        for n in v["networks"].as_array().into_iter().flatten() {
            println!(
                "  {:<16} {:<18} vni {:<9} mtu {:<5} local {} remote {}",
                n["name"].as_str().unwrap_or(""),
                n["subnet"].as_str().unwrap_or(""),
                n["vni"],
                n["effective_mtu"],
                n["local_endpoints"],
                n["remote_endpoints"]
            );
        }
        return;
    }
    let n = &v["network"];
    println!(
        "network {}  subnet {}  vni {}  mtu {}  sandbox {}",
        n["name"].as_str().unwrap_or(""),
        n["subnet"].as_str().unwrap_or(""),
        n["vni"],
        n["effective_mtu"],
        n["sandbox"].as_str().unwrap_or("")
    );
    println!("local endpoints:");
    for e in v["local_endpoints"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:<16} {:<8} {:<18} {}",
            e["id"].as_str().unwrap_or(""),
            e["name"].as_str().unwrap_or(""),
            e["ifname"].as_str().unwrap_or(""),
            e["address"].as_str().unwrap_or(""),
            e["mac"].as_str().unwrap_or("")
        );
    }
    println!("remote endpoints:");
    for e in v["remote_endpoints"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:<18} {:<16} vtep {:<16} node {}",
            e["name"].as_str().unwrap_or(""),
            e["ip"].as_str().unwrap_or(""),
            e["mac"].as_str().unwrap_or(""),
            e["vtep"].as_str().unwrap_or(""),
            e["node"].as_str().unwrap_or("")
        );
    }
    let drift = v["drift"].as_array().cloned().unwrap_or_default();
    if drift.is_empty() {
        println!("drift: none");
    } else {
        println!("drift:");
        for d in drift {
            println!("  {}", d.as_str().unwrap_or(""));
        }
    }
}
