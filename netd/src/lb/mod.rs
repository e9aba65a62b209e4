//! Service VIP load balancing: connections from containers to `VIP:port` of a `vip`-mode
//! service are spread over the service's enabled tasks on all nodes.
//!
//! The data plane is behind [`LoadBalancer`]; three implementations:
//! - [`ebpf::EbpfLb`]: socket-level LB with cgroup `connect4`/`sendmsg4`/`recvmsg4`/
//!   `getpeername4` programs (C, in `ebpf/`) attached to a cgroup the containers run in. The
//!   destination is rewritten once, at connect/send time (no per-packet NAT for TCP); UDP
//!   replies and `getpeername` show the VIP. Maps and links are pinned per node under bpffs,
//!   so they survive a netd restart and are adopted by the next netd.
//! - [`nft::NftLb`]: DNAT with `numgen random` maps in every local container's namespace (like
//!   kube-proxy's nftables mode): for kernels without the BPF features, and the baseline.
//! - [`ipvs::IpvsLb`]: IPVS virtual services in every local container's namespace (what Docker
//!   programs), over generic netlink; [`ipvs_steer`] adds what IPVS does not do (ICMP echo,
//!   fast refusal).

#[cfg(test)]
mod bench;
pub mod dump;
pub mod ebpf;
pub mod hash;
pub mod ipvs;
pub mod ipvs_steer;
pub mod maglev;
pub mod maps;
pub mod model;
pub mod nft;

use crate::config::Config;
use anyhow::{bail, Context, Result};
use model::LbModel;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `lb_backend` in netd.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbBackendKind {
    Ebpf,
    Nftables,
    Ipvs,
    None,
}

/// A data plane for service VIPs.
pub trait LoadBalancer: Send {
    fn name(&self) -> &'static str;
    /// Brings the data plane to `want`, changing only what differs from what it programmed
    /// (adding or removing a backend touches that service only).
    fn apply(&mut self, want: &LbModel) -> Result<()>;
    /// The same, when `want` differs from the model of the last `apply` only in the `changed`
    /// frontends: a backend may look at those only.
    fn apply_changed(&mut self, want: &LbModel, changed: &BTreeSet<model::Frontend>) -> Result<()> {
        let _ = changed;
        self.apply(want)
    }
    /// What is programmed now.
    fn current(&self) -> LbModel;
    /// Compares what this backend programmed with what the kernel holds now and marks what
    /// differs for reprogramming by the next `apply` (drift repair); returns what differed, and
    /// whether the comparison is complete. A backend may compare a slice per call, so that an
    /// apply between calls does not wait for the whole read-back; the caller calls again until
    /// it is complete.
    fn verify_kernel(&mut self) -> Result<(Vec<String>, bool)> {
        Ok((Vec::new(), true))
    }
    /// The host ends of local containers' veths (sandbox netns path, ifname): backends that
    /// answer ARP/ICMP echo for VIPs per device attach there.
    fn attach_devices(&mut self, _devices: &BTreeSet<(PathBuf, String)>) -> Result<()> {
        Ok(())
    }
}

/// The backend in effect: the configured one, else `ebpf` when a cgroup is configured, else
/// none.
pub fn backend_kind(cfg: &Config) -> LbBackendKind {
    match cfg.lb_backend {
        Some(k) => k,
        None if cfg.lb_cgroup.is_some() => LbBackendKind::Ebpf,
        None => LbBackendKind::None,
    }
}

fn expand(p: &Path, cfg: &Config) -> PathBuf {
    PathBuf::from(p.to_string_lossy().replace("{node}", &cfg.node_name))
}

/// The cgroup (v2) the eBPF programs attach to, `{node}` replaced by the node name.
pub fn cgroup_path(cfg: &Config) -> Option<PathBuf> {
    cfg.lb_cgroup.as_deref().map(|p| expand(p, cfg))
}

/// The per-node bpffs directory for pinned maps and links.
pub fn pin_dir(cfg: &Config) -> PathBuf {
    cfg.lb_pin_dir
        .as_deref()
        .map(|p| expand(p, cfg))
        .unwrap_or_else(|| PathBuf::from(format!("/sys/fs/bpf/netd-{}", cfg.node_name)))
}

/// Config checks (no side effects).
pub fn validate_config(cfg: &Config) -> Result<()> {
    if backend_kind(cfg) == LbBackendKind::Ebpf {
        let Some(cg) = cgroup_path(cfg) else {
            bail!("lb_cgroup: required with lb_backend = \"ebpf\"");
        };
        if !cg.is_absolute() || cg.components().count() < 3 {
            bail!("lb_cgroup: {} must be an absolute path below a cgroup v2 mount (never the root cgroup)", cg.display());
        }
    }
    if !(64..=maps::MAX_SERVICES).contains(&cfg.lb_max_services) {
        bail!(
            "lb_max_services: {} is outside 64-{}",
            cfg.lb_max_services,
            maps::MAX_SERVICES
        );
    }
    if !pin_dir(cfg).is_absolute() {
        bail!("lb_pin_dir: must be an absolute path");
    }
    Ok(())
}

