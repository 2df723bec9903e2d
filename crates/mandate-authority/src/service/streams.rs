//! Shared Signals streams as the authority keeps them: who owns each, its
//! configuration and status, what its receiver acknowledged, a pending
//! verification, the signals it has not acknowledged yet, and a snapshot a
//! receiver (re)starts from. The SSF wire protocol is in `routes::ssf`,
//! push delivery in `crate::push`.

use std::collections::HashSet;

use mandate_store::sql::{OptionalExtension, params};
use serde_json::{Map, Value, json};

use super::{Error, Result};
use crate::auth::{Caller, Role};
use crate::signals::{self, Signal};
use crate::state::AppState;

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

impl Stream {
    /// Its delivery method (`urn:ietf:rfc:8935` push, `…8936` poll).
    #[must_use]
    pub fn method(&self) -> Option<&str> {
        delivery_method(&self.config)
    }

    /// The audience its SETs are addressed to.
    #[must_use]
    pub fn aud(&self) -> &str {
        self.config
            .get("aud")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The delivery method a stream configuration names.
#[must_use]
pub fn delivery_method(config: &Value) -> Option<&str> {
    config.pointer("/delivery/method").and_then(Value::as_str)
}

/// Loads a stream of the tenant.
///
/// # Errors
/// `not_found` for a missing stream or another tenant's; a store failure.
pub fn load(s: &AppState, tenant: &str, id: &str) -> Result<Stream> {
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
        .ok_or_else(|| Error::not_found("stream"))
}

/// Loads a stream the caller may manage: its creator, or an admin of the
/// tenant. Another enforcer's stream is as unknown as a missing one: an
/// enforcer token handed to an agent runtime cannot pause, re-point or
/// acknowledge a gateway's stream.
///
/// # Errors
/// `not_found`; a store failure.
pub fn load_managed(s: &AppState, caller: &Caller, id: &str) -> Result<Stream> {
    let st = load(s, &caller.tenant, id)?;
    if caller.role == Role::Admin || st.owner == caller.sub {
        Ok(st)
    } else {
        Err(Error::not_found("stream"))
    }
}

/// The streams the caller may manage, oldest first: its own (every stream
/// of the tenant for an admin).
///
/// # Errors
/// A store failure.
pub fn managed(s: &AppState, caller: &Caller) -> Result<Vec<Stream>> {
    let tenant = caller.tenant.clone();
    let ids: Vec<String> = s.store.read(|c| {
        let mut st = c.prepare("SELECT id FROM streams WHERE tenant = ?1 ORDER BY created_ms")?;
        let rows = st.query_map(params![tenant], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    })?;
    Ok(ids
        .iter()
        .filter_map(|id| load_managed(s, caller, id).ok())
        .collect())
}

/// Every stream of every tenant: `(id, tenant, configuration)`.
///
/// # Errors
/// A store failure.
pub fn all(s: &AppState) -> Result<Vec<(String, String, Value)>> {
    let rows: Vec<(String, String, String)> = s.store.read(|c| {
        let mut st = c.prepare("SELECT id, tenant, config FROM streams")?;
        let rows = st.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, tenant, config)| {
            let config = serde_json::from_str(&config).unwrap_or(Value::Null);
            (id, tenant, config)
        })
        .collect())
}

/// Creates a stream owned by the caller that starts at the tenant's current
/// head (a receiver fetches the snapshot to start from a consistent state).
///
/// # Errors
/// A store failure.
pub async fn create(s: &AppState, caller: &Caller, id: &str, config: &Value) -> Result<Stream> {
    let (tenant, owner, id2, cfg) = (
        caller.tenant.clone(),
        caller.sub.clone(),
        id.to_owned(),
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
    load(s, &caller.tenant, id)
}

/// Replaces a stream's configuration.
///
/// # Errors
/// A store failure.
pub async fn save_config(s: &AppState, st: &Stream, config: &Value) -> Result<()> {
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

/// Deletes a stream (audited); its pollers wake up to find it gone.
///
/// # Errors
/// A store failure.
pub async fn delete(s: &AppState, st: Stream) -> Result<()> {
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
    Ok(())
}

/// Sets a stream's status (`enabled`, `paused`, `disabled`) with the reason
/// the caller gave (audited).
///
/// # Errors
/// `malformed` for another status; a store failure.
pub async fn set_status(
    s: &AppState,
    st: &Stream,
    status: &str,
    reason: Option<String>,
) -> Result<()> {
    if !matches!(status, "enabled" | "paused" | "disabled") {
        return Err(Error::Refused(super::Refusal::malformed(
            "status: must be enabled, paused or disabled",
        )));
    }
    let mut config = st.config.clone();
    if let Some(o) = config.as_object_mut() {
        match &reason {
            Some(r) => o.insert("status_reason".into(), json!(r)),
            None => o.remove("status_reason"),
        };
    }
    let (id, status, tenant, cfg) = (
        st.id.clone(),
        status.to_owned(),
        st.tenant.clone(),
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
    Ok(())
}

/// Asks for a verification event on this stream only, carrying the
/// receiver's `state`; a second request before delivery replaces the first.
///
/// # Errors
/// A store failure.
pub async fn request_verification(s: &AppState, st: &Stream, state: Option<String>) -> Result<()> {
    let (tenant, id) = (st.tenant.clone(), st.id.clone());
    s.store
        .write(move |tx| {
            let now = tx.now_ms();
            tx.conn().execute(
                "INSERT INTO stream_verifications (stream, state, requested_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(stream) DO UPDATE SET state = excluded.state, requested_ms = excluded.requested_ms",
                params![id, state, now],
            )?;
            tx.audit(Some(&tenant), "stream_verification_requested", None, json!({"stream": id}))?;
            Ok(())
        })
        .await?;
    s.signals.notify_waiters();
    Ok(())
}

/// Takes the stream's pending verification, if any: its SET and `jti`.
///
/// # Errors
/// A store failure.
pub async fn take_verification(
    s: &AppState,
    stream: &str,
    aud: &str,
) -> Result<Option<(String, String)>> {
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

/// The tenant's last signal's sequence number.
///
/// # Errors
/// A store failure.
pub fn head(s: &AppState, tenant: &str) -> Result<i64> {
    Ok(s.store.read(|c| Ok(signals::head(c, tenant)?))?)
}

/// Up to `limit` signals of the tenant after `cursor`, in order.
///
/// # Errors
/// A store failure.
pub fn after(s: &AppState, tenant: &str, cursor: i64, limit: i64) -> Result<Vec<Signal>> {
    Ok(s.store
        .read(|c| Ok(signals::after(c, tenant, cursor, limit)?))?)
}

/// Up to `max + 1` signals after `cursor` that the stream has not
/// acknowledged (out of order acknowledgements skipped), in order.
///
/// # Errors
/// A store failure.
pub fn unacknowledged(s: &AppState, st: &Stream, cursor: i64, max: i64) -> Result<Vec<Signal>> {
    let (tenant, sid) = (st.tenant.clone(), st.id.clone());
    Ok(s.store.read(|c| {
        let acked: HashSet<i64> = {
            let mut q = c.prepare("SELECT seq FROM stream_acks WHERE stream = ?1")?;
            let rows = q.query_map(params![sid], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let window = max + 1 + i64::try_from(acked.len()).unwrap_or(0);
        let all = signals::after(c, &tenant, cursor, window)?;
        Ok(all
            .into_iter()
            .filter(|g| !acked.contains(&g.seq))
            .collect::<Vec<_>>())
    })?)
}

/// Records acknowledgements of `seqs` beyond `from` and moves the stream's
/// cursor over every acknowledged signal in a row; returns the new cursor.
///
/// # Errors
/// A store failure.
pub async fn acknowledge(s: &AppState, stream: &str, from: i64, seqs: Vec<i64>) -> Result<i64> {
    let sid = stream.to_owned();
    Ok(s.store
        .write(move |tx| Ok(acknowledge_in(tx, &sid, from, &seqs)?))
        .await?)
}

/// Moves a push stream's cursor to `delivered` (never back).
///
/// # Errors
/// A store failure.
pub async fn advance(s: &AppState, stream: &str, delivered: i64) -> Result<()> {
    let sid = stream.to_owned();
    s.store
        .write(move |tx| {
            tx.conn().execute(
                "UPDATE streams SET cursor = CASE WHEN cursor > ?2 THEN cursor ELSE ?2 END WHERE id = ?1",
                params![sid, delivered],
            )?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// In a write job: records acknowledgements of `seqs` (beyond `from`) for a
/// stream, moves its cursor over every acknowledged signal in a row from
/// `from`, forgets the acknowledgements it passed, and returns the cursor.
fn acknowledge_in(
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

/// A consistent view of the tenant's state (each mandate's state, the
/// one-time mandates consumed, business events, facts) and the sequence
/// number it reflects, read in one transaction. A receiver installs it,
/// then asks for signals after `cursor`.
///
/// # Errors
/// A store failure.
pub fn snapshot(s: &AppState, tenant: &str) -> Result<Value> {
    Ok(s.store.read(|c| {
        c.execute_batch("BEGIN")?;
        let res = (|| -> std::result::Result<Value, mandate_store::StoreError> {
            let cursor = signals::head(c, tenant)?;
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
                .collect::<std::result::Result<_, _>>()?;
            let (facts, _) = super::facts::read_facts(c, tenant)?;
            Ok(json!({"cursor": cursor, "state": {"states": states, "consumed": consumed, "events": events, "facts": facts}}))
        })();
        c.execute_batch("COMMIT")?;
        res
    })?)
}
