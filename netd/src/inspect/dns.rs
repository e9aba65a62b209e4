//! `netd inspect dns [--container C] [NAME]`: the records a container sees (only its
//! networks'), the answer netd would give for NAME now (from the same index the resolver
//! uses), and whether the container's resolver redirect is in its kernel.

use super::render;
use super::{query::qenc, Ctx, View};
use crate::api::diag::DnsView;
use crate::kernel::cmd::{run, Ns};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsReport {
    pub desired_state: String,
    /// Records and answer (absent while the daemon is down).
    pub dns: Option<DnsView>,
    /// The container's `127.0.0.11:53` redirect (`table ip netd_dns`), when a container is
    /// given.
    pub resolver_redirect: Option<bool>,
    pub problems: Vec<String>,
}

pub fn view(ctx: &Ctx, container: Option<&str>, name: Option<&str>) -> Result<DnsReport> {
    let mut problems: Vec<String> = ctx.daemon_problem().into_iter().collect();
    let dns: Option<DnsView> = if ctx.daemon_up() {
        let mut q = Vec::new();
        if let Some(c) = container {
            q.push(format!("container={}", qenc(c)));
        }
        if let Some(n) = name {
            q.push(format!("name={}", qenc(n)));
        }
        let path = format!("/v1/dns?{}", q.join("&"));
        let (status, body) = crate::client::request(&ctx.socket, "GET", &path, None)?;
        if status != 200 {
            anyhow::bail!("GET {path}: HTTP {status}: {body}");
        }
        Some(serde_json::from_str(&body)?)
    } else {
        None
    };
    let netns: Option<PathBuf> = match (&dns, container) {
        (Some(d), _) => d.netns.as_ref().map(PathBuf::from),
        (None, Some(c)) if c.starts_with('/') => Some(PathBuf::from(c)),
        (None, Some(c)) => Some(PathBuf::from("/run/netns").join(c)),
        _ => None,
    };
    let resolver_redirect = netns
        .as_ref()
        .map(|ns| run(&Ns::path(ns), "nft", &["list", "table", "ip", "netd_dns"]).is_ok());
    if resolver_redirect == Some(false) {
        problems.push(format!(
            "no resolver redirect (nft table ip netd_dns) in {}: queries to 127.0.0.11 go nowhere",
            netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
    }
    if let Some(a) = dns.as_ref().and_then(|d| d.query.as_ref()) {
        if a.source == "nxdomain" {
            problems.push(format!("{} does not resolve here: {}", a.name, a.reason));
        }
    }
    Ok(DnsReport {
        desired_state: ctx.desired_state(),
        dns,
        resolver_redirect,
        problems,
    })
}

impl View for DnsReport {
    fn render(&self, out: &mut String) {
        let Some(d) = &self.dns else {
            let _ = writeln!(out, "dns: desired state {}", self.desired_state);
            if let Some(r) = self.resolver_redirect {
                let _ = writeln!(
                    out,
                    "resolver redirect in the container: {}",
                    if r { "present" } else { "MISSING" }
                );
            }
            return;
        };
        let _ = writeln!(
            out,
            "dns for {}  networks {}",
            d.container.as_deref().unwrap_or("this node (all networks)"),
            d.networks.join(", ")
        );
        if let Some(r) = self.resolver_redirect {
            let _ = writeln!(
                out,
                "  resolver redirect 127.0.0.11:53: {}",
                if r { "present" } else { "MISSING" }
            );
        }
        let rows: Vec<Vec<String>> = d
            .records
            .iter()
            .map(|r| {
                vec![
                    r.network.clone(),
                    r.name.clone(),
                    r.ips
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                    if r.round_robin { "rr" } else { "" }.into(),
                ]
            })
            .collect();
        render::table(
            out,
            "records",
            &["NETWORK", "NAME", "ANSWER", ""],
            &rows,
            "none",
        );
        if let Some(a) = &d.query {
            let ips: Vec<String> = a.ips.iter().map(|i| i.to_string()).collect();
            let _ = writeln!(
                out,
                "query {}: {} [{}]  ({})",
                a.name,
                a.source,
                ips.join(" "),
                a.reason
            );
        }
    }
    fn problems(&self) -> &[String] {
        &self.problems
    }
}
