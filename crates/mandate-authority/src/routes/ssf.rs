//! The Shared Signals transmitter: metadata, stream management, poll
//! delivery (RFC 8936), push delivery (RFC 8935, in `crate::push`), and a
//! snapshot a receiver (re)starts from.
//!
//! Every stream of a tenant carries every signal of the tenant, in order,
//! numbered by the tenant's sequence (`txn` and `seq` in each SET), so a
//! receiver detects a gap. Acknowledgements are cumulative: acknowledging
//! `sig-n` acknowledges every signal up to `n`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use mandate_store::sql::{OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, parse_body};
use crate::routes::requests::new_id;
use crate::signals::{self, EVENT_TYPES, event_uri};
use crate::state::AppState;

/// RFC 8936 poll delivery.
pub const POLL: &str = "urn:ietf:rfc:8936";
/// RFC 8935 push delivery.
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// Longest a poll waits for a signal.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// `GET /.well-known/ssf-configuration`.
pub async fn configuration(State(s): State<Arc<AppState>>) -> Json<Value> {
    let base = s.issuer.trim_end_matches('/');
    Json(json!({
        "spec_version": "1_0",
        "issuer": s.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": format!("{base}/ssf/streams"),
        "status_endpoint": format!("{base}/ssf/status"),
        "add_subject_endpoint": format!("{base}/ssf/subjects/add"),
        "remove_subject_endpoint": format!("{base}/ssf/subjects/remove"),
        "verification_endpoint": format!("{base}/ssf/verify"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        "default_subjects": "ALL",
    }))
}

/// A stream as stored.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its configuration (SSF stream configuration object).
    pub config: Value,
    /// `enabled`, `paused` or `disabled`.
    pub status: String,
    /// The last acknowledged (or pushed) sequence number.
    pub cursor: i64,
    /// Who created it: with admins, the only caller that may manage it.
    pub owner: String,
    /// Why its status was last changed, as the caller said.
    pub reason: Option<String>,
}

/// Loads a stream of the caller's tenant.
pub fn load(s: &AppState, tenant: &str, id: &str) -> Result<Stream, ApiError> {
    let row = s.store.read(|c| {
        Ok(c.query_row(
            "SELECT id, tenant, config, status, cursor, owner FROM streams WHERE id = ?1",
            params![id],
            |r| {
                let config: Value =
                    serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null);
                Ok(Stream {
                    id: r.get(0)?,
                    tenant: r.get(1)?,
                    reason: config
                        .get("status_reason")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    config,
                    status: r.get(3)?,
                    cursor: r.get(4)?,
                    owner: r.get(5)?,
                })
            },
        )
        .optional()?)
    })?;
    row.filter(|st| st.tenant == tenant)
        .ok_or_else(|| ApiError::not_found("stream"))
}

/// Loads a stream the caller may manage: its creator, or an admin of the
/// tenant. Another enforcer's stream is as unknown as a missing one: an
/// enforcer token handed to an agent runtime cannot pause, re-point or
/// acknowledge a gateway's stream.
pub fn load_managed(s: &AppState, caller: &Caller, id: &str) -> Result<Stream, ApiError> {
    let st = load(s, &caller.tenant, id)?;
    if caller.role == Role::Admin || st.owner == caller.sub {
        Ok(st)
    } else {
        Err(ApiError::not_found("stream"))
    }
}

fn view(st: &Stream) -> Value {
    let mut v = st.config.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("stream_id".into(), json!(st.id));
    }
    v
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct StreamRequest {
    #[serde(default)]
    delivery: Option<Value>,
    #[serde(default)]
    events_requested: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    stream_id: Option<String>,
}

