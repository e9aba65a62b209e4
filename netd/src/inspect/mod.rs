//! `netd inspect`: the node as netd wants it and as the kernel has it, and where they differ.
//!
//! One thin file per verb (summary, network, service, dns, path, crypto, events) over a shared query
//! layer (`query.rs`: the API when the daemon answers, the config for kernel-side names) and
//! the kernel readers (`kernel.rs`, `crate::lb::dump`). Every view is a serde struct (its JSON
//! with `--json`, field names stable) and renders itself as tables for people. Each carries
//! `desired_state` (`available` or `unavailable: ...`) and `problems`; the exit code is 0 when
//! there are none, 1 when drift or a failure was found (a stopped daemon included), 2 when the
//! view itself could not be produced (unknown name, bad arguments).
//!
//! A new verb is a new file with a function returning a [`View`], one [`What`] variant and one
//! match arm in [`run`].

mod crypto;
mod dns;
mod events;
mod kernel;
mod network;
mod path;
mod query;
mod render;
mod service;
mod summary;

pub use crypto::CryptoReport;
pub use dns::DnsReport;
pub use network::NetworkReport;
pub use path::{Hop, PathReport};
pub use query::Ctx;
pub use service::ServiceReport;
pub use summary::SummaryReport;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Subcommand, Clone)]
pub enum What {
    /// One overlay network: endpoints, peers, FDB/neighbor entries in the kernel, and drift.
    Network { name: String },
    /// One service: VIPs, ports, backends and their state, what the LB maps hold, and drift.
    Service { name: String },
    /// The names a container sees, and the answer netd would give for NAME now.
    Dns {
        /// Endpoint id, container name or netns of a local container.
        #[arg(long)]
        container: Option<String>,
        name: Option<String>,
    },
    /// What a packet from a container to IP|NAME:PORT meets, hop by hop, and where it fails.
    Path {
        /// Endpoint id, container name or netns of a local container.
        #[arg(long)]
        from: String,
        /// `IP:PORT` or `NAME:PORT` (`/udp` suffix for UDP).
        #[arg(long)]
        to: String,
    },
    /// Encryption: key tags, XFRM states/policies per peer with counters, sequence-number
    /// headroom, fail-closed drop rules.
    Crypto,
    /// Stream changes: endpoints, backends drained, gossip membership, drift repaired.
    Events {
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        duration: Option<f64>,
    },
}

pub struct Opts {
    pub socket: Option<PathBuf>,
    pub config: PathBuf,
    pub json: bool,
    pub watch: bool,
}

/// One difference between desired state and kernel. Field names are stable (`--json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// `missing` (wanted, not in the kernel), `extra` (in the kernel, not wanted) or
    /// `different`.
    pub kind: String,
    /// `fdb`, `neighbor`, `vxlan`, `lb_service`, `lb_backend`, `maglev`, `nft_lb`, `ipvs`...
    pub object: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub want: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub have: Option<String>,
}

impl Drift {
    pub fn new(kind: &str, object: &str, key: impl Into<String>) -> Drift {
        Drift {
            kind: kind.into(),
            object: object.into(),
            key: key.into(),
            want: None,
            have: None,
        }
    }
    pub fn want(mut self, w: impl Into<String>) -> Drift {
        self.want = Some(w.into());
        self
    }
    pub fn have(mut self, h: impl Into<String>) -> Drift {
        self.have = Some(h.into());
        self
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.kind, self.object, self.key)?;
        if let Some(w) = &self.want {
            write!(f, " want {w}")?;
        }
        if let Some(h) = &self.have {
            write!(f, " have {h}")?;
        }
        Ok(())
    }
}

/// A view: its JSON is the struct, `render` the human form, `problems` drives the exit code.
pub trait View: Serialize {
    fn render(&self, out: &mut String);
    fn problems(&self) -> &[String];
}

pub fn run(opts: Opts, what: Option<What>) -> i32 {
    let ctx = Ctx::open(opts.socket.as_deref(), &opts.config);
    if opts.watch || matches!(what, Some(What::Events { .. })) {
        let duration = match what {
            Some(What::Events { duration }) => duration,
            _ => None,
        };
        return events::stream(&ctx, opts.json, duration);
    }
    let r: anyhow::Result<Box<dyn Emit>> = match what {
        None => summary::view(&ctx).map(|v| Box::new(v) as _),
        Some(What::Network { name }) => network::view(&ctx, &name).map(|v| Box::new(v) as _),
        Some(What::Service { name }) => service::view(&ctx, &name).map(|v| Box::new(v) as _),
        Some(What::Dns { container, name }) => {
            dns::view(&ctx, container.as_deref(), name.as_deref()).map(|v| Box::new(v) as _)
        }
        Some(What::Path { from, to }) => path::view(&ctx, &from, &to).map(|v| Box::new(v) as _),
        Some(What::Crypto) => crypto::view(&ctx).map(|v| Box::new(v) as _),
        Some(What::Events { .. }) => unreachable!("streamed above"),
    };
    match r {
        Ok(v) => {
            let text = if opts.json { v.json() } else { v.human() };
            print!("{text}");
            if v.healthy() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("netd inspect: {e:#}");
            2
        }
    }
}

/// Object-safe face of [`View`] for the dispatcher.
trait Emit {
    fn json(&self) -> String;
    fn human(&self) -> String;
    fn healthy(&self) -> bool;
}

impl<V: View> Emit for V {
    fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("views serialize");
        s.push('\n');
        s
    }
    fn human(&self) -> String {
        let mut s = String::new();
        self.render(&mut s);
        render::problems(&mut s, self.problems());
        s
    }
    fn healthy(&self) -> bool {
        self.problems().is_empty()
    }
}
