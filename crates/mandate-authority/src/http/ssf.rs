//! The Shared Signals transmitter: metadata, stream management, poll
//! delivery (RFC 8936), push delivery (RFC 8935, in `crate::push`), and a
//! snapshot a receiver (re)starts from. What a stream stores is in
//! [`crate::service::streams`]; this is the wire protocol.
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
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, parse_body};
use crate::service::new_id;
use crate::service::streams;
pub use crate::service::streams::{Stream, load, load_managed, take_verification};
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
    let st = streams::create(&s, &caller, &id, &config).await?;
    if st.method() == Some(PUSH) {
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
    let all: Vec<Value> = streams::managed(&s, &caller)?.iter().map(view).collect();
    Ok(Json(Value::Array(all)))
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
    let now_push = streams::delivery_method(&config) == Some(PUSH);
    streams::save_config(&s, &st, &config).await?;
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
    streams::delete(&s, st).await?;
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
    let st = load_managed(&s, &caller, &u.stream_id)?;
    streams::set_status(&s, &st, &u.status, u.reason.clone()).await?;
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
    streams::save_config(&s, &st, &config).await?;
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
    streams::request_verification(&s, &st, v.state).await?;
    Ok(StatusCode::NO_CONTENT)
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
    if st.method() != Some(POLL) {
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
        let head = streams::head(&s, &st.tenant)?;
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
        let start = st.cursor.max(through.unwrap_or(0));
        streams::acknowledge(&s, &st.id, start, acked).await?
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
    let aud = st.aud().to_owned();
    loop {
        let notified = s.signals.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if st.status == "enabled" && max > 0 {
            let mut sets: Vec<(String, String)> = Vec::new();
            if let Some((jti, set)) = take_verification(&s, &st.id, &aud).await? {
                sets.push((jti, set));
            }
            // Unacknowledged signals after the cursor, past the ones this
            // stream acknowledged out of order.
            let found = streams::unacknowledged(&s, &st, cursor, max)?;
            let (wanted, unwanted): (Vec<_>, Vec<_>) = found
                .into_iter()
                .partition(|g| delivers(&st.config, &g.kind));
            if !unwanted.is_empty() {
                // Kinds the receiver did not request are acknowledged for it
                // (and the cursor moves over them when it can).
                let seqs = unwanted.iter().map(|g| g.seq).collect::<Vec<_>>();
                cursor = streams::acknowledge(&s, &st.id, cursor, seqs).await?;
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
    let snap = streams::snapshot(&s, &st.tenant)?;
    Ok(Json(snap))
}