fn build_config(s: &AppState, id: &str, req: &StreamRequest) -> Result<Value, ApiError> {
    let base = s.issuer.trim_end_matches('/');
    let mut supported: Vec<String> = EVENT_TYPES.iter().map(|k| event_uri(k)).collect();
    supported.push(signals::SSF_VERIFICATION.to_owned());
    let requested = req
        .events_requested
        .clone()
        .unwrap_or_else(|| supported.clone());
    let delivered: Vec<&String> = requested.iter().filter(|e| supported.contains(e)).collect();
    let method = req
        .delivery
        .as_ref()
        .and_then(|d| d.get("method"))
        .and_then(Value::as_str)
        .unwrap_or(POLL);
    let delivery = match method {
        POLL => json!({"method": POLL, "endpoint_url": format!("{base}/ssf/poll/{id}")}),
        PUSH => {
            let url = req
                .delivery
                .as_ref()
                .and_then(|d| d.get("endpoint_url"))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("delivery.endpoint_url: required for push"))?;
            if !crate::config::acceptable_push_url(url, &s.config.push_destinations) {
                return Err(ApiError::bad_request(
                    "delivery.endpoint_url: must be https, or http to a loopback address, with no user information, and a destination the operator allows (push_destinations)",
                ));
            }
            let auth = req
                .delivery
                .as_ref()
                .and_then(|d| d.get("authorization_header"))
                .cloned()
                .unwrap_or(Value::Null);
            json!({"method": PUSH, "endpoint_url": url, "authorization_header": auth})
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "delivery.method: `{other}` is not supported"
            )));
        }
    };
    Ok(json!({
        "iss": s.issuer, "aud": format!("stream:{id}"), "delivery": delivery,
        "events_supported": supported, "events_requested": requested, "events_delivered": delivered,
        "description": req.description, "min_verification_interval": 0,
    }))
}

/// `POST /ssf/streams` (enforcer): creates a stream starting at the current
/// head; fetch the snapshot to start from a consistent state.
pub async fn create(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Enforcer])?;
    let req: StreamRequest = if body.is_empty() {
        StreamRequest::default()
    } else {
        parse_body(&body)?
    };
    let id = new_id("stream");
    let config = build_config(&s, &id, &req)?;
    let (tenant, owner, id2, cfg) = (
        caller.tenant.clone(),
        caller.sub.clone(),
        id.clone(),
        config.to_string(),
    );
    s.store
        .write(move |tx| {
            let head = signals::head(tx.conn(), &tenant)?;
            let now = tx.now_ms();
            tx.conn().execute(
                "INSERT INTO streams (id, tenant, owner, config, status, cursor, created_ms) VALUES (?1, ?2, ?3, ?4, 'enabled', ?5, ?6)",
                params![id2, tenant, owner, cfg, head, now],
            )?;
            tx.audit(Some(&tenant), "stream_created", None, json!({"stream": id2, "owner": owner}))?;
            Ok(())
        })
        .await?;
    let st = load(&s, &caller.tenant, &id)?;
    if st
        .config
        .pointer("/delivery/method")
        .and_then(Value::as_str)
        == Some(PUSH)
    {
        crate::push::spawn(Arc::clone(&s), st.id.clone(), st.tenant.clone());
    }
    Ok((StatusCode::CREATED, Json(view(&st))))
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    stream_id: Option<String>,
}

/// `GET /ssf/streams[?stream_id=]` (enforcer).
pub async fn read(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Enforcer, Role::Admin])?;
    if let Some(id) = q.stream_id {
        return Ok(Json(view(&load_managed(&s, &caller, &id)?)));
    }
    let tenant = caller.tenant.clone();
    let ids: Vec<String> = s.store.read(|c| {
        let mut st = c.prepare("SELECT id FROM streams WHERE tenant = ?1 ORDER BY created_ms")?;
        let rows = st.query_map(params![tenant], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })?;
    // The caller's own streams (every stream of the tenant for an admin).
    let all: Vec<Value> = ids
        .iter()
        .filter_map(|id| load_managed(&s, &caller, id).ok().map(|st| view(&st)))
        .collect();
    Ok(Json(Value::Array(all)))
}

