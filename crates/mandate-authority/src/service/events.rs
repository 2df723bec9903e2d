//! Business events: recording one (idempotent by its id, the mandates whose
//! terminal events it names end, its facts patch applied), GitHub's merged
//! pull request as an event, and what recent events did.

use mandate_core::condition::Facts;
use mandate_core::id::MandateId;
use mandate_core::state::MandateState;
use mandate_core::timestamp::UnixTime;
use mandate_store::sql::params;
use serde::Deserialize;
use serde_json::{Value, json};

use super::facts::{merge_patch, read_facts, reevaluate, write_facts};
use super::{Error, Refusal, Result};
use crate::state::AppState;
use crate::store;

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
///
/// # Errors
/// A malformed id or type; `event_id_reused` for another event under a used
/// id; `invalid_facts`; a store failure.
pub async fn apply(
    s: &AppState,
    tenant: &str,
    source: &str,
    ev: Event,
) -> Result<(bool, Vec<MandateId>)> {
    if ev.id.is_empty() || ev.id.len() > 256 || ev.type_.is_empty() || ev.type_.len() > 256 {
        return Err(Error::Refused(Refusal::malformed(
            "id and type: must be 1 to 256 characters",
        )));
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
            .filter(|m| !store::is_terminal(m.state))
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
                if store::is_terminal(MandateState::from_name(&st)) {
                    continue;
                }
                ended.extend(store::transition(tx, &id, MandateState::Completed, &format!("event:{}", ev2.id), &format!("{} {}", ev2.type_, ev2.subject.clone().unwrap_or_default()))?);
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
        let f = Facts::from_json(doc).map_err(Error::internal)?;
        s.with_registry_mut(|r| crate::registry::set_facts(r, tenant, f))?;
        all.extend(reevaluate(s, tenant).await?);
    }
    Ok((false, all))
}

/// The first place a merge patch changes (sets or deletes) that `allowed`
/// does not cover, as a dotted path: what an event source may not change.
pub fn first_change_outside<'a>(
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

/// Turns a GitHub delivery into an event: a `pull_request` closed with
/// `merged: true` becomes `pull_request.merged` about `github:OWNER/REPO#N`,
/// with the fact `github.pulls["OWNER/REPO#N"].state = "merged"`. Other
/// deliveries are acknowledged and ignored.
///
/// # Errors
/// A merged pull request without a readable `merged_at`: without the time
/// of the merge the event cannot say which mandates it ends.
pub fn github_event(kind: &str, payload: &Value) -> std::result::Result<Option<Event>, String> {
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

/// A business event as recorded.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    /// Its idempotency id.
    pub id: String,
    /// Its type.
    pub type_: String,
    /// Its subject.
    pub subject: Option<String>,
    /// When it happened (ms since the epoch).
    pub occurred_ms: i64,
    /// The mandates it changed, with what became of each
    /// (`completed`, `suspended`, `revoked`).
    pub changed: Vec<(String, String)>,
}

/// [`recent`]'s query: by the `events_tenant_received` index, already in
/// order (no sort of the tenant's every event).
pub(crate) const RECENT: &str = "SELECT idempotency_id, type, subject, occurred_ms FROM events
   WHERE tenant = ?1 ORDER BY received_ms DESC LIMIT ?2";

/// The tenant's `limit` most recently received events, newest first, each
/// with the mandates it changed.
///
/// # Errors
/// A store failure.
pub fn recent(s: &AppState, tenant: &str, limit: usize) -> Result<Vec<RecordedEvent>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(s.store.read(|c| {
        let mut st = c.prepare_cached(RECENT)?;
        let mut events: Vec<RecordedEvent> = st
            .query_map(params![tenant, limit], |r| {
                Ok(RecordedEvent {
                    id: r.get(0)?,
                    type_: r.get(1)?,
                    subject: r.get(2)?,
                    occurred_ms: r.get(3)?,
                    changed: Vec::new(),
                })
            })?
            .collect::<std::result::Result<_, _>>()?;
        for e in &mut events {
            e.changed = mandate_store::audit::changed_by_event(c, tenant, &e.id)?;
        }
        Ok(events)
    })?)
}

/// The tenant's mission facts and their version.
///
/// # Errors
/// A store failure.
pub fn facts(s: &AppState, tenant: &str) -> Result<(Value, i64)> {
    super::facts::show(s, tenant)
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
}
