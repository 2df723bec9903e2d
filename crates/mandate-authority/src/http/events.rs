//! Business events over HTTP: `POST /v1/events` and the GitHub webhook
//! (HMAC-checked here; the domain is in [`crate::service::events`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, parse_body};
pub use crate::service::events::Event;
use crate::service::events::{apply, first_change_outside, github_event};
use crate::state::AppState;

/// 202 for an event recorded now, 200 for a replay of one recorded before.
fn recorded_status(replayed: bool) -> StatusCode {
    if replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    }
}

/// `POST /v1/events` (event source or admin).
pub async fn create(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<super::wire::EventRecorded>), ApiError> {
    caller.require(&[Role::EventSource, Role::Admin])?;
    let ev: Event = parse_body(&body)?;
    if caller.role == Role::EventSource
        && let Some(patch) = &ev.facts
    {
        let grant = s
            .config
            .event_source
            .iter()
            .find(|e| e.sub == caller.sub && e.tenant == caller.tenant);
        if let Some(path) = first_change_outside(patch, &mut Vec::new(), &|p| {
            grant.is_some_and(|g| g.allows(p))
        }) {
            return Err(ApiError::forbidden(format!(
                "facts.{path}: this event source may not change it (see `event_source` in the configuration)"
            )));
        }
    }
    let id = ev.id.clone();
    let (replayed, changed) = apply(&s, &caller.tenant, &caller.sub, ev).await?;
    let status = recorded_status(replayed);
    Ok((
        status,
        Json(super::wire::EventRecorded {
            id,
            replayed,
            changed,
        }),
    ))
}

type HmacSha256 = Hmac<sha2::Sha256>;

/// Checks GitHub's `X-Hub-Signature-256: sha256=<hex>` in constant time.
pub fn github_signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `POST /v1/webhooks/github/{source}`: HMAC-authenticated; an unsigned or
/// wrongly signed delivery is 401 and changes nothing.
pub async fn github(
    State(s): State<Arc<AppState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let hook = s
        .webhooks
        .get(&source)
        .ok_or_else(|| ApiError::not_found("webhook source"))?;
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !github_signature_ok(hook.secret.expose().as_bytes(), &body, sig) {
        return Err(ApiError::unauthenticated(
            "X-Hub-Signature-256: missing or wrong",
        ));
    }
    let kind = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if headers.get("x-github-delivery").is_none() {
        return Err(ApiError::bad_request("X-GitHub-Delivery: missing"));
    }
    let payload: Value = parse_body(&body)?;
    let Some(ev) = github_event(kind, &payload).map_err(ApiError::bad_request)? else {
        return Ok((StatusCode::OK, Json(json!({"ignored": true}))));
    };
    let (replayed, changed) =
        apply(&s, &hook.tenant, &format!("webhook:{source}"), ev.clone()).await?;
    let status = recorded_status(replayed);
    Ok((
        status,
        Json(
            json!({"id": ev.id, "type": ev.type_, "subject": ev.subject, "replayed": replayed, "changed": changed}),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_must_match_the_body() {
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
        mac.update(b"body");
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(github_signature_ok(b"secret", b"body", Some(&good)));
        assert!(!github_signature_ok(b"secret", b"body!", Some(&good)));
        assert!(!github_signature_ok(b"other", b"body", Some(&good)));
        assert!(!github_signature_ok(b"secret", b"body", None));
    }
}
