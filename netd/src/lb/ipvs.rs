//! IPVS LB (what Docker programs): in every local container namespace, one IPVS virtual
//! service per frontend (VIP:port/proto) with the service's tasks as destinations, NAT
//! (masquerade) forwarding. IPVS sees the container's own connections at its LOCAL_OUT hook
//! (the VIP is on the container's subnet, so it is routable) and un-NATs the replies, so
//! replies and `getpeername` show the VIP.
//!
//! - Scheduler `mh` (Maglev hashing, `ip_vs_mh`) with `mh-fallback` and `mh-port`: the same
//!   destination set gives the same pick on every node; `rr` when the kernel has no `ip_vs_mh`
//!   (logged at start).
//! - Drained task: weight 0 (no new connections; IPVS keeps the existing ones on it).
//! - Removed task: destination deleted; `net.ipv4.vs.expire_nodest_conn = 1` in the namespace
//!   makes the next packet of a connection to it expire that connection, so a connected UDP
//!   socket's next datagram is scheduled afresh (to a live task) instead of vanishing.
//! - Idle TCP is never cut: IPVS's established-TCP timeout is set to the largest the kernel
//!   accepts ([`ipvs::MAX_TIMEOUT_SECS`], ~24.8 days). IPVS's flows are not in conntrack
//!   (`net.ipv4.vs.conntrack = 0`), so conntrack timeouts do not apply to them.
//! - ICMP echo to a VIP and the fast refusal of a frontend without an enabled backend are not
//!   IPVS's: see [`super::ipvs_steer`].
//!
//! Incremental: a changed frontend costs a few in-process netlink requests per container
//! namespace (one socket per namespace, opened once); an nft process only when the steer
//! sets change. After a restart (or a failed request) a namespace is adopted: its services
//! are dumped, compared with what is wanted and only the difference is changed; services and
//! destinations found there that are not wanted are kept for that one pass, so that a restart
//! never cuts flows to tasks gossip has not told the new netd about yet.

use super::ipvs_steer::{self, Steer};
use super::model::{Backend, Frontend, LbModel, Proto, Service};
use super::LoadBalancer;
use crate::kernel::cmd::{run, with_stdin, Ns};
use crate::kernel::ipvs::{self, Ipvs, ServiceKey};
use crate::kernel::netns;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Seconds: IPVS's defaults for FIN_WAIT and UDP (set explicitly, the TCP one is ours).
const TCP_FIN_TIMEOUT: u32 = 120;
const UDP_TIMEOUT: u32 = 300;

/// The scheduler every service gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Maglev hashing with fallback and source-port hashing.
    Mh,
    /// Round robin (the kernel has no `ip_vs_mh`).
    Rr,
}

impl Scheduler {
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Mh => "mh",
            Scheduler::Rr => "rr",
        }
    }
    fn flags(self) -> u32 {
        match self {
            Scheduler::Mh => ipvs::SVC_F_SCHED1 | ipvs::SVC_F_SCHED2,
            Scheduler::Rr => 0,
        }
    }
}

/// Whether the kernel has IPVS (after trying to load it): what `lb_backend = "ipvs"` needs.
pub fn probe() -> Result<()> {
    let _ = run(&Ns::Node, "modprobe", &["-q", "ip_vs"]);
    Ipvs::open().map(|_| ()).context(
        "the kernel has no IPVS (generic netlink family \"IPVS\" not found after modprobe ip_vs; \
         CONFIG_IP_VS)",
    )
}

/// A namespace's IPVS as this backend programmed it.
struct Client {
    ipvs: Ipvs,
    identity: Option<(u64, u64)>,
    services: BTreeMap<Frontend, Service>,
    /// None: the table is (re)loaded whole on the next pass.
    steer: Option<Steer>,
}

pub struct IpvsLb {
    scheduler: Scheduler,
    clients: BTreeMap<PathBuf, Client>,
}

impl IpvsLb {
    pub fn open() -> Result<IpvsLb> {
        probe()?;
        let _ = run(&Ns::Node, "modprobe", &["-q", "ip_vs_mh"]);
        let scheduler = if Path::new("/sys/module/ip_vs_mh").exists() {
            Scheduler::Mh
        } else {
            tracing::warn!("IPVS: no ip_vs_mh (Maglev) scheduler in this kernel; using rr (nodes may pick different tasks for one flow)");
            Scheduler::Rr
        };
        tracing::info!(scheduler = scheduler.name(), "IPVS load balancer");
        Ok(IpvsLb {
            scheduler,
            clients: BTreeMap::new(),
        })
    }

