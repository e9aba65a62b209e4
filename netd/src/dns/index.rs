//! The names a container can resolve, built from the endpoint tables (local desired state plus
//! the gossiped view) each time they change. Lookups are scoped to the networks the asking
//! container is attached to: network isolation holds in DNS too.

use crate::api::types::{EndpointMode, ServiceSpec};
use crate::gossip::ClusterView;
use crate::state::DesiredState;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// One endpoint as DNS sees it, whichever node it lives on.
#[derive(Debug, Clone)]
pub struct DnsEndpoint<'a> {
    pub network: &'a str,
    pub ip: Ipv4Addr,
    pub name: &'a str,
    pub aliases: &'a [String],
    pub service: Option<&'a ServiceSpec>,
    pub disabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub ips: Vec<Ipv4Addr>,
    /// DNSRR: the order is shuffled on every query.
    pub shuffle: bool,
}

#[derive(Debug, Default)]
pub struct NetRecords {
    pub internal: bool,
    names: HashMap<String, Answer>,
    ptr: HashMap<Ipv4Addr, String>,
}

#[derive(Debug, Default)]
pub struct DnsIndex {
    nets: HashMap<String, NetRecords>,
    /// Container namespace → networks it is attached to.
    attachments: HashMap<PathBuf, Vec<String>>,
}

fn add(names: &mut HashMap<String, Answer>, name: &str, ip: Ipv4Addr, shuffle: bool) {
    let a = names.entry(name.to_ascii_lowercase()).or_default();
    if !a.ips.contains(&ip) {
        a.ips.push(ip);
    }
    a.shuffle |= shuffle;
}

/// One service on one network: its spec, enabled task IPs, and the aliases of its tasks.
type ServiceTasks<'a> = (&'a ServiceSpec, Vec<Ipv4Addr>, Vec<&'a str>);

impl DnsIndex {
    pub fn build(desired: &DesiredState, view: &ClusterView) -> DnsIndex {
        let mut all: Vec<DnsEndpoint> = desired
            .endpoints
            .values()
            .map(|e| DnsEndpoint {
                network: &e.spec.network,
                ip: e.ip,
                name: &e.spec.name,
                aliases: &e.spec.aliases,
                service: e.spec.service.as_ref(),
                disabled: e.service_disabled,
            })
            .collect();
        all.extend(view.endpoints.iter().map(|e| DnsEndpoint {
            network: &e.network,
            ip: e.ip,
            name: &e.name,
            aliases: &e.aliases,
            service: e.service.as_deref(),
            disabled: e.service_disabled,
        }));
        let mut idx = DnsIndex::from_endpoints(&all, |n| {
            desired.networks.get(n).is_some_and(|s| s.internal)
        });
        for e in desired.endpoints.values() {
            idx.attachments
                .entry(e.spec.netns.clone())
                .or_default()
                .push(e.spec.network.clone());
        }
        idx
    }

    pub fn from_endpoints(all: &[DnsEndpoint], internal: impl Fn(&str) -> bool) -> DnsIndex {
        let mut idx = DnsIndex::default();
        // network → service name → (spec, enabled task IPs, aliases)
        let mut services: BTreeMap<(&str, String), ServiceTasks> = BTreeMap::new();
        for e in all {
            let net = idx
                .nets
                .entry(e.network.to_string())
                .or_insert_with(|| NetRecords {
                    internal: internal(e.network),
                    ..Default::default()
                });
            add(&mut net.names, e.name, e.ip, false);
            net.ptr.insert(
                e.ip,
                format!("{}.{}.", e.name.to_ascii_lowercase(), e.network),
            );
            match e.service {
                None => {
                    for a in e.aliases {
                        add(&mut net.names, a, e.ip, false);
                    }
                }
                Some(svc) => {
                    let s = services
                        .entry((e.network, svc.name.to_ascii_lowercase()))
                        .or_insert_with(|| (svc, Vec::new(), Vec::new()));
                    // Aliases of a task alias its service (Docker's network-scoped aliases).
                    s.2.extend(e.aliases.iter().map(String::as_str));
                    if !e.disabled {
                        s.1.push(e.ip);
                    }
                }
            }
        }
        for ((network, name), (svc, tasks, aliases)) in services {
            let net = idx.nets.get_mut(network).expect("network seen above");
            let mut tasks = tasks;
            tasks.sort();
            tasks.dedup();
            net.names.insert(
                format!("tasks.{name}"),
                Answer {
                    ips: tasks.clone(),
                    shuffle: true,
                },
            );
            let answer = match (svc.endpoint_mode, svc.vip) {
                (EndpointMode::Vip, Some(vip)) => {
                    net.ptr.insert(vip, format!("{name}.{network}."));
                    Answer {
                        ips: vec![vip],
                        shuffle: false,
                    }
                }
                _ => Answer {
                    ips: tasks,
                    shuffle: true,
                },
            };
            for n in std::iter::once(name.as_str()).chain(aliases) {
                net.names.insert(n.to_ascii_lowercase(), answer.clone());
            }
        }
        idx
    }

    /// Records that the container in `netns` is attached to `network`.
    pub fn with_attachment(mut self, netns: &std::path::Path, network: &str) -> DnsIndex {
        self.attachments
            .entry(netns.to_path_buf())
            .or_default()
            .push(network.to_string());
        self
    }

