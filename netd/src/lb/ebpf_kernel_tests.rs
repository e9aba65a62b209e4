//! The eBPF LB on the real kernel (root, the cgroup v2 mount and bpffs): drift repair's
//! read-back, a slice at a time.

use super::*;
use crate::kernel::test_ns::is_root;

/// `n` services of two backends each, TCP port 80 on VIPs 10.128.0.0/9.
fn model(n: u32) -> LbModel {
    let mut m = LbModel::default();
    for s in 0..n {
        let backends = (0..2)
            .map(|b| Backend {
                ip: Ipv4Addr::from(0x0a00_0001 + 2 * s + b),
                port: 8080,
            })
            .collect();
        let fe = Frontend {
            vip: Ipv4Addr::from(0x0a80_0000 + s),
            port: 80,
            proto: Proto::Tcp,
        };
        let svc = Service {
            network: "n".into(),
            backends,
            ..Service::default()
        };
        m.services.insert(fe, svc);
    }
    m
}

/// Calls `verify_kernel` until it is complete: how many calls, and what differed.
fn read_back(lb: &mut EbpfLb) -> (usize, Vec<String>) {
    let (mut calls, mut found) = (0, Vec::new());
    loop {
        let (f, done) = lb.verify_kernel().expect("verify_kernel");
        calls += 1;
        found.extend(f);
        if done {
            return (calls, found);
        }
    }
}

/// Three slices' worth of services: an entry deleted by hand in the last slice and a stray one
/// are both found, in as many calls as there are slices, and the next apply repairs them.
#[test]
fn drift_repair_reads_back_a_slice_at_a_time() {
    assert!(is_root(), "needs root (eBPF maps, cgroup)");
    let tag = format!("lbverify-{}", std::process::id());
    let cg = Path::new("/sys/fs/cgroup/unified").join(format!("netd-{tag}"));
    let pins = PathBuf::from(format!("/sys/fs/bpf/netd-{tag}"));
    let mut lb = EbpfLb::open(&cg, &pins, 4 * VERIFY_SLICE as u32).expect("open the eBPF LB");
    let m = model(2 * VERIFY_SLICE as u32 + 100);
    lb.apply(&m).unwrap();
    assert_eq!(read_back(&mut lb), (3, vec![]), "no drift after apply");

    let last = *m.services.keys().last().unwrap();
    lb.services.remove(&SvcKey::of(&last)).unwrap();
    let stray = Frontend {
        vip: Ipv4Addr::new(10, 255, 255, 1),
        port: 81,
        proto: Proto::Tcp,
    };
    let val = SvcVal { slot: 0, count: 0 };
    lb.services.insert(SvcKey::of(&stray), val, 0).unwrap();
    let (calls, found) = read_back(&mut lb);
    assert_eq!(calls, 3, "{found:?}");
    assert_eq!(
        found,
        vec![
            format!("{}:80/tcp: missing from lb_services, restored", last.vip),
            "10.255.255.1:81/tcp: stray lb_services entry removed".to_string(),
        ]
    );
    lb.apply(&m).unwrap();
    assert!(lb.services.get(&SvcKey::of(&last), 0).is_ok(), "restored");
    assert!(
        lb.services.get(&SvcKey::of(&stray), 0).is_err(),
        "stray gone"
    );
    assert_eq!(read_back(&mut lb), (3, vec![]), "no drift after the repair");

    drop(lb);
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir(&cg);
}
