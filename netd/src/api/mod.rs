//! HTTP/1.1 + JSON API on a Unix socket, versioned under `/v1`. Handlers are thin: parse, call
//! the daemon operation, render.

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

async fn put_encryption_keys(State(d): D, body: Bytes) -> Result<StatusCode, ApiError> {
    d.set_encryption_keys(parse_body(&body)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn encryption(State(d): D) -> Result<Response, ApiError> {
    Ok(Json(d.encryption_view()?).into_response())
}
