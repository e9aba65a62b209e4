//! `netd inspect crypto`: the encryption view of `GET /v1/encryption` (key tags, never key
//! material). Exit code 1 when a problem is found (missing SAs or drop rules, no keys for an
//! encrypted network, little sequence-number headroom).

use crate::client;
use crate::crypto::view::CryptoView;
use anyhow::Context;
use std::path::Path;

pub fn run(socket: &Path, as_json: bool) -> i32 {
    let view = client::get_json(socket, "/v1/encryption").and_then(|v| {
        serde_json::from_value::<CryptoView>(v).context("reading the encryption view")
    });
    match view {
        Ok(v) => {
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
            } else {
                print_human(&v);
            }
            i32::from(!v.problems.is_empty())
        }
        Err(e) => {
            eprintln!("netd inspect crypto: {e:#}");
            2
        }
    }
}

fn print_human(v: &CryptoView) {
    println!(
        "esp-gcm {}  keys (tags, primary first): {}",
        if v.esp_supported {
            "supported"
        } else {
            "NOT supported"
        },
        if v.key_tags.is_empty() {
            "none".to_string()
        } else {
            v.key_tags.join(" ")
        }
    );
    println!("encrypted networks:");
    for n in &v.encrypted_networks {
        println!("  {:<20} vni {}", n.name, n.vni);
    }
    let d = &v.drop_rules;
    println!(
        "drop rules (cleartext of encrypted VNIs): {}  out {:?} ({} dropped)  in {:?} ({} dropped)",
        if d.present { "present" } else { "absent" },
        d.out_vnis,
        d.dropped_out_packets,
        d.in_vnis,
        d.dropped_in_packets
    );
    println!("peers:");
    for p in &v.peers {
        println!(
            "  {}  sends with spi {} (key {})",
            p.peer,
            p.out_spi.as_deref().unwrap_or("-"),
            p.out_key_tag.as_deref().unwrap_or("-")
        );
        for s in &p.states {
            println!(
                "    sa {:<3} spi {}  key {:<8}  {:>12} bytes {:>10} packets  seq {}  headroom {}{}",
                s.dir,
                s.spi,
                s.key_tag.as_deref().unwrap_or("?"),
                s.bytes,
                s.packets,
                s.seq,
                s.seq_headroom,
                if s.esn { " (esn)" } else { "" }
            );
        }
        for pol in &p.policies {
            println!(
                "    policy {:<3} {}  tmpl spi {}",
                pol.dir,
                pol.selector,
                pol.tmpl_spi.as_deref().unwrap_or("any")
            );
        }
    }
    if v.problems.is_empty() {
        println!("problems: none");
    } else {
        println!("problems:");
        for p in &v.problems {
            println!("  {p}");
        }
    }
}
