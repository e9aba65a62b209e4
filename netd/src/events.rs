//! Changes worth telling an operator about, as they happen: endpoints joining and leaving,
//! backends drained, gossip membership, drift the reconcile loop repaired. Producers (API
//! operations, the gossip watcher, the reconcile thread) send; `GET /v1/events` streams them
//! (NDJSON) to `netd inspect events`. Nobody listening costs nothing; a slow listener loses the
//! oldest events (it is told how many), never blocks a producer.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Events buffered per listener before the oldest are dropped.
const BUFFER: usize = 1024;

/// One change. Field names are part of the API (`GET /v1/events`, `netd inspect events --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `endpoint_joined`, `endpoint_left`, `endpoint_drained`, `endpoint_enabled`,
    /// `remote_endpoint_joined`, `remote_endpoint_left`, `remote_endpoint_drained`,
    /// `remote_endpoint_enabled`, `network_created`, `network_removed`, `peer_joined`,
    /// `peer_live`, `peer_dead`, `peer_left`, `drift_repaired`, `events_lost`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// What the event is about: an endpoint id, a node name, a frontend...
    pub subject: String,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Set at shutdown: streams end, so a graceful stop does not wait for listeners.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BUFFER).0,
            closed: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Events {
    pub fn emit(
        &self,
        kind: &str,
        network: Option<&str>,
        subject: impl Into<String>,
        detail: impl Into<String>,
    ) {
        let e = Event {
            time_ms: now_ms(),
            kind: kind.to_string(),
            network: network.map(str::to_string),
            subject: subject.into(),
            detail: detail.into(),
        };
        tracing::debug!(kind = %e.kind, subject = %e.subject, detail = %e.detail, "event");
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Ends every stream (netd is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once [`Events::close`] was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_stable() {
        let ev = Events::default();
        let mut rx = ev.subscribe();
        ev.emit(
            "drift_repaired",
            Some("web"),
            "vx-4097",
            "fdb 02:42:0a:01:00:03 restored",
        );
        let e = rx.try_recv().unwrap();
        let v = serde_json::to_value(&e).unwrap();
        for f in ["time_ms", "kind", "network", "subject", "detail"] {
            assert!(v.get(f).is_some(), "{f} missing in {v}");
        }
        assert_eq!(v["kind"], "drift_repaired");
    }
}