    pub fn scheduler(&self) -> Scheduler {
        self.scheduler
    }

    /// Brings namespace `netns` (a client on `networks`) to `want`: every frontend, or those in
    /// `only` when the namespace is known already.
    fn sync_client(
        &mut self,
        netns: &Path,
        networks: &BTreeSet<String>,
        want: &LbModel,
        only: Option<&BTreeSet<Frontend>>,
    ) -> Result<()> {
        let identity = netns::identity(netns);
        if self
            .clients
            .get(netns)
            .is_some_and(|c| c.identity != identity)
        {
            self.clients.remove(netns); // a new namespace under the same path
        }
        let adopting = !self.clients.contains_key(netns);
        if adopting {
            let c = adopt(netns, networks)?;
            self.clients.insert(netns.to_path_buf(), c);
        }
        let scheduler = self.scheduler;
        let c = self.clients.get_mut(netns).expect("inserted above");
        let fes: BTreeSet<Frontend> = match only {
            Some(changed) if !adopting => changed.clone(),
            _ => c
                .services
                .keys()
                .chain(want.services_for(networks).map(|(fe, _)| fe))
                .copied()
                .collect(),
        };
        for fe in fes {
            let mut target = want
                .services
                .get(&fe)
                .filter(|s| networks.contains(&s.network))
                .cloned();
            if adopting {
                target = keep_found(c.services.get(&fe), target);
            }
            if let Err(e) = apply_frontend(
                &mut c.ipvs,
                scheduler,
                &fe,
                c.services.get(&fe),
                target.as_ref(),
            ) {
                // Read the kernel back on the next pass rather than guess what it holds.
                self.clients.remove(netns);
                return Err(e.context(format!("in {}", netns.display())));
            }
            match target {
                Some(t) => c.services.insert(fe, t),
                None => c.services.remove(&fe),
            };
        }
        let steer = Steer::of(&c.services);
        if c.steer.as_ref() != Some(&steer) {
            let script = match &c.steer {
                Some(old) => ipvs_steer::delta(old, &steer),
                None => ipvs_steer::full_table(&steer),
            };
            c.steer = None;
            with_stdin(&Ns::path(netns), "nft", &["-f", "-"], &script)
                .with_context(|| format!("in {}", netns.display()))?;
            c.steer = Some(steer);
        }
        Ok(())
    }

    /// Removes what this backend programmed in a namespace that is no client any more.
    fn release(&mut self, netns: &Path) {
        if let Some(mut c) = self.clients.remove(netns) {
            if netns::identity(netns).is_some() && netns::identity(netns) == c.identity {
                for fe in c.services.keys() {
                    let _ = c.ipvs.del_service(&key(fe));
                }
                let _ = run(
                    &Ns::path(netns),
                    "nft",
                    &["delete", "table", "ip", ipvs_steer::TABLE],
                );
            }
        }
    }
}

fn key(fe: &Frontend) -> ServiceKey {
    ServiceKey {
        addr: fe.vip,
        port: fe.port,
        protocol: fe.proto.number(),
    }
}

/// A service's destinations with their weights: enabled 1, drained 0.
pub fn weights(svc: &Service) -> BTreeMap<Backend, u32> {
    let mut w: BTreeMap<Backend, u32> = svc.drained.iter().map(|b| (*b, 0)).collect();
    w.extend(svc.backends.iter().map(|b| (*b, 1)));
    w
}

/// One change to a namespace's IPVS.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    AddService,
    DelService,
    AddDest(Backend, u32),
    SetDest(Backend, u32),
    DelDest(Backend),
}

/// The changes that take a frontend from `old` to `new`, in a lossless order: the service
/// before its destinations, new and re-weighted destinations before removed ones.
pub fn ops(old: Option<&Service>, new: Option<&Service>) -> Vec<Op> {
    let Some(new) = new else {
        return if old.is_some() {
            vec![Op::DelService]
        } else {
            Vec::new()
        };
    };
    let mut out = Vec::new();
    let was = old.map(weights).unwrap_or_default();
    if old.is_none() {
        out.push(Op::AddService);
    }
    let is = weights(new);
    for (b, w) in &is {
        match was.get(b) {
            None => out.push(Op::AddDest(*b, *w)),
            Some(v) if v != w => out.push(Op::SetDest(*b, *w)),
            Some(_) => {}
        }
    }
    out.extend(
        was.keys()
            .filter(|b| !is.contains_key(b))
            .map(|b| Op::DelDest(*b)),
    );
    out
}

