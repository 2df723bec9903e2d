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

use mandate_store::sql::params;
use mandate_store::{StoreError, Tx};
use serde_json::{Value, json};

/// The prefix of every event type URI.
pub const EVENT_PREFIX: &str = "https://schemas.mandate.dev/secevent/v1/";

/// Every event type this transmitter sends: mandate transitions (`revoked`,
/// `suspended`, `resumed`, `expired`, `completed`, `superseded`), `issued`,
/// `consumed` (a one-time mandate was used), `facts-changed`,
/// `business-event`, the unstored `heartbeat` and `stream-updated`, and
/// `audit-checkpoint`. (Verification uses the SSF type, [`SSF_VERIFICATION`].)
pub const EVENT_TYPES: [&str; 13] = [
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
    "heartbeat",
    "stream-updated",
    "audit-checkpoint",
];

/// The SSF 1.0 verification event type: sent on the one stream whose
/// receiver asked for it (`POST /ssf/verify`), not stored in the sequence.
pub const SSF_VERIFICATION: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// The URI of an event type.
#[must_use]
pub fn event_uri(kind: &str) -> String {
    format!("{EVENT_PREFIX}{kind}")
}

/// The SSF verification SET for `stream_id` (fresh `jti`; `sub_id` is the
/// stream, as SSF 1.0 §8.1.4 says; `state` echoed when the receiver gave one).
#[must_use]
pub fn verification_set(
    key: &mandate_core::keys::SigningKey,
    issuer: &str,
    aud: &str,
    stream_id: &str,
    state: Option<&str>,
) -> (String, String) {
    let jti = fresh_jti("verification");
    let event = match state {
        Some(s) => json!({"state": s}),
        None => json!({}),
    };
    let claims = json!({
        "iss": issuer,
        "iat": crate::auth::now_secs(),
        "jti": jti,
        "aud": aud,
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": { SSF_VERIFICATION: event },
    });
    (
        jti,
        mandate_core::jws::sign(key, "secevent+jwt", claims.to_string().as_bytes()),
    )
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
    conn: &mandate_store::sql::Connection,
    tenant: &str,
    after: i64,
    limit: i64,
) -> mandate_store::sql::Result<Vec<Signal>> {
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
pub fn head(
    conn: &mandate_store::sql::Connection,
    tenant: &str,
) -> mandate_store::sql::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM signals WHERE tenant = ?1",
        params![tenant],
        |r| r.get(0),
    )
}

/// The `jti` of a tenant's stored signal: `sig-<seq>.<tenant tag>`, unique
/// per issuer (two tenants' signal 1 differ), the sequence number first so
/// that receivers can read it.
#[must_use]
pub fn jti(tenant: &str, seq: i64) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(tenant.as_bytes());
    let tag = hex::encode(digest.get(..6).unwrap_or_default());
    format!("sig-{seq}.{tag}")
}

/// Parses a `jti` back to its sequence number (`sig-<seq>.<tag>`, or the
/// bare `sig-<seq>` that receivers may acknowledge with).
#[must_use]
pub fn seq_of(jti: &str) -> Option<i64> {
    let rest = jti.strip_prefix("sig-")?;
    rest.split('.').next()?.parse().ok()
}

/// A fresh `jti` for a SET that is not stored (heartbeat, stream update):
/// 128 random bits, never the `jti` of another SET.
fn fresh_jti(kind: &str) -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    format!("{kind}-{}", hex::encode(b))
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
        "jti": if matches!(s.kind.as_str(), "heartbeat" | "stream-updated") {
            fresh_jti(&s.kind)
        } else {
            jti(tenant, s.seq)
        },
        "aud": aud,
        "txn": s.seq.to_string(),
        "sub_id": sub_id,
        "events": { event_uri(&s.kind): event },
    });
    mandate_core::jws::sign(key, "secevent+jwt", claims.to_string().as_bytes())
}

#[cfg(test)]
mod jti_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(set: &str) -> Value {
        mandate_core::jws::unverified_payload(set).unwrap()
    }

    #[test]
    fn every_set_has_a_jti_of_its_own() {
        let key = mandate_core::keys::SigningKey::from_seed(
            mandate_core::keys::Algorithm::EdDSA,
            [1; 32],
        );
        let sig = |kind: &str| Signal {
            seq: 1,
            kind: kind.into(),
            mandate_id: None,
            body: json!({}),
            at_ms: 0,
        };
        let a = claims(&to_set(&key, "iss", "stream:a", "acme", &sig("revoked")));
        let b = claims(&to_set(&key, "iss", "stream:b", "globex", &sig("revoked")));
        assert_ne!(a["jti"], b["jti"], "two tenants' signal 1");
        let h1 = claims(&to_set(&key, "iss", "stream:a", "acme", &sig("heartbeat")));
        let h2 = claims(&to_set(&key, "iss", "stream:a", "acme", &sig("heartbeat")));
        assert_ne!(h1["jti"], a["jti"], "a heartbeat reuses the last SET's jti");
        assert_ne!(h1["jti"], h2["jti"]);
        assert_eq!(seq_of(a["jti"].as_str().unwrap()), Some(1));
        assert_eq!(seq_of("sig-7"), Some(7));
        assert_eq!(seq_of("heartbeat-00"), None);
    }
}
