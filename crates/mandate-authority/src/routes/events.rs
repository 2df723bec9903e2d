//! Business events: `POST /v1/events` and the GitHub webhook adapter. An
//! event ends exactly the mandates whose terminal events name its type and
//! subject; a replayed delivery changes nothing.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use mandate_core::condition::Facts;
use mandate_core::id::MandateId;
use mandate_core::state::MandateState;
use mandate_core::timestamp::UnixTime;
use mandate_store::sql::params;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Caller, Role};
use crate::db;
use crate::error::{ApiError, parse_body};
use crate::routes::facts::{merge_patch, read_facts, reevaluate, write_facts};
use crate::state::AppState;

/// A business event.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Idempotency id: a second delivery with the same id changes nothing.
    pub id: String,
    /// The event type (`pull_request.merged`).
    #[serde(rename = "type")]
    pub type_: String,
    /// What it is about (`github:acme/app#123`).
    #[serde(default)]
    pub subject: Option<String>,
    /// When it happened.
    #[serde(default)]
    pub occurred_at: Option<UnixTime>,
    /// A merge patch to the tenant's facts.
    #[serde(default)]
    pub facts: Option<Value>,
}

/// Records an event and applies it. Returns `(replayed, ended)`.
pub async fn apply(
    s: &AppState,
    tenant: &str,
    source: &str,
    ev: Event,
) -> Result<(bool, Vec<MandateId>), ApiError> {
    if ev.id.is_empty() || ev.id.len() > 256 || ev.type_.is_empty() || ev.type_.len() > 256 {
        return Err(ApiError::bad_request(
            "id and type: must be 1 to 256 characters",
        ));
    }
    // When it happened: from the event (for a webhook, its signed payload),
    // else when it arrived. It ends only mandates issued at or before then
    // (the decision's rule too), so a replay cannot end later missions.
    let occurred_ms = ev
        .occurred_at
        .map_or_else(|| crate::auth::now_secs() * 1000, |t| t.secs() * 1000);
    let digest = event_digest(source, &ev);
    // Which live mandates name this event (decided against the registry,
    // re-checked in the transaction).
    let candidates: Vec<String> = s.with_registry(|r| {
        r.in_tenant(tenant)
            .filter(|m| !db::is_terminal(m.state))
            .filter(|m| m.claims.iat.secs() * 1000 <= occurred_ms)
            .filter(|m| {
                m.claims
                    .lifecycle
                    .terminal_events
                    .iter()
                    .any(|t| t.matches(&ev.type_, ev.subject.as_deref()))
            })
            .map(|m| m.id.to_string())
            .collect()
    })?;
    let (tenant2, source2, ev2) = (tenant.to_owned(), source.to_owned(), ev.clone());
    let outcome = s
        .store
        .write(move |tx| {
            let now = tx.now_ms();
            let occurred = occurred_ms;
            let inserted = tx.conn().execute(
                "INSERT INTO events (tenant, idempotency_id, type, subject, occurred_ms, received_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![tenant2, ev2.id, ev2.type_, ev2.subject, occurred, now, json!({"source": source2, "facts": ev2.facts, "digest": digest}).to_string()],
            )?;
            if inserted == 0 {
                // The same id again: a replay when it is the same event,
                // a conflict when it is another one under a used id.
                let body: String = tx.conn().query_row(
                    "SELECT body FROM events WHERE tenant = ?1 AND idempotency_id = ?2",
                    params![tenant2, ev2.id],
                    |r| r.get(0),
                )?;
                let stored = serde_json::from_str::<Value>(&body).ok();
                let same = stored
                    .as_ref()
                    .and_then(|b| b.get("digest"))
                    .and_then(Value::as_str)
                    .is_none_or(|d| d == digest);
                if !same {
                    return Err(mandate_store::StoreError::conflict(
                        "event_id_reused",
                        format!("id: `{}` was already used for a different event", ev2.id),
                    ));
                }
                return Ok((true, Vec::new(), None));
            }
            tx.audit(Some(&tenant2), "event", None, json!({"id": ev2.id, "type": ev2.type_, "subject": ev2.subject, "occurred_ms": occurred, "source": source2}))?;
            crate::signals::emit(
                tx,
                &tenant2,
                "business-event",
                None,
                &json!({"type": ev2.type_, "subject": ev2.subject, "occurred_ms": occurred}),
            )?;
            let mut facts = None;
            if let Some(p) = &ev2.facts {
                let (mut doc, _) = read_facts(tx.conn(), &tenant2)?;
                merge_patch(&mut doc, p);
                write_facts(tx, &tenant2, &doc, &source2, &format!("event:{}", ev2.id))?;
                facts = Some(doc);
            }
            let mut ended = Vec::new();
            for id in candidates {
                let st: String = tx.conn().query_row("SELECT state FROM mandates WHERE id = ?1", params![id], |r| r.get(0))?;
                if db::is_terminal(MandateState::from_name(&st)) {
                    continue;
                }
                ended.extend(db::transition(tx, &id, MandateState::Completed, &format!("event:{}", ev2.id), &format!("{} {}", ev2.type_, ev2.subject.clone().unwrap_or_default()))?);
            }
            Ok((false, ended, facts))
        })
        .await?;
    let (replayed, ended, facts) = outcome;
    if replayed {
        return Ok((true, Vec::new()));
    }
    s.metrics.event();
    for _ in &ended {
        s.metrics.transition("completed");
    }
    s.with_registry_mut(|r| {
        crate::registry::add_event(r, tenant, &ev.type_, ev.subject.as_deref(), occurred_ms)
    })?;
    s.refresh(&ended)?;
    let mut all = ended;
    if let Some(doc) = facts {
        let f = Facts::from_json(doc).map_err(ApiError::internal)?;
        s.with_registry_mut(|r| crate::registry::set_facts(r, tenant, f))?;
        all.extend(reevaluate(s, tenant).await?);
    }
    Ok((false, all))
}