fn apply_frontend(
    ipvs: &mut Ipvs,
    scheduler: Scheduler,
    fe: &Frontend,
    old: Option<&Service>,
    new: Option<&Service>,
) -> Result<()> {
    let k = key(fe);
    for op in ops(old, new) {
        match op {
            Op::AddService => ipvs.new_service(&k, scheduler.name(), scheduler.flags())?,
            Op::DelService => ipvs.del_service(&k)?,
            Op::AddDest(b, w) => ipvs.new_dest(&k, b.ip, b.port, w)?,
            Op::SetDest(b, w) => ipvs.set_dest(&k, b.ip, b.port, w)?,
            Op::DelDest(b) => ipvs.del_dest(&k, b.ip, b.port)?,
        }
    }
    Ok(())
}

/// On adoption: what is wanted, plus the destinations (and services) found in the kernel that
/// are not (kept for this pass; the next one removes what is still not wanted).
fn keep_found(found: Option<&Service>, want: Option<Service>) -> Option<Service> {
    let Some(found) = found else { return want };
    let Some(mut want) = want else {
        return Some(found.clone());
    };
    let known: BTreeSet<Backend> = want.backends.union(&want.drained).copied().collect();
    want.backends
        .extend(found.backends.iter().filter(|b| !known.contains(b)));
    want.drained
        .extend(found.drained.iter().filter(|b| !known.contains(b)));
    Some(want)
}

/// The services found in a namespace, as a model (network: the client's first).
fn read_back(ipvs: &mut Ipvs, network: &str) -> Result<BTreeMap<Frontend, Service>> {
    let mut out = BTreeMap::new();
    for s in ipvs.services()? {
        let Some(proto) = Proto::from_number(s.key.protocol) else {
            continue;
        };
        let fe = Frontend {
            vip: s.key.addr,
            port: s.key.port,
            proto,
        };
        let mut svc = Service {
            network: network.to_string(),
            ..Service::default()
        };
        for d in ipvs.dests(&s.key)? {
            let b = Backend {
                ip: d.addr,
                port: d.port,
            };
            if d.weight > 0 {
                svc.backends.insert(b);
            } else {
                svc.drained.insert(b);
            }
        }
        out.insert(fe, svc);
    }
    Ok(out)
}

/// Opens IPVS in a client namespace (from a thread in it), sets the namespace's IPVS sysctl and
/// timeouts, and reads back what it holds.
fn adopt(netns: &Path, networks: &BTreeSet<String>) -> Result<Client> {
    let identity = netns::identity(netns);
    let network = networks.iter().next().cloned().unwrap_or_default();
    let (ipvs, services) = netns::in_netns(netns, || {
        let mut ipvs = Ipvs::open()?;
        // /proc/sys/net is the namespace of the thread that opens it: this one.
        std::fs::write("/proc/sys/net/ipv4/vs/expire_nodest_conn", "1")
            .context("net.ipv4.vs.expire_nodest_conn")?;
        // Rate estimators (a kernel thread per namespace since 6.2) cost CPU in every container
        // for numbers netd never reads; connection counts do not depend on them. Best effort:
        // older kernels have no switch.
        let _ = std::fs::write("/proc/sys/net/ipv4/vs/run_estimation", "0");
        ipvs.set_timeouts(ipvs::MAX_TIMEOUT_SECS, TCP_FIN_TIMEOUT, UDP_TIMEOUT)?;
        let found = read_back(&mut ipvs, &network)?;
        Ok((ipvs, found))
    })
    .with_context(|| format!("IPVS in {}", netns.display()))?;
    if !services.is_empty() {
        tracing::info!(netns = %netns.display(), services = services.len(), "adopting IPVS services found in the kernel");
    }
    Ok(Client {
        ipvs,
        identity,
        services,
        steer: None,
    })
}

