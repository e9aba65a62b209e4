//! Read-only views of the running node for diagnostics (`GET /v1/services`, `GET /v1/dns`):
//! built from the desired state and the cluster view with the same code the data path uses
//! (the LB model, the DNS index), so they say what netd wants, not a re-derivation.

use crate::api::diag::*;
use crate::api::error::ApiError;
use crate::api::types::ServiceSpec;
use crate::daemon::Daemon;
use crate::dns::index::DnsIndex;
use crate::lb::model::LbModel;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One task of a service, wherever it runs.
struct Task<'a> {
    id: &'a str,
    node: &'a str,
    local: bool,
    network: &'a str,
    name: &'a str,
    ip: std::net::Ipv4Addr,
    mac: &'a str,
    disabled: bool,
    svc: &'a ServiceSpec,
}

impl Daemon {
    /// Every service with a task on a network this node knows, sorted by name.
    pub fn service_views(&self) -> Vec<ServiceView> {
        let desired = self.shared.desired.read().expect("desired lock").clone();
        let view = self.shared.view.read().expect("view lock").clone();
        let me = self.shared.cfg.node_name.as_str();
        let mut tasks: Vec<Task> = Vec::new();
        for (id, e) in &desired.endpoints {
            if let Some(svc) = &e.spec.service {
                tasks.push(Task {
                    id,
                    node: me,
                    local: true,
                    network: &e.spec.network,
                    name: &e.spec.name,
                    ip: e.ip,
                    mac: &e.mac,
                    disabled: e.service_disabled,
                    svc,
                });
            }
        }
        for e in &view.endpoints {
            if let Some(svc) = &e.service {
                tasks.push(Task {
                    id: &e.id,
                    node: &e.node,
                    local: false,
                    network: &e.network,
                    name: &e.name,
                    ip: e.ip,
                    mac: &e.mac,
                    disabled: e.service_disabled,
                    svc,
                });
            }
        }
        let model = LbModel::build(&desired, &view);
        let mut by_name: BTreeMap<String, Vec<&Task>> = BTreeMap::new();
        for t in &tasks {
            by_name
                .entry(t.svc.name.to_ascii_lowercase())
                .or_default()
                .push(t);
        }
        by_name
            .into_values()
            .map(|ts| service_view(&ts, &model))
            .collect()
    }

    /// What the container (endpoint id or name, or its netns path or name) would resolve;
    /// without one, the names of every network of this node.
    pub fn dns_view(
        &self,
        container: Option<&str>,
        name: Option<&str>,
    ) -> Result<DnsView, ApiError> {
        let desired = self.shared.desired.read().expect("desired lock").clone();
        let idx = self.shared.dns.shared.index();
        let netns = match container {
            None => None,
            Some(c) => Some(
                desired
                    .endpoints
                    .iter()
                    .find(|(id, e)| {
                        id.as_str() == c
                            || e.spec.name == c
                            || e.spec.netns == Path::new(c)
                            || e.spec.netns.file_name().is_some_and(|f| f == c)
                    })
                    .map(|(_, e)| e.spec.netns.clone())
                    .ok_or_else(|| {
                        ApiError::not_found(
                            Some("container"),
                            format!(
                                "container: no local endpoint matches {c:?} (id, name or netns)"
                            ),
                        )
                    })?,
            ),
        };
        let networks: Vec<String> = match &netns {
            Some(ns) => {
                let mut v = idx.networks_of(ns).to_vec();
                v.sort();
                v.dedup();
                v
            }
            None => desired.networks.keys().cloned().collect(),
        };
        let records = idx
            .records(&networks)
            .into_iter()
            .map(|(network, name, a)| DnsRecord {
                network,
                name,
                ips: a.ips,
                round_robin: a.shuffle,
            })
            .collect();
        let query = name.map(|n| answer(&idx, &networks, n));
        Ok(DnsView {
            container: container.map(str::to_string),
            netns: netns.map(|p| p.display().to_string()),
            networks,
            records,
            query,
        })
    }
}

fn answer(idx: &DnsIndex, networks: &[String], name: &str) -> DnsAnswerView {
    match idx.lookup(networks, name) {
        Some(a) => DnsAnswerView {
            name: name.to_string(),
            source: "netd".into(),
            reason: if a.ips.is_empty() {
                "known name without an enabled task: empty answer (NOERROR)".into()
            } else {
                format!(
                    "answered from the endpoint tables of {}",
                    networks.join(", ")
                )
            },
            ips: a.ips,
            round_robin: a.shuffle,
        },
        None if idx.may_forward(networks) && !networks.is_empty() => DnsAnswerView {
            name: name.to_string(),
            source: "forwarded".into(),
            ips: vec![],
            round_robin: false,
            reason: format!(
                "not a name on {}: forwarded to the upstream resolvers",
                networks.join(", ")
            ),
        },
        None => DnsAnswerView {
            name: name.to_string(),
            source: "nxdomain".into(),
            ips: vec![],
            round_robin: false,
            reason: if networks.is_empty() {
                "the container is attached to no network of this node".into()
            } else {
                format!(
                    "not a name on {} and only internal networks: not forwarded",
                    networks.join(", ")
                )
            },
        },
    }
}

fn service_view(ts: &[&Task], model: &LbModel) -> ServiceView {
    let first = ts[0].svc;
    let mut vips: BTreeMap<&str, Option<std::net::Ipv4Addr>> = BTreeMap::new();
    for t in ts {
        let v = vips.entry(t.network).or_default();
        if v.is_none() && t.svc.endpoint_mode == crate::api::types::EndpointMode::Vip {
            *v = t.svc.vip;
        }
    }
    let vip_set: BTreeSet<std::net::Ipv4Addr> = vips.values().flatten().copied().collect();
    let ep = |b: &crate::lb::model::Backend| format!("{}:{}", b.ip, b.port);
    let frontends = model
        .services
        .iter()
        .filter(|(fe, _)| vip_set.contains(&fe.vip))
        .map(|(fe, s)| FrontendView {
            frontend: format!("{}:{}/{}", fe.vip, fe.port, fe.proto.name()),
            vip: fe.vip,
            port: fe.port,
            protocol: fe.proto.name().into(),
            network: s.network.clone(),
            backends: s.backends.iter().map(ep).collect(),
            draining: s.drained.iter().map(ep).collect(),
        })
        .collect();
    let mut tasks: Vec<TaskView> = ts
        .iter()
        .map(|t| TaskView {
            endpoint_id: t.id.to_string(),
            node: t.node.to_string(),
            local: t.local,
            network: t.network.to_string(),
            name: t.name.to_string(),
            ip: t.ip,
            mac: t.mac.to_string(),
            state: if t.disabled { "draining" } else { "active" }.into(),
        })
        .collect();
    tasks.sort_by(|a, b| (&a.network, a.ip).cmp(&(&b.network, b.ip)));
    ServiceView {
        name: first.name.clone(),
        id: first.id.clone(),
        endpoint_mode: first.endpoint_mode,
        vips: vips
            .into_iter()
            .map(|(network, vip)| ServiceVip {
                network: network.to_string(),
                vip,
            })
            .collect(),
        ports: first.ports.clone(),
        tasks,
        frontends,
    }
}