async fn save_config(s: &AppState, st: &Stream, config: Value) -> Result<(), ApiError> {
    let (id, cfg) = (st.id.clone(), config.to_string());
    s.store
        .write(move |tx| {
            tx.conn().execute(
                "UPDATE streams SET config = ?2 WHERE id = ?1",
                params![id, cfg],
            )?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// `PATCH /ssf/streams` (enforcer): changes `events_requested` or `description`.
pub async fn update(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    replace_or_update(s, caller, body, false).await
}

/// `PUT /ssf/streams` (enforcer): replaces the configuration (delivery included).
pub async fn replace(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    replace_or_update(s, caller, body, true).await
}

async fn replace_or_update(
    s: Arc<AppState>,
    caller: Caller,
    body: Bytes,
    replace: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Enforcer, Role::Admin])?;
    let req: StreamRequest = parse_body(&body)?;
    let id = req
        .stream_id
        .clone()
        .ok_or_else(|| ApiError::bad_request("stream_id: required"))?;
    let st = load_managed(&s, &caller, &id)?;
    let mut merged = StreamRequest {
        delivery: req.delivery.clone().or_else(|| {
            if replace {
                None
            } else {
                st.config.get("delivery").cloned()
            }
        }),
        events_requested: req.events_requested.clone(),
        description: req.description.clone(),
        stream_id: None,
    };
    if !replace && merged.events_requested.is_none() {
        merged.events_requested = serde_json::from_value(
            st.config
                .get("events_requested")
                .cloned()
                .unwrap_or(Value::Null),
        )
        .ok();
    }
    let config = build_config(&s, &id, &merged)?;
    let now_push = config.pointer("/delivery/method").and_then(Value::as_str) == Some(PUSH);
    save_config(&s, &st, config).await?;
    // Switched to push (or re-pointed): delivery starts (a running task
    // picks up the new configuration by itself).
    if now_push {
        crate::push::spawn(Arc::clone(&s), st.id.clone(), st.tenant.clone());
    }
    Ok(Json(view(&load_managed(&s, &caller, &id)?)))
}

/// `DELETE /ssf/streams?stream_id=` (enforcer).
pub async fn delete(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<StreamQuery>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Enforcer, Role::Admin])?;
    let id = q
        .stream_id
        .ok_or_else(|| ApiError::bad_request("stream_id: required"))?;
    let st = load_managed(&s, &caller, &id)?;
    let tenant = st.tenant.clone();
    s.store
        .write(move |tx| {
            tx.conn()
                .execute("DELETE FROM streams WHERE id = ?1", params![st.id])?;
            tx.audit(
                Some(&tenant),
                "stream_deleted",
                None,
                json!({"stream": st.id}),
            )?;
            Ok(())
        })
        .await?;
    s.signals.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /ssf/status?stream_id=`.
pub async fn status(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Enforcer, Role::Admin])?;
    let st = load_managed(&s, &caller, q.stream_id.as_deref().unwrap_or_default())?;
    let mut v = json!({"stream_id": st.id, "status": st.status});
    if let (Some(o), Some(r)) = (v.as_object_mut(), &st.reason) {
        o.insert("reason".into(), json!(r));
    }
    Ok(Json(v))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    stream_id: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /ssf/status`: `enabled`, `paused` (signals kept for later) or
/// `disabled` (nothing delivered).
pub async fn set_status(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Enforcer, Role::Admin])?;
    let u: StatusUpdate = parse_body(&body)?;
    if !matches!(u.status.as_str(), "enabled" | "paused" | "disabled") {
        return Err(ApiError::bad_request(
            "status: must be enabled, paused or disabled",
        ));
    }
    let st = load_managed(&s, &caller, &u.stream_id)?;
    let mut config = st.config.clone();
    if let Some(o) = config.as_object_mut() {
        match &u.reason {
            Some(r) => o.insert("status_reason".into(), json!(r)),
            None => o.remove("status_reason"),
        };
    }
    let (id, status, tenant, reason, cfg) = (
        st.id.clone(),
        u.status.clone(),
        st.tenant.clone(),
        u.reason.clone(),
        config.to_string(),
    );
    s.store
        .write(move |tx| {
            tx.conn().execute(
                "UPDATE streams SET status = ?2, config = ?3 WHERE id = ?1",
                params![id, status, cfg],
            )?;
            tx.audit(
                Some(&tenant),
                "stream_status",
                None,
                json!({"stream": id, "status": status, "reason": reason}),
            )?;
            Ok(())
        })
        .await?;
    s.signals.notify_waiters();
    Ok(Json(json!({"stream_id": st.id, "status": u.status})))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectChange {
    stream_id: String,
    subject: Value,
    #[serde(default)]
    verified: Option<bool>,
}

async fn change_subjects(
    s: Arc<AppState>,
    caller: Caller,
    body: Bytes,
    add: bool,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Enforcer, Role::Admin])?;
    let c: SubjectChange = parse_body(&body)?;
    let _ = c.verified;
    let st = load_managed(&s, &caller, &c.stream_id)?;
    let mut config = st.config.clone();
    let mut subjects: Vec<Value> = config
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    subjects.retain(|x| x != &c.subject);
    if add {
        subjects.push(c.subject);
    }
    if let Some(o) = config.as_object_mut() {
        o.insert("subjects".into(), Value::Array(subjects));
    }
    save_config(&s, &st, config).await?;
    Ok(if add {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    })
}