impl LoadBalancer for IpvsLb {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn apply(&mut self, want: &LbModel) -> Result<()> {
        let mut first_err = None;
        for (netns, networks) in &want.clients {
            if let Err(e) = self.sync_client(netns, networks, want, None) {
                first_err.get_or_insert(e);
            }
        }
        let gone: Vec<PathBuf> = self
            .clients
            .keys()
            .filter(|n| !want.clients.contains_key(*n))
            .cloned()
            .collect();
        for netns in gone {
            self.release(&netns);
        }
        first_err.map_or(Ok(()), Err)
    }

    fn apply_changed(&mut self, want: &LbModel, changed: &BTreeSet<Frontend>) -> Result<()> {
        let mut first_err = None;
        for (netns, networks) in &want.clients {
            if let Err(e) = self.sync_client(netns, networks, want, Some(changed)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn current(&self) -> LbModel {
        let mut m = LbModel::default();
        for c in self.clients.values() {
            for (fe, s) in &c.services {
                m.services.insert(*fe, s.clone());
            }
        }
        for (ns, c) in &self.clients {
            let nets: BTreeSet<String> = c.services.values().map(|s| s.network.clone()).collect();
            m.clients.insert(ns.clone(), nets);
        }
        m
    }

    /// Dumps every client namespace's IPVS and compares it with what was programmed; what
    /// differs is taken as the kernel's state, so the next apply puts back what is wanted.
    fn verify_kernel(&mut self) -> Result<(Vec<String>, bool)> {
        let mut drift = Vec::new();
        for (ns, c) in self.clients.iter_mut() {
            let network = c
                .services
                .values()
                .next()
                .map(|s| s.network.clone())
                .unwrap_or_default();
            let mut found = read_back(&mut c.ipvs, &network)
                .with_context(|| format!("reading IPVS in {}", ns.display()))?;
            for (fe, svc) in found.iter_mut() {
                if let Some(mine) = c.services.get(fe) {
                    svc.network = mine.network.clone();
                }
            }
            if found == c.services {
                continue;
            }
            let fes: BTreeSet<Frontend> = found.keys().chain(c.services.keys()).copied().collect();
            for fe in fes {
                let (k, p) = (found.get(&fe), c.services.get(&fe));
                if k.map(weights) != p.map(weights) {
                    drift.push(format!(
                        "ipvs {}:{}/{} in {}: kernel {:?}, programmed {:?}",
                        fe.vip,
                        fe.port,
                        fe.proto.name(),
                        ns.display(),
                        k.map(weights),
                        p.map(weights)
                    ));
                }
            }
            c.services = found;
        }
        Ok((drift, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn b(i: u8) -> Backend {
        Backend {
            ip: Ipv4Addr::new(10, 1, 0, i),
            port: 80,
        }
    }

    fn svc(up: &[u8], drained: &[u8]) -> Service {
        Service {
            network: "web".into(),
            backends: up.iter().map(|i| b(*i)).collect(),
            drained: drained.iter().map(|i| b(*i)).collect(),
        }
    }

    #[test]
    fn new_service_then_its_destinations() {
        assert_eq!(
            ops(None, Some(&svc(&[2], &[3]))),
            vec![Op::AddService, Op::AddDest(b(2), 1), Op::AddDest(b(3), 0)]
        );
        assert_eq!(ops(Some(&svc(&[2], &[])), None), vec![Op::DelService]);
        assert!(ops(None, None).is_empty());
    }

    #[test]
    fn drain_is_weight_zero_and_removal_comes_last() {
        let old = svc(&[2, 3, 4], &[]);
        // 2 drained, 4 removed, 5 added.
        let new = svc(&[3, 5], &[2]);
        assert_eq!(
            ops(Some(&old), Some(&new)),
            vec![
                Op::SetDest(b(2), 0),
                Op::AddDest(b(5), 1),
                Op::DelDest(b(4))
            ]
        );
        assert!(ops(Some(&new), Some(&new)).is_empty());
    }

    #[test]
    fn adoption_keeps_what_it_found_for_one_pass() {
        let found = svc(&[2, 9], &[8]);
        let kept = keep_found(Some(&found), Some(svc(&[2], &[]))).unwrap();
        assert_eq!(kept, svc(&[2, 9], &[8]));
        // A wanted drain wins over the weight found.
        let kept = keep_found(Some(&found), Some(svc(&[], &[9]))).unwrap();
        assert_eq!(kept, svc(&[2], &[9, 8]));
        assert_eq!(keep_found(Some(&found), None), Some(found.clone()));
        assert_eq!(keep_found(None, None), None);
    }
}
