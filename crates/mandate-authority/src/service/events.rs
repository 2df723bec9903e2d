//! What business events did: the recent ones of a tenant and the mandates
//! each ended or suspended.

use mandate_store::sql::params;
use serde_json::Value;

use super::Result;
use crate::state::AppState;

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

/// The tenant's `limit` most recently received events, newest first, each
/// with the mandates it changed.
///
/// # Errors
/// A store failure.
pub fn recent(s: &AppState, tenant: &str, limit: usize) -> Result<Vec<RecordedEvent>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(s.store.read(|c| {
        let mut st = c.prepare_cached(
            "SELECT idempotency_id, type, subject, occurred_ms FROM events WHERE tenant = ?1 ORDER BY received_ms DESC LIMIT ?2",
        )?;
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
        // A transition made by an event names it in `by` (`event:<id>`).
        let mut st = c.prepare_cached(
            "SELECT mandate_id, kind FROM audit WHERE tenant = ?1 AND kind IN ('completed', 'suspended', 'revoked')
               AND json_extract(record, '$.body.by') = ?2 ORDER BY seq",
        )?;
        for e in &mut events {
            let by = format!("event:{}", e.id);
            e.changed = st
                .query_map(params![tenant, by], |r| {
                    Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get::<_, String>(1)?))
                })?
                .collect::<std::result::Result<_, _>>()?;
        }
        Ok(events)
    })?)
}

/// The tenant's mission facts and their version.
///
/// # Errors
/// A store failure.
pub fn facts(s: &AppState, tenant: &str) -> Result<(Value, i64)> {
    Ok(s.store
        .read(|c| Ok(crate::routes::facts::read_facts(c, tenant)?))?)
}