/// The first place a merge patch changes (sets or deletes) that `allowed`
/// does not cover, as a dotted path.
fn first_change_outside<'a>(
    patch: &'a Value,
    path: &mut Vec<&'a str>,
    allowed: &dyn Fn(&[&str]) -> bool,
) -> Option<String> {
    if !path.is_empty() && allowed(path) {
        return None;
    }
    match patch {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                path.push(k);
                let found = first_change_outside(v, path, allowed);
                path.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        // A scalar, array, null (delete) or `{}` replaces what is here.
        _ if path.is_empty() => Some(".".into()),
        _ => Some(path.join(".")),
    }
}

/// What makes two deliveries the same event: everything but the arrival time.
fn event_digest(source: &str, ev: &Event) -> String {
    let canonical = json!({
        "source": source,
        "type": ev.type_,
        "subject": ev.subject,
        "occurred_at": ev.occurred_at.map(|t| t.secs()),
        "facts": ev.facts,
    });
    mandate_core::hash::sha256_b64(canonical.to_string().as_bytes())
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
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
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

/// Turns a GitHub delivery into an event: a `pull_request` closed with
/// `merged: true` becomes `pull_request.merged` about `github:OWNER/REPO#N`,
/// with the fact `github.pulls["OWNER/REPO#N"].state = "merged"`. Other
/// deliveries are acknowledged and ignored.
///
/// # Errors
/// A merged pull request without a readable `merged_at`: without the time
/// of the merge the event cannot say which mandates it ends.
pub fn github_event(kind: &str, payload: &Value) -> Result<Option<Event>, String> {
    let at = |p: &str| payload.pointer(p);
    if kind != "pull_request"
        || at("/action") != Some(&json!("closed"))
        || at("/pull_request/merged") != Some(&json!(true))
    {
        return Ok(None);
    }
    let repo = at("/repository/full_name")
        .and_then(Value::as_str)
        .ok_or("repository.full_name: missing")?;
    let number = at("/pull_request/number")
        .and_then(Value::as_u64)
        .or_else(|| at("/number").and_then(Value::as_u64))
        .ok_or("pull_request.number: missing")?;
    let key = format!("{repo}#{number}");
    // When the merge happened, from the signed payload; GitHub always sends
    // it for a merged pull request, and without it there is no event.
    let merged_at = at("/pull_request/merged_at")
        .and_then(Value::as_str)
        .and_then(|t| UnixTime::parse_rfc3339(t).ok())
        .ok_or("pull_request.merged_at: missing or not an RFC 3339 time")?;

    Ok(Some(Event {
        // The merge is the event, whichever delivery carries it: a delivery
        // replayed under a new `X-GitHub-Delivery` id (which the HMAC does
        // not cover) is the same event, answered `replayed`.
        id: format!("github:merge:{key}@{}", merged_at.secs()),
        type_: "pull_request.merged".into(),
        subject: Some(format!("github:{key}")),
        occurred_at: Some(merged_at),
        facts: Some(json!({"github": {"pulls": {key: {"state": "merged"}}}})),
    }))
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
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
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
    fn a_merged_pull_request_becomes_an_event_about_that_pr() {
        let p = json!({"action": "closed", "number": 123, "pull_request": {"number": 123, "merged": true, "merged_at": "2025-12-01T14:00:00Z"}, "repository": {"full_name": "acme/app"}});
        let ev = github_event("pull_request", &p).unwrap().unwrap();
        assert_eq!(ev.type_, "pull_request.merged");
        assert_eq!(ev.subject.as_deref(), Some("github:acme/app#123"));
        assert_eq!(ev.id, "github:merge:acme/app#123@1764597600");
        let closed = json!({"action": "closed", "pull_request": {"number": 1, "merged": false}, "repository": {"full_name": "acme/app"}});
        assert!(github_event("pull_request", &closed).unwrap().is_none());
        let no_time = json!({"action": "closed", "pull_request": {"number": 1, "merged": true}, "repository": {"full_name": "acme/app"}});
        assert!(
            github_event("pull_request", &no_time)
                .unwrap_err()
                .contains("merged_at")
        );
    }

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
