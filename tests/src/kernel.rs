//! Reading kernel state (links, addresses, FDB, neighbours) through iproute2's JSON output:
//! the tests judge netd by what the kernel actually has, not only by what the API says.

use crate::cmd::run;
use anyhow::{bail, Result};
use serde_json::Value;
use std::collections::BTreeMap;

fn json_of(args: &[&str]) -> Result<Value> {
    let program = args[0];
    let out = run(program, &args[1..])?;
    if !out.success {
        bail!("`{}`: {}", out.cmdline, out.stderr.trim());
    }
    if out.stdout.trim().is_empty() {
        return Ok(Value::Array(vec![]));
    }
    Ok(serde_json::from_str(&out.stdout)?)
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => vec![],
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Interface name -> ifindex for every link in the namespace.
pub fn links(ns: &str) -> Result<BTreeMap<String, u64>> {
    Ok(array(json_of(&["ip", "-n", ns, "-j", "link", "show"])?)
        .iter()
        .filter_map(|l| Some((str_field(l, "ifname")?, l.get("ifindex")?.as_u64()?)))
        .collect())
}

/// One link's full JSON description (`ip -d -j link show dev`), if it exists.
pub fn link_details(ns: &str, dev: &str) -> Option<Value> {
    json_of(&["ip", "-n", ns, "-d", "-j", "link", "show", "dev", dev])
        .ok()
        .map(array)
        .and_then(|a| a.into_iter().next())
}

/// IPv4 addresses (`a.b.c.d/len`) on `dev`.
pub fn ipv4_addrs(ns: &str, dev: &str) -> Result<Vec<String>> {
    let v = json_of(&["ip", "-n", ns, "-4", "-j", "addr", "show", "dev", dev])?;
    Ok(array(v)
        .iter()
        .flat_map(|l| array(l.get("addr_info").cloned().unwrap_or(Value::Null)))
        .filter_map(|a| {
            Some(format!(
                "{}/{}",
                str_field(&a, "local")?,
                a.get("prefixlen")?.as_u64()?
            ))
        })
        .collect())
}

/// IPv4 routes of the main table, as iproute2 JSON objects.
pub fn routes(ns: &str) -> Result<Vec<Value>> {
    Ok(array(json_of(&[
        "ip", "-n", ns, "-4", "-j", "route", "show",
    ])?))
}

/// A bridge forwarding entry on a VXLAN device: `dst` is the remote VTEP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: String,
    pub dst: Option<String>,
    pub state: Option<String>,
}

pub fn fdb(ns: &str, dev: &str) -> Result<Vec<FdbEntry>> {
    let v = json_of(&["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev])?;
    Ok(array(v)
        .iter()
        .filter_map(|e| {
            Some(FdbEntry {
                mac: str_field(e, "mac")?.to_lowercase(),
                dst: str_field(e, "dst"),
                state: str_field(e, "state"),
            })
        })
        .collect())
}

/// FDB entries for `mac` that point at a VTEP (entries the bridge learnt locally carry no
/// `dst` and are not what netd programs).
pub fn fdb_to_vtep(ns: &str, dev: &str, mac: &str) -> Result<Vec<FdbEntry>> {
    let mac = mac.to_lowercase();
    Ok(fdb(ns, dev)?
        .into_iter()
        .filter(|e| e.mac == mac && e.dst.is_some())
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighEntry {
    pub ip: String,
    pub lladdr: Option<String>,
    pub state: Vec<String>,
}

impl NeighEntry {
    pub fn is_permanent(&self) -> bool {
        self.state.iter().any(|s| s == "PERMANENT")
    }
}

pub fn neigh(ns: &str, dev: &str) -> Result<Vec<NeighEntry>> {
    let v = json_of(&["ip", "-n", ns, "-4", "-j", "neigh", "show", "dev", dev])?;
    Ok(array(v)
        .iter()
        .filter_map(|e| {
            Some(NeighEntry {
                ip: str_field(e, "dst")?,
                lladdr: str_field(e, "lladdr").map(|m| m.to_lowercase()),
                state: array(e.get("state").cloned().unwrap_or(Value::Null))
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
            })
        })
        .collect())
}
