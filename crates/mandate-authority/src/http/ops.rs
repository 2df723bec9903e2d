//! Operations: health, metrics, keys and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`: 200 when the store reads, commits and checkpoints; 503
/// with what is failing otherwise (a writer that cannot write is not healthy
/// even while reads still work).
pub async fn healthz(State(s): State<Arc<AppState>>) -> axum::response::Response {
    let head = crate::service::listing::audit_records(&s).ok();
    let problem = s
        .store
        .health()
        .problem()
        .or(head.is_none().then_some("the store cannot be read"));
    match problem {
        None => Json(json!({"status": "ok", "audit_records": head})).into_response(),
        Some(p) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(json!({
                "type": "urn:mandate:problem:degraded", "title": "Service Unavailable",
                "status": 503, "code": "degraded", "detail": p,
                "status_text": "degraded", "problem": p, "audit_records": head,
            })),
        )
            .into_response(),
    }
}

/// `GET /v1/audit/checkpoint` (any authenticated caller): the current signed
/// checkpoint of the audit log (`application/jwt`: the head's sequence and
/// hash, the record count, the previous checkpoint's digest). Keep copies:
/// `mandate audit verify --against` detects a log rolled back behind one.
pub async fn checkpoint(
    State(s): State<Arc<AppState>>,
    _caller: crate::auth::Caller,
) -> Result<axum::response::Response, crate::error::ApiError> {
    // The checkpoint covers what was committed before this request, not
    // only what the writer had checkpointed by then.
    s.store
        .checkpoint_now()
        .await
        .map_err(crate::error::ApiError::internal)?;
    let path = mandate_store::checkpoint_path(s.store.dir());
    let text = std::fs::read_to_string(&path)
        .map_err(|_| crate::error::ApiError::not_found("checkpoint"))?;
    Ok(([(header::CONTENT_TYPE, "application/jwt")], text).into_response())
}

/// `GET /metrics` (OpenMetrics text, which Prometheus scrapes).
pub async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    s.metrics.proof_signatures(s.signatures.counts());
    s.metrics.chains_verified(s.verifier.counts());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// `GET /.well-known/jwks.json`: the authority's published keys (the one
/// signing now, one published ahead of a rotation, one retiring after it).
pub async fn jwks(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(serde_json::to_value(s.keys.published().to_jwks()).unwrap_or_else(|_| json!({"keys": []})))
}

/// `GET /openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
}
