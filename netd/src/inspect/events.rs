//! `netd inspect events` (or `netd inspect --watch`): streams what changes on this node as it
//! happens — endpoints joining and leaving, backends drained, gossip membership, drift the
//! reconcile loop repaired — from `GET /v1/events`. With `--json`, one event object per line
//! (NDJSON, the fields of `crate::events::Event`).

use super::Ctx;
use crate::events::Event;
use std::io::Write;
use std::time::{Duration, Instant};

pub fn stream(ctx: &Ctx, json: bool, duration: Option<f64>) -> i32 {
    if let Some(p) = ctx.daemon_problem() {
        eprintln!("netd inspect events: {p}; there is nothing to stream");
        return 1;
    }
    let until = duration.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    if !json {
        println!("watching {} (Ctrl-C to stop)", ctx.socket.display());
    }
    let r = crate::client::stream_lines(&ctx.socket, "/v1/events", until, |line| {
        let mut out = std::io::stdout().lock();
        let ok = if json {
            writeln!(out, "{line}")
        } else {
            match serde_json::from_str::<Event>(line) {
                Ok(e) => writeln!(out, "{}", human(&e)),
                Err(_) => writeln!(out, "{line}"),
            }
        };
        ok.and_then(|_| out.flush()).is_ok()
    });
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("netd inspect events: {e:#}");
            2
        }
    }
}

fn human(e: &Event) -> String {
    let secs = e.time_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!(
        "{h:02}:{m:02}:{s:02}.{:03}Z  {:<24} {:<12} {} {}",
        e.time_ms % 1000,
        e.kind,
        e.network.as_deref().unwrap_or("-"),
        e.subject,
        e.detail
    )
}
