//! `netd check`: probes each kernel feature by using it, in a throw-away namespace, so the
//! answer is what the kernel does, not what a config file claims.

use crate::kernel::cmd::{self, Ns};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
pub struct Probe {
    pub feature: &'static str,
    pub ok: bool,
    pub required: bool,
    pub affects: &'static str,
    pub fix: &'static str,
    pub detail: String,
}

fn probe_cmd(ns: &Ns, prog: &str, args: &[&str]) -> (bool, String) {
    match cmd::run(ns, prog, args) {
        Ok(_) => (true, String::new()),
        Err(e) => (false, format!("{e:#}")),
    }
}

pub fn run_probes() -> Vec<Probe> {
    let tmp = format!("netd-check-{}", std::process::id());
    let mut out = Vec::new();
    let (netns_ok, d) = probe_cmd(&Ns::Node, "ip", &["netns", "add", &tmp]);
    out.push(Probe {
        feature: "netns",
        ok: netns_ok,
        required: true,
        affects: "sandboxes and containers",
        fix: "kernel with CONFIG_NET_NS; run as root",
        detail: d,
    });
    let ns = Ns::named(&tmp);
    let mut link_probe = |feature, args: &[&str], required, affects, fix| {
        let (ok, detail) = if netns_ok {
            probe_cmd(&ns, "ip", args)
        } else {
            (false, "no netns".into())
        };
        out.push(Probe {
            feature,
            ok,
            required,
            affects,
            fix,
            detail,
        });
    };
    link_probe(
        "bridge",
        &["link", "add", "b0", "type", "bridge"],
        true,
        "overlay sandboxes, egress",
        "modprobe bridge (CONFIG_BRIDGE)",
    );
    link_probe(
        "vxlan",
        &[
            "link",
            "add",
            "v0",
            "type",
            "vxlan",
            "id",
            "4096",
            "dstport",
            "4789",
            "nolearning",
        ],
        true,
        "overlay data path",
        "modprobe vxlan (CONFIG_VXLAN)",
    );
    link_probe(
        "veth",
        &["link", "add", "e0", "type", "veth", "peer", "name", "e1"],
        true,
        "container attachment",
        "modprobe veth (CONFIG_VETH)",
    );
    let (ok, detail) = if netns_ok {
        probe_cmd(
            &Ns::Node,
            "ip",
            &[
                "netns",
                "exec",
                &tmp,
                "nft",
                "add",
                "table",
                "ip",
                "netdcheck",
            ],
        )
    } else {
        (false, "no netns".into())
    };
    out.push(Probe {
        feature: "nftables",
        ok,
        required: true,
        affects: "egress masquerade",
        fix: "apt-get install nftables; modprobe nf_tables",
        detail,
    });
    let (ok, detail) = if netns_ok {
        probe_cmd(&ns, "ip", &["xfrm", "state", "list"])
    } else {
        (false, "no netns".into())
    };
    out.push(Probe {
        feature: "xfrm",
        ok,
        required: false,
        affects: "encrypted networks",
        fix: "CONFIG_XFRM_USER",
        detail,
    });
    let key = format!("0x{}", "11".repeat(20));
    let (ok, detail) = if netns_ok {
        probe_cmd(
            &ns,
            "ip",
            &[
                "xfrm",
                "state",
                "add",
                "src",
                "10.0.0.1",
                "dst",
                "10.0.0.2",
                "proto",
                "esp",
                "spi",
                "0x100",
                "mode",
                "transport",
                "aead",
                "rfc4106(gcm(aes))",
                &key,
                "128",
            ],
        )
    } else {
        (false, "no netns".into())
    };
    out.push(Probe {
        feature: "esp-gcm",
        ok,
        required: false,
        affects: "encrypted networks (refused without it)",
        fix: "CONFIG_INET_ESP and CONFIG_CRYPTO_GCM (stock distribution kernels have them)",
        detail,
    });
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    out.push(Probe {
        feature: "bpf-btf",
        ok: btf,
        required: false,
        affects: "eBPF service load balancing",
        fix: "CONFIG_DEBUG_INFO_BTF",
        detail: if btf {
            String::new()
        } else {
            "/sys/kernel/btf/vmlinux missing".into()
        },
    });
    let cg = [
        "/sys/fs/cgroup/unified/cgroup.controllers",
        "/sys/fs/cgroup/cgroup.controllers",
    ]
    .iter()
    .find(|p| Path::new(p).exists());
    out.push(Probe {
        feature: "cgroup-v2",
        ok: cg.is_some(),
        required: false,
        affects: "socket-level load balancing",
        fix: "mount cgroup2",
        detail: cg
            .map(|p| p.to_string())
            .unwrap_or_else(|| "no cgroup2 mount".into()),
    });
    // The probe lb_backend = "ebpf" starts with: a TCX query (tc BPF links, Linux 6.6+).
    let tcx = crate::lb::ebpf::probe_tcx();
    out.push(Probe {
        feature: "bpf-tcx",
        ok: tcx.is_ok(),
        required: false,
        affects: "eBPF LB backend (lb_backend = \"ebpf\", the default with lb_cgroup; netd refuses it without TCX)",
        fix: "Linux 6.6 or later (TCX); or lb_backend = \"nftables\" or \"ipvs\"",
        detail: tcx.err().map(|e| format!("{e:#}")).unwrap_or_default(),
    });
    // The probe lb_backend = "ipvs" starts with: the generic-netlink family, after modprobe.
    let ipvs = crate::lb::ipvs::probe();
    out.push(Probe {
        feature: "ipvs",
        ok: ipvs.is_ok(),
        required: false,
        affects: "IPVS load-balancer backend (lb_backend = \"ipvs\"; optional)",
        fix: "CONFIG_IP_VS (and CONFIG_IP_VS_MH for Maglev); modprobe ip_vs",
        detail: ipvs.err().map(|e| format!("{e:#}")).unwrap_or_default(),
    });
    if netns_ok {
        let _ = cmd::run(&Ns::Node, "ip", &["netns", "del", &tmp]);
    }
    out
}

/// Prints the probes; returns the exit code (1 when a required feature is missing).
pub fn run(json: bool) -> i32 {
    let probes = run_probes();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&probes).expect("serializes")
        );
    } else {
        println!("FEATURE    STATUS   REQUIRED  AFFECTS / FIX");
        for p in &probes {
            let status = if p.ok { "ok" } else { "missing" };
            let fix = if p.ok {
                String::new()
            } else {
                format!("  -> fix: {}", p.fix)
            };
            println!(
                "{:<10} {:<8} {:<9} {}{}",
                p.feature,
                status,
                if p.required { "yes" } else { "no" },
                p.affects,
                fix
            );
        }
    }
    if probes.iter().any(|p| p.required && !p.ok) {
        1
    } else {
        0
    }
}
