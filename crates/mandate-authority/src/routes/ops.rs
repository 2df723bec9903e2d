//! Operations: health, metrics, keys and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`.
pub async fn healthz(State(s): State<Arc<AppState>>) -> Json<Value> {
    let head = s
        .store
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0))?))
        .ok();
    Json(json!({"status": if head.is_some() { "ok" } else { "degraded" }, "audit_records": head}))
}

/// `GET /metrics` (Prometheus text).
pub async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// `GET /.well-known/jwks.json`: the authority's public key.
pub async fn jwks(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"keys": [s.authority.public_jwk()]}))
}

/// `GET /openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}