/// The name of a backend kind, as in netd.toml.
pub fn kind_name(kind: LbBackendKind) -> &'static str {
    match kind {
        LbBackendKind::Ebpf => "ebpf",
        LbBackendKind::Nftables => "nftables",
        LbBackendKind::Ipvs => "ipvs",
        LbBackendKind::None => "none",
    }
}

/// Start-up check of what the configured backend needs from the kernel that cannot wait for
/// the first reconcile pass: netd refuses to start with `lb_backend = "ipvs"` on a kernel
/// without IPVS, or with `lb_backend = "ebpf"` on one without TCX (before 6.6), rather than
/// run without the VIPs (or their ARP/ICMP answers) it was asked for.
pub fn preflight(cfg: &Config) -> Result<()> {
    match backend_kind(cfg) {
        LbBackendKind::Ipvs => ipvs::probe().context("lb_backend = \"ipvs\"")?,
        LbBackendKind::Ebpf => ebpf::probe_tcx().context(ebpf_refusal(cfg.lb_backend.is_none()))?,
        LbBackendKind::Nftables | LbBackendKind::None => {}
    }
    Ok(())
}

/// Why netd does not start with the eBPF backend on a kernel without TCX, and what to do.
fn ebpf_refusal(by_default: bool) -> String {
    format!(
        "lb_backend = \"ebpf\"{} cannot run on this kernel: it needs TCX (Linux 6.6 or later); \
         set lb_backend = \"nftables\" or \"ipvs\" in the config instead",
        if by_default {
            " (the default when lb_cgroup is set)"
        } else {
            ""
        }
    )
}

/// Creates the configured backend (None for `none`).
pub fn open(cfg: &Config) -> Result<Option<Box<dyn LoadBalancer>>> {
    Ok(match backend_kind(cfg) {
        LbBackendKind::None => None,
        LbBackendKind::Nftables => Some(Box::new(nft::NftLb::new())),
        LbBackendKind::Ipvs => Some(Box::new(ipvs::IpvsLb::open()?)),
        LbBackendKind::Ebpf => {
            let cg = cgroup_path(cfg).expect("validated");
            Some(Box::new(ebpf::EbpfLb::open(
                &cg,
                &pin_dir(cfg),
                cfg.lb_max_services,
            )?))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        toml::from_str(&format!(
            "node_name = \"n1\"\nadvertise_addr = \"10.9.0.1\"\ngossip_keys = [\"secret-key\"]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn backend_defaults() {
        let c = cfg("");
        c.validate().unwrap();
        assert_eq!(backend_kind(&c), LbBackendKind::None);
        assert_eq!(pin_dir(&c), PathBuf::from("/sys/fs/bpf/netd-n1"));
        let c = cfg("lb_cgroup = \"/sys/fs/cgroup/unified/netd-{node}\"\n");
        c.validate().unwrap();
        assert_eq!(backend_kind(&c), LbBackendKind::Ebpf);
        assert_eq!(
            cgroup_path(&c),
            Some(PathBuf::from("/sys/fs/cgroup/unified/netd-n1"))
        );
        assert_eq!(
            backend_kind(&cfg("lb_backend = \"nftables\"\n")),
            LbBackendKind::Nftables
        );
        let c = cfg("lb_backend = \"ipvs\"\n");
        c.validate().unwrap();
        assert_eq!(backend_kind(&c), LbBackendKind::Ipvs);
        assert_eq!(kind_name(LbBackendKind::Ipvs), "ipvs");
    }

    #[test]
    fn ebpf_needs_a_cgroup_below_the_root() {
        let e = cfg("lb_backend = \"ebpf\"\n").validate().unwrap_err();
        assert!(e.to_string().contains("lb_cgroup"), "{e}");
        let e = cfg("lb_cgroup = \"/sys\"\n").validate().unwrap_err();
        assert!(e.to_string().contains("lb_cgroup"), "{e}");
        assert!(toml::from_str::<Config>("lb_backend = \"lvs\"\n").is_err());
    }

    #[test]
    fn map_capacity_is_bounded() {
        assert_eq!(cfg("").lb_max_services, 8192);
        for bad in [0, 63, maps::MAX_SERVICES + 1] {
            let e = cfg(&format!("lb_max_services = {bad}\n"))
                .validate()
                .unwrap_err();
            assert!(e.to_string().contains("lb_max_services"), "{e}");
        }
        cfg("lb_max_services = 64\n").validate().unwrap();
    }
}
