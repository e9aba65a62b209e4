//! HTTP/1.1 + JSON API on a Unix socket, versioned under `/v1`. Handlers are thin: parse, call
//! the daemon operation, render.

pub mod diag;
pub mod error;
pub mod server;
pub mod types;

use crate::daemon::Daemon;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use error::{parse_body, ApiError};
use serde::Deserialize;
use std::sync::Arc;

pub const OPENAPI: &str = include_str!("openapi.json");

type D = State<Arc<Daemon>>;

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/node", get(node))
        .route("/v1/networks", get(list_networks))
        .route(
            "/v1/networks/{name}",
            put(put_network).get(get_network).delete(delete_network),
        )
        .route("/v1/endpoints", get(list_endpoints))
        .route(
            "/v1/endpoints/{id}",
            put(put_endpoint)
                .get(get_endpoint)
                .delete(delete_endpoint)
                .patch(patch_endpoint),
        )
        .route("/v1/remote-endpoints", get(remote_endpoints))
        .route("/v1/cluster/keys", put(put_keys))
        .route("/v1/services", get(list_services))
        .route("/v1/services/{name}", get(get_service))
        .route("/v1/dns", get(dns_view))
        .route("/v1/events", get(events))
        .route("/v1/cluster/encryption-keys", put(put_encryption_keys))
        .route("/v1/encryption", get(encryption))
        .fallback(not_found)
        .with_state(d)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found(None, "no such API path (see GET /v1/openapi.json)")
}

async fn node(State(d): D) -> Response {
    Json(d.node_view()).into_response()
}

async fn list_networks(State(d): D) -> Response {
    Json(d.networks()).into_response()
}

async fn get_network(State(d): D, Path(name): Path<String>) -> Result<Response, ApiError> {
    d.network_view(&name)
        .map(|v| Json(v).into_response())
        .ok_or_else(|| {
            ApiError::not_found(Some("name"), format!("network {name:?} does not exist"))
        })
}

async fn put_network(
    State(d): D,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec = parse_body(&body)?;
    let (view, created) = d.put_network(&name, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

#[derive(Deserialize)]
struct Force {
    #[serde(default)]
    force: bool,
}

async fn delete_network(
    State(d): D,
    Path(name): Path<String>,
    Query(f): Query<Force>,
) -> Result<StatusCode, ApiError> {
    d.delete_network(&name, f.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_endpoints(State(d): D) -> Response {
    Json(d.endpoints()).into_response()
}

async fn get_endpoint(State(d): D, Path(id): Path<String>) -> Result<Response, ApiError> {
    d.endpoint_view(&id)
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found(Some("id"), format!("endpoint {id:?} does not exist")))
}

async fn put_endpoint(
    State(d): D,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec = parse_body(&body)?;
    let (view, created) = d.put_endpoint(&id, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

async fn patch_endpoint(
    State(d): D,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch = parse_body(&body)?;
    Ok(Json(d.patch_endpoint(&id, patch).await?).into_response())
}

async fn delete_endpoint(State(d): D, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    d.delete_endpoint(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remote_endpoints(State(d): D) -> Response {
    Json(d.remote_endpoints()).into_response()
}

async fn put_keys(State(d): D, body: Bytes) -> Result<StatusCode, ApiError> {
    d.set_gossip_keys(parse_body(&body)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_services(State(d): D) -> Response {
    Json(d.service_views()).into_response()
}

async fn get_service(State(d): D, Path(name): Path<String>) -> Result<Response, ApiError> {
    d.service_views()
        .into_iter()
        .find(|s| s.name.eq_ignore_ascii_case(&name) || s.id == name)
        .map(|v| Json(v).into_response())
        .ok_or_else(|| {
            ApiError::not_found(
                Some("name"),
                format!("service {name:?} is not known on this node"),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsQuery {
    container: Option<String>,
    name: Option<String>,
}

async fn dns_view(State(d): D, Query(q): Query<DnsQuery>) -> Result<Response, ApiError> {
    Ok(Json(d.dns_view(q.container.as_deref(), q.name.as_deref())?).into_response())
}

/// NDJSON, one event per line, until the client goes away.
async fn events(State(d): D) -> Response {
    let rx = d.shared.events.subscribe();
    let closed = Box::pin(d.shared.events.closed());
    let stream = futures_util::stream::unfold((rx, closed), |(mut rx, mut closed)| async move {
        use tokio::sync::broadcast::error::RecvError;
        let r = tokio::select! {
            r = rx.recv() => r,
            _ = &mut closed => return None,
        };
        let ev = match r {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => crate::events::Event {
                time_ms: crate::events::now_ms(),
                kind: "events_lost".into(),
                network: None,
                subject: "events".into(),
                detail: format!("{n} events dropped (listener too slow)"),
            },
            Err(RecvError::Closed) => return None,
        };
        let mut line = serde_json::to_vec(&ev).expect("event serializes");
        line.push(b'\n');
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(line)),
            (rx, closed),
        ))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn put_encryption_keys(State(d): D, body: Bytes) -> Result<StatusCode, ApiError> {
    d.set_encryption_keys(parse_body(&body)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn encryption(State(d): D) -> Result<Response, ApiError> {
    Ok(Json(d.encryption_view()?).into_response())
}