/// `POST /ssf/subjects/add`: recorded on the stream. Streams carry every
/// signal of the tenant regardless (so that sequence gaps stay detectable);
/// receivers filter.
pub async fn add_subject(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    change_subjects(s, caller, body, true).await
}

/// `POST /ssf/subjects/remove`.
pub async fn remove_subject(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    change_subjects(s, caller, body, false).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    stream_id: String,
    #[serde(default)]
    state: Option<String>,
}

/// `POST /ssf/verify`: a verification event (SSF 1.0 §8.1.4) follows on
/// this stream only, with the receiver's `state`. A second request before
/// delivery replaces the first.
pub async fn verify(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Enforcer, Role::Admin])?;
    let v: Verify = parse_body(&body)?;
    let st = load_managed(&s, &caller, &v.stream_id)?;
    let tenant = st.tenant.clone();
    s.store
        .write(move |tx| {
            let now = tx.now_ms();
            tx.conn().execute(
                "INSERT INTO stream_verifications (stream, state, requested_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(stream) DO UPDATE SET state = excluded.state, requested_ms = excluded.requested_ms",
                params![st.id, v.state, now],
            )?;
            tx.audit(Some(&tenant), "stream_verification_requested", None, json!({"stream": st.id}))?;
            Ok(())
        })
        .await?;
    s.signals.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// Takes the stream's pending verification, if any: its SET and `jti`.
pub async fn take_verification(
    s: &AppState,
    stream: &str,
    aud: &str,
) -> Result<Option<(String, String)>, ApiError> {
    // Asked on every poll and push round: a read first, the writer only
    // when one is pending.
    let waiting = s.store.read(|c| {
        Ok(c.query_row(
            "SELECT EXISTS (SELECT 1 FROM stream_verifications WHERE stream = ?1)",
            params![stream],
            |r| r.get::<_, bool>(0),
        )?)
    })?;
    if !waiting {
        return Ok(None);
    }
    let id = stream.to_owned();
    let pending: Option<Option<String>> = s
        .store
        .write(move |tx| {
            let state: Option<Option<String>> = tx
                .conn()
                .query_row(
                    "SELECT state FROM stream_verifications WHERE stream = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            if state.is_some() {
                tx.conn().execute(
                    "DELETE FROM stream_verifications WHERE stream = ?1",
                    params![id],
                )?;
            }
            Ok(state)
        })
        .await?;
    Ok(pending.map(|state| {
        signals::verification_set(&s.authority(), &s.issuer, aud, stream, state.as_deref())
    }))
}

/// Whether a stream delivers a stored signal of this kind: the receiver's
/// `events_requested` decides (every kind by default).
#[must_use]
pub fn delivers(config: &Value, kind: &str) -> bool {
    let uri = event_uri(kind);
    config
        .get("events_delivered")
        .and_then(Value::as_array)
        .is_none_or(|d| d.iter().any(|e| e.as_str() == Some(uri.as_str())))
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    #[serde(default)]
    max_events: Option<i64>,
    #[serde(default)]
    return_immediately: Option<bool>,
    #[serde(default)]
    ack: Vec<String>,
    /// Extension: every SET up to and including this one is acknowledged
    /// (what a receiver that resynchronised from a snapshot knows).
    #[serde(default, rename = "ack_through")]
    ack_through: Option<String>,
    #[serde(default)]
    set_errs: Option<Map<String, Value>>,
    /// Extension: how long to wait for a signal, at most 10 s.
    #[serde(default, rename = "timeout_secs")]
    timeout_secs: Option<f64>,
}

