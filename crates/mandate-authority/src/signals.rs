//! State changes as Security Event Tokens (RFC 8417) in the style of the
//! OpenID Shared Signals Framework.
//!
//! Every mandate transition, mission-facts change, business event and
//! one-time consumption is recorded, in the same transaction as the change,
//! as a *signal* with a per-tenant sequence number. Every stream of the
//! tenant delivers every signal in order, so the sequence is also the
//! stream's: a receiver that sees `n + 2` after `n` knows it missed one.
//!
//! A signal becomes a SET when delivered: `typ: secevent+jwt`, no `exp`, one
//! event, `sub_id` naming the mandate (opaque format), `txn` the sequence,
//! signed with the authority's key. CAEP defines no mandate lifecycle events,
//! so these are this project's event types:

use mandate_store::{StoreError, Tx};
use rusqlite::params;
use serde_json::{Value, json};

/// The prefix of every event type URI.
pub const EVENT_PREFIX: &str = "https://schemas.mandate.dev/secevent/v1/";

/// Every event type this transmitter sends: mandate transitions (`revoked`,
/// `suspended`, `resumed`, `expired`, `completed`, `superseded`), `issued`,
/// `consumed` (a one-time mandate was used), `facts-changed`,
/// `business-event`, and `verification` (a stream's verification event).
pub const EVENT_TYPES: [&str; 14] = [
    "issued",
    "suspended",
    "resumed",
    "revoked",
    "expired",
    "completed",
    "superseded",
    "consumed",
    "facts-changed",
    "business-event",
    "verification",
    "heartbeat",
    "stream-updated",
    "audit-checkpoint",
];

/// The URI of an event type.
#[must_use]
pub fn event_uri(kind: &str) -> String {
    format!("{EVENT_PREFIX}{kind}")
}

/// Records a signal in the current write job; returns its sequence number.
///
/// # Errors
/// When the insert fails.
pub fn emit(
    tx: &mut Tx<'_>,
    tenant: &str,
    kind: &str,
    mandate_id: Option<&str>,
    body: &Value,
) -> Result<i64, StoreError> {
    let seq: i64 = tx.conn().query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM signals WHERE tenant = ?1",
        params![tenant],
        |r| r.get(0),
    )?;
    let now = tx.now_ms();
    tx.conn().execute(
        "INSERT INTO signals (tenant, seq, kind, mandate_id, body, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![tenant, seq, kind, mandate_id, body.to_string(), now],
    )?;
    Ok(seq)
}

/// One stored signal.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Per-tenant (and per-stream) sequence.
    pub seq: i64,
    /// Event kind (see [`EVENT_TYPES`]).
    pub kind: String,
    /// The mandate, when it is about one.
    pub mandate_id: Option<String>,
    /// Details.
    pub body: Value,
    /// When it was committed (ms).
    pub at_ms: i64,
}

/// Signals after `after`, in order, at most `limit`.
///
/// # Errors
/// When the query fails.
pub fn after(
    conn: &rusqlite::Connection,
    tenant: &str,
    after: i64,
    limit: i64,
) -> rusqlite::Result<Vec<Signal>> {
    let mut stmt = conn.prepare(
        "SELECT seq, kind, mandate_id, body, at_ms FROM signals WHERE tenant = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![tenant, after, limit], |r| {
        let body: String = r.get(3)?;
        Ok(Signal {
            seq: r.get(0)?,
            kind: r.get(1)?,
            mandate_id: r.get(2)?,
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
            at_ms: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// The latest sequence number of a tenant.
///
/// # Errors
/// When the query fails.
pub fn head(conn: &rusqlite::Connection, tenant: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM signals WHERE tenant = ?1",
        params![tenant],
        |r| r.get(0),
    )
}

/// The SET's `jti` for a sequence number.
#[must_use]
pub fn jti(seq: i64) -> String {
    format!("sig-{seq}")
}

/// Parses a `jti` back to its sequence number.
#[must_use]
pub fn seq_of(jti: &str) -> Option<i64> {
    jti.strip_prefix("sig-")?.parse().ok()
}

/// Signs a signal as a SET for a stream's audience.
#[must_use]
pub fn to_set(
    key: &mandate_core::keys::SigningKey,
    issuer: &str,
    aud: &str,
    tenant: &str,
    s: &Signal,
) -> String {
    let mut event = s.body.clone();
    if let Some(obj) = event.as_object_mut() {
        obj.insert("seq".into(), json!(s.seq));
    }
    let sub_id = match &s.mandate_id {
        Some(id) => json!({"format": "opaque", "id": id}),
        None => json!({"format": "opaque", "id": format!("tenant:{tenant}")}),
    };
    let claims = json!({
        "iss": issuer,
        "iat": s.at_ms.div_euclid(1000),
        "jti": jti(s.seq),
        "aud": aud,
        "txn": s.seq.to_string(),
        "sub_id": sub_id,
        "events": { event_uri(&s.kind): event },
    });
    mandate_core::jws::sign(key, "secevent+jwt", claims.to_string().as_bytes())
}
