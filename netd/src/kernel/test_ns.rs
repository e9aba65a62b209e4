//! A network namespace for a test on the real kernel (root), deleted when dropped.

use super::cmd::{run, Ns};
use super::netns;

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A namespace for one test: created with `lo` up, deleted on drop.
pub struct TestNs(pub String);

impl TestNs {
    pub fn new(what: &str) -> TestNs {
        let name = format!("ndtest-{what}-{}", std::process::id());
        let _ = netns::delete(&name); // a leftover of a killed run
        netns::ensure(&name).expect("ip netns add");
        TestNs(name)
    }
    pub fn ns(&self) -> Ns {
        Ns::named(&self.0)
    }
    pub fn ip(&self, args: &str) {
        run(&self.ns(), "ip", &args.split(' ').collect::<Vec<_>>()).unwrap();
    }
    /// A VXLAN device as netd makes them (no learning), up.
    pub fn vxlan(&self, dev: &str, vni: u32) {
        self.ip(&format!(
            "link add {dev} type vxlan id {vni} dstport 4789 nolearning"
        ));
        self.ip(&format!("link set {dev} up"));
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.0) {
            eprintln!("cleanup of namespace {}: {e:#}", self.0);
        }
    }
}
