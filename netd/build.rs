//! Compiles the eBPF programs in `../ebpf/*.c` (one object per attach point) with clang; netd
//! embeds the objects (`include_bytes!`) and loads them with aya.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ebpf");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", src.join("lib").display());
    let clang = std::env::var("NETD_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=NETD_CLANG");
    for entry in std::fs::read_dir(src.join("lib")).expect("ebpf/lib") {
        println!(
            "cargo:rerun-if-changed={}",
            entry.expect("entry").path().display()
        );
    }
    for prog in [
        "connect4",
        "sendmsg4",
        "recvmsg4",
        "getpeername4",
        "tc_ingress",
        "tc_egress",
    ] {
        let c = src.join(format!("{prog}.c"));
        println!("cargo:rerun-if-changed={}", c.display());
        let obj = out.join(format!("{prog}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg(format!("-I{}", src.display()))
            .arg("-c")
            .arg(&c)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "running {clang} for {} (install clang and libbpf-dev: scripts/setup.sh): {e}",
                    c.display()
                )
            });
        assert!(status.success(), "{clang} failed on {}", c.display());
    }
}
