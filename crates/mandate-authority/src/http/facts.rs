//! Mission facts over HTTP: `GET`, `PUT` (replace) and `PATCH` (merge
//! patch) `/v1/facts`; the domain is in [`crate::service::facts`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::Value;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, parse_body};
use crate::service::facts::{self, merge_patch};
use crate::state::AppState;

/// `GET /v1/facts` (admin, enforcer, principal).
pub async fn show(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<super::wire::FactsView>, ApiError> {
    caller.require(&[Role::Admin, Role::Enforcer, Role::Principal])?;
    let (doc, version) = facts::show(&s, &caller.tenant)?;
    Ok(Json(super::wire::FactsView {
        facts: doc,
        version,
    }))
}

async fn set(
    s: Arc<AppState>,
    caller: Caller,
    doc: impl FnOnce(Value) -> Value + Send + 'static,
) -> Result<Json<super::wire::FactsChanged>, ApiError> {
    let (doc, version, changed) = facts::set(&s, &caller, doc).await?;
    Ok(Json(super::wire::FactsChanged {
        facts: doc,
        version,
        changed,
    }))
}

/// `PUT /v1/facts` (admin): replaces the document.
pub async fn replace(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<super::wire::FactsChanged>, ApiError> {
    let doc: Value = parse_body(&body)?;
    if !doc.is_object() {
        return Err(ApiError::bad_request("facts: must be a JSON object"));
    }
    set(s, caller, move |_| doc).await
}

/// `PATCH /v1/facts` (admin): a JSON merge patch (RFC 7386).
pub async fn patch(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<super::wire::FactsChanged>, ApiError> {
    let p: Value = parse_body(&body)?;
    set(s, caller, move |mut current| {
        merge_patch(&mut current, &p);
        current
    })
    .await
}