    /// Networks the container in `netns` is attached to.
    pub fn networks_of(&self, netns: &std::path::Path) -> &[String] {
        self.attachments
            .get(netns)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether queries from these networks may be forwarded: not when all are `internal`.
    pub fn may_forward(&self, nets: &[String]) -> bool {
        nets.iter()
            .any(|n| self.nets.get(n).is_none_or(|r| !r.internal))
    }

    /// `name` (any case, with or without the trailing dot) as seen from `nets`.
    pub fn lookup(&self, nets: &[String], name: &str) -> Option<Answer> {
        let q = name.trim_end_matches('.').to_ascii_lowercase();
        // `<name>.<network>`: restricted to that network (if the asker is on it).
        if let Some((head, net)) = q.rsplit_once('.') {
            if nets.iter().any(|n| n.eq_ignore_ascii_case(net)) {
                if let Some(a) = self.nets.get(net).and_then(|r| r.names.get(head)) {
                    return Some(a.clone());
                }
            }
        }
        let mut found: Option<Answer> = None;
        for n in nets {
            if let Some(a) = self.nets.get(n).and_then(|r| r.names.get(&q)) {
                let f = found.get_or_insert_with(Answer::default);
                for ip in &a.ips {
                    if !f.ips.contains(ip) {
                        f.ips.push(*ip);
                    }
                }
                f.shuffle |= a.shuffle;
            }
        }
        found
    }

    /// Every name of `nets` with its answer, sorted by network and name (for `netd inspect`).
    pub fn records(&self, nets: &[String]) -> Vec<(String, String, Answer)> {
        let mut v: Vec<(String, String, Answer)> = nets
            .iter()
            .filter_map(|n| Some((n, self.nets.get(n)?)))
            .flat_map(|(n, r)| {
                r.names
                    .iter()
                    .map(move |(name, a)| (n.clone(), name.clone(), a.clone()))
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// Names for a reverse lookup of `ip`, from the asker's networks.
    pub fn reverse(&self, nets: &[String], ip: Ipv4Addr) -> Vec<String> {
        nets.iter()
            .filter_map(|n| self.nets.get(n)?.ptr.get(&ip).cloned())
            .collect()
    }
}

/// `d.c.b.a.in-addr.arpa` → `a.b.c.d`.
pub fn parse_reverse(name: &str) -> Option<Ipv4Addr> {
    let q = name.trim_end_matches('.').to_ascii_lowercase();
    let head = q.strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = head
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, mode: EndpointMode, vip: Option<&str>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            id: format!("id-{name}"),
            vip: vip.map(|v| v.parse().unwrap()),
            ports: vec![],
            endpoint_mode: mode,
        }
    }

    fn ep<'a>(
        network: &'a str,
        ip: &str,
        name: &'a str,
        service: Option<&'a ServiceSpec>,
        disabled: bool,
    ) -> DnsEndpoint<'a> {
        DnsEndpoint {
            network,
            ip: ip.parse().unwrap(),
            name,
            aliases: &[],
            service,
            disabled,
        }
    }

    fn ips(a: Option<Answer>) -> Vec<String> {
        let mut v: Vec<String> = a
            .map(|a| a.ips)
            .unwrap_or_default()
            .iter()
            .map(|i| i.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn names_services_tasks_and_scoping() {
        let web = svc("web", EndpointMode::Vip, Some("10.0.0.100"));
        let rr = svc("rr", EndpointMode::Dnsrr, None);
        let aliases = vec!["db-alias".to_string()];
        let mut db = ep("a", "10.0.0.9", "db", None, false);
        db.aliases = &aliases;
        let all = vec![
            ep("a", "10.0.0.2", "web.1", Some(&web), false),
            ep("a", "10.0.0.3", "web.2", Some(&web), false),
            ep("a", "10.0.0.4", "web.3", Some(&web), true), // drained
            ep("a", "10.0.0.5", "rr.1", Some(&rr), false),
            ep("a", "10.0.0.6", "rr.2", Some(&rr), false),
            db,
            ep("b", "10.1.0.2", "other", None, false),
        ];
        let idx = DnsIndex::from_endpoints(&all, |_| false);
        let a = vec!["a".to_string()];
        assert_eq!(ips(idx.lookup(&a, "web")), ["10.0.0.100"]);
        assert_eq!(
            ips(idx.lookup(&a, "WEB.")),
            ["10.0.0.100"],
            "case-insensitive, trailing dot"
        );
        assert_eq!(
            ips(idx.lookup(&a, "tasks.web")),
            ["10.0.0.2", "10.0.0.3"],
            "drained task gone"
        );
        assert_eq!(ips(idx.lookup(&a, "rr")), ["10.0.0.5", "10.0.0.6"]);
        assert!(idx.lookup(&a, "rr").unwrap().shuffle);
        assert_eq!(ips(idx.lookup(&a, "db-alias")), ["10.0.0.9"]);
        assert_eq!(
            ips(idx.lookup(&a, "web.1.a")),
            ["10.0.0.2"],
            "<name>.<network>"
        );
        assert!(
            idx.lookup(&a, "other").is_none(),
            "isolation: not on network b"
        );
        assert!(
            idx.lookup(&a, "other.b").is_none(),
            "isolation: not on network b"
        );
        assert_eq!(idx.reverse(&a, "10.0.0.100".parse().unwrap()), ["web.a."]);
        assert_eq!(idx.reverse(&a, "10.0.0.2".parse().unwrap()), ["web.1.a."]);
        assert!(idx.reverse(&a, "10.1.0.2".parse().unwrap()).is_empty());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            parse_reverse("4.3.2.10.in-addr.arpa."),
            Some("10.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_reverse("3.2.10.in-addr.arpa."), None);
        assert_eq!(parse_reverse("x.3.2.10.in-addr.arpa"), None);
    }
}
