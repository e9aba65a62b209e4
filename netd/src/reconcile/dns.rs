//! Resolver sockets for every container namespace with an endpoint on this node.

use super::Shared;
use crate::kernel;
use crate::state::DesiredState;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::PathBuf;

pub fn reconcile(shared: &Shared, desired: &DesiredState) -> Result<()> {
    let want: BTreeSet<PathBuf> = desired
        .containers()
        .map(|(_, e)| e.spec.netns.clone())
        .collect();
    let have = shared.dns.served();
    let mut errors = Vec::new();
    for ns in want.difference(&have) {
        match kernel::dns::listen_in(ns).and_then(|(udp, tcp)| shared.dns.serve(ns, udp, tcp)) {
            Ok(()) => tracing::debug!(netns = %ns.display(), "serving DNS"),
            Err(e) => errors.push(format!("DNS for {}: {e:#}", ns.display())),
        }
    }
    for ns in have.difference(&want) {
        shared.dns.stop(ns);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}