/// `POST /ssf/poll/{stream_id}` (RFC 8936): acknowledges, then returns the
/// unacknowledged SETs in order (long polling unless `returnImmediately`).
pub async fn poll(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    caller.require(&[Role::Enforcer])?;
    let p: Poll = if body.is_empty() {
        Poll::default()
    } else {
        parse_body(&body)?
    };
    let st = load_managed(&s, &caller, &id)?;
    if st.status != "enabled" {
        // A paused or disabled stream delivers nothing: the answer says so
        // (an empty answer would count as contact and keep the poller fresh).
        return Err(ApiError::conflict(
            "stream_not_enabled",
            format!("the stream is {}", st.status),
        ));
    }
    if st
        .config
        .pointer("/delivery/method")
        .and_then(Value::as_str)
        != Some(POLL)
    {
        return Err(ApiError::conflict(
            "conflict",
            "the stream is delivered by push",
        ));
    }
    if let Some(errs) = &p.set_errs
        && !errs.is_empty()
    {
        let errors = serde_json::Value::Object(errs.clone()).to_string();
        tracing::warn!(stream = %id, %errors, "receiver reported SET errors");
    }
    // RFC 8936 acknowledgements are per `jti`; `ack_through` (extension)
    // acknowledges everything up to one. Nothing beyond what exists can have
    // been delivered: acknowledging ahead would skip signals never sent.
    let mut acked: Vec<i64> = Vec::with_capacity(p.ack.len());
    for j in &p.ack {
        match signals::seq_of(j) {
            // This tenant's jti (or the bare `sig-<seq>`), not another's.
            Some(seq) if *j == signals::jti(&st.tenant, seq) || *j == format!("sig-{seq}") => {
                acked.push(seq);
            }
            // A verification SET (not in the sequence) needs no ack.
            None if j.starts_with("verification-") => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "ack: `{j}` is not a jti of this stream"
                )));
            }
        }
    }
    let through = match &p.ack_through {
        Some(j) => Some(signals::seq_of(j).ok_or_else(|| {
            ApiError::bad_request(format!("ack_through: `{j}` is not a jti of this stream"))
        })?),
        None => None,
    };
    let cursor = if acked.is_empty() && through.is_none() {
        st.cursor
    } else {
        let tenant = st.tenant.clone();
        let head = s.store.read(|c| Ok(signals::head(c, &tenant)?))?;
        if let Some(beyond) = acked
            .iter()
            .chain(through.iter())
            .copied()
            .find(|a| *a > head)
        {
            return Err(ApiError::bad_request(format!(
                "ack: `{}` is beyond the last signal delivered (`{}`)",
                signals::jti(&st.tenant, beyond),
                signals::jti(&st.tenant, head)
            )));
        }
        let sid = st.id.clone();
        let from = st.cursor;
        s.store
            .write(move |tx| {
                let start = from.max(through.unwrap_or(0));
                Ok(acknowledge(tx, &sid, start, &acked)?)
            })
            .await?
    };
    let mut cursor = cursor;
    let max = p.max_events.unwrap_or(100).clamp(0, 1000);
    let wait = if p.return_immediately.unwrap_or(false) || max == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(
            p.timeout_secs
                .unwrap_or(MAX_WAIT.as_secs_f64())
                .clamp(0.0, MAX_WAIT.as_secs_f64()),
        )
    };
    let deadline = tokio::time::Instant::now() + wait;
    let aud = st
        .config
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    loop {
        let notified = s.signals.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if st.status == "enabled" && max > 0 {
            let mut sets: Vec<(String, String)> = Vec::new();
            if let Some((jti, set)) = take_verification(&s, &st.id, &aud).await? {
                sets.push((jti, set));
            }
            let (tenant, sid) = (st.tenant.clone(), st.id.clone());
            let found = s.store.read(|c| {
                let acked: std::collections::HashSet<i64> = {
                    let mut q = c.prepare("SELECT seq FROM stream_acks WHERE stream = ?1")?;
                    let rows = q.query_map(params![sid], |r| r.get(0))?;
                    rows.collect::<Result<_, _>>()?
                };
                // Unacknowledged signals after the cursor, past the ones this
                // stream acknowledged out of order.
                let window = max + 1 + i64::try_from(acked.len()).unwrap_or(0);
                let all = signals::after(c, &tenant, cursor, window)?;
                Ok(all
                    .into_iter()
                    .filter(|g| !acked.contains(&g.seq))
                    .collect::<Vec<_>>())
            })?;
            let (wanted, unwanted): (Vec<_>, Vec<_>) = found
                .into_iter()
                .partition(|g| delivers(&st.config, &g.kind));
            if !unwanted.is_empty() {
                // Kinds the receiver did not request are acknowledged for it
                // (and the cursor moves over them when it can).
                let (sid, seqs, from) = (
                    st.id.clone(),
                    unwanted.iter().map(|g| g.seq).collect::<Vec<_>>(),
                    cursor,
                );
                cursor = s
                    .store
                    .write(move |tx| Ok(acknowledge(tx, &sid, from, &seqs)?))
                    .await?;
            }
            let more = wanted.len() as i64 > max;
            for sig in wanted.iter().take(usize::try_from(max).unwrap_or(0)) {
                sets.push((
                    signals::jti(&st.tenant, sig.seq),
                    signals::to_set(&s.authority(), &s.issuer, &aud, &st.tenant, sig),
                ));
            }
            if !sets.is_empty() {
                return Ok(ordered_sets(&sets, more));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(ordered_sets(&[], false));
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// Records acknowledgements of `seqs` (beyond `from`) for a stream, moves
/// its cursor over every acknowledged signal in a row from `from`, forgets
/// the acknowledgements it passed, and returns the new cursor.
fn acknowledge(
    tx: &mut mandate_store::Tx<'_>,
    stream: &str,
    from: i64,
    seqs: &[i64],
) -> mandate_store::sql::Result<i64> {
    let mut cursor = from;
    for a in seqs.iter().filter(|a| **a > cursor) {
        tx.conn().execute(
            "INSERT INTO stream_acks (stream, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![stream, a],
        )?;
    }
    loop {
        let next: Option<i64> = tx
            .conn()
            .query_row(
                "SELECT seq FROM stream_acks WHERE stream = ?1 AND seq = ?2",
                params![stream, cursor + 1],
                |r| r.get(0),
            )
            .optional()?;
        match next {
            Some(n) => cursor = n,
            None => break,
        }
    }
    tx.conn().execute(
        "DELETE FROM stream_acks WHERE stream = ?1 AND seq <= ?2",
        params![stream, cursor],
    )?;
    tx.conn().execute(
        "UPDATE streams SET cursor = CASE WHEN cursor > ?2 THEN cursor ELSE ?2 END WHERE id = ?1",
        params![stream, cursor],
    )?;
    Ok(cursor)
}

/// The poll answer with `sets` in delivery order (a JSON object's members
/// in the order written; RFC 8936 receivers may process them as listed).
fn ordered_sets(sets: &[(String, String)], more: bool) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let members: Vec<String> = sets
        .iter()
        .map(|(jti, set)| {
            format!(
                "{}:{}",
                Value::String(jti.clone()),
                Value::String(set.clone())
            )
        })
        .collect();
    let body = format!(
        r#"{{"sets":{{{}}},"moreAvailable":{more}}}"#,
        members.join(",")
    );
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `GET /ssf/streams/{id}/snapshot` (enforcer): a consistent view of the
/// tenant's state and the sequence number it reflects, read in one
/// transaction. A receiver installs it, then asks for signals after `cursor`.
pub async fn snapshot(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Enforcer])?;
    let st = load_managed(&s, &caller, &id)?;
    let tenant = st.tenant.clone();
    let snap = s.store.read(|c| {
        c.execute_batch("BEGIN")?;
        let res = (|| -> Result<Value, mandate_store::StoreError> {
            let cursor = signals::head(c, &tenant)?;
            let mut states = Map::new();
            let mut consumed = Vec::new();
            let mut stmt = c.prepare("SELECT id, state, consumed_ms FROM mandates WHERE tenant = ?1")?;
            let rows = stmt.query_map(params![tenant], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))?;
            for row in rows {
                let (mid, state, used) = row?;
                if used.is_some() {
                    consumed.push(json!(mid));
                }
                states.insert(mid, json!(state));
            }
            let mut stmt = c.prepare("SELECT type, subject, occurred_ms FROM events WHERE tenant = ?1 ORDER BY received_ms")?;
            let events: Vec<Value> = stmt
                .query_map(params![tenant], |r| {
                    let at: i64 = r.get(2)?;
                    Ok(json!({"type": r.get::<_, String>(0)?, "subject": r.get::<_, Option<String>>(1)?,
                        "occurred_at": mandate_core::timestamp::UnixTime::from_secs(at.div_euclid(1000)).ok()}))
                })?
                .collect::<Result<_, _>>()?;
            let (facts, _) = crate::routes::facts::read_facts(c, &tenant)?;
            Ok(json!({"cursor": cursor, "state": {"states": states, "consumed": consumed, "events": events, "facts": facts}}))
        })();
        c.execute_batch("COMMIT")?;
        res
    })?;
    Ok(Json(snap))
}
