//! SQL for mandates, requests, facts and events, shared by write jobs and
//! reads.

use std::sync::Arc;

use mandate_core::id::MandateId;
use mandate_core::model::MandateClaims;
use mandate_core::state::MandateState;
use mandate_store::sql::{Connection, OptionalExtension, Row, params};
use mandate_store::{StoreError, Tx};
use serde_json::json;

use crate::registry::MandateRecord;

/// The name of a state.
#[must_use]
pub fn state_name(s: MandateState) -> &'static str {
    match s {
        MandateState::Pending => "pending",
        MandateState::Active => "active",
        MandateState::Suspended => "suspended",
        MandateState::Revoked => "revoked",
        MandateState::Expired => "expired",
        MandateState::Completed => "completed",
        MandateState::Superseded => "superseded",
        MandateState::Unknown => "unknown",
    }
}

/// Whether a state is terminal.
#[must_use]
pub fn is_terminal(s: MandateState) -> bool {
    matches!(
        s,
        MandateState::Revoked
            | MandateState::Expired
            | MandateState::Completed
            | MandateState::Superseded
            | MandateState::Unknown
    )
}

const MANDATE_COLUMNS: &str =
    "id, tenant, principal, agent_sub, parent_id, state, jws, claims, consumed_ms";

fn row_to_record(r: &Row<'_>) -> mandate_store::sql::Result<Option<MandateRecord>> {
    let id: String = r.get(0)?;
    let claims: String = r.get(7)?;
    let Ok(id) = MandateId::new(id) else {
        return Ok(None);
    };
    let Ok(claims) = serde_json::from_str::<MandateClaims>(&claims) else {
        return Ok(None);
    };
    let parent: Option<String> = r.get(4)?;
    let state: String = r.get(5)?;
    let jws: String = r.get(6)?;
    let consumed: Option<i64> = r.get(8)?;
    Ok(Some(MandateRecord {
        id,
        tenant: r.get(1)?,
        principal: r.get(2)?,
        agent_sub: r.get(3)?,
        parent: parent.and_then(|p| MandateId::new(p).ok()),
        state: MandateState::from_name(&state),
        claims: Arc::new(claims),
        chain: Arc::from(jws),
        consumed: consumed.is_some(),
    }))
}

/// Every mandate.
///
/// # Errors
/// When the query fails.
pub fn all_mandates(conn: &Connection) -> mandate_store::sql::Result<Vec<MandateRecord>> {
    let mut stmt = conn.prepare(&format!("SELECT {MANDATE_COLUMNS} FROM mandates"))?;
    let rows = stmt.query_map(params![], row_to_record)?;
    Ok(rows
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}

/// One mandate.
///
/// # Errors
/// When the query fails.
pub fn mandate(conn: &Connection, id: &str) -> mandate_store::sql::Result<Option<MandateRecord>> {
    conn.query_row(
        &format!("SELECT {MANDATE_COLUMNS} FROM mandates WHERE id = ?1"),
        params![id],
        row_to_record,
    )
    .optional()
    .map(Option::flatten)
}

/// A new mandate to record.
#[derive(Debug, Clone)]
pub struct NewMandate<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Principal subject.
    pub principal: &'a str,
    /// Agent subject.
    pub agent_sub: &'a str,
    /// Parent id.
    pub parent: Option<&'a str>,
    /// The presented chain ending in it.
    pub chain: &'a str,
    /// Its claims.
    pub claims: &'a MandateClaims,
    /// Audit kind (`issued`, `child_registered`, `discovery_granted`, `amended`).
    pub kind: &'a str,
    /// Extra audit details.
    pub details: serde_json::Value,
}

/// Inserts a mandate (active) and its audit record.
///
/// # Errors
/// When the insert fails (a duplicate id included).
pub fn insert_mandate(tx: &mut Tx<'_>, m: &NewMandate<'_>) -> Result<(), StoreError> {
    let claims =
        serde_json::to_string(m.claims).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let id = m.claims.mandate_id.as_str();
    let now = tx.now_ms();
    tx.conn().execute(
        "INSERT INTO mandates (id, tenant, principal, agent_sub, parent_id, state, jws, claims, hard_expiry, one_time, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, ?8, ?9, ?10)",
        params![id, m.tenant, m.principal, m.agent_sub, m.parent, m.chain, claims, m.claims.lifecycle.hard_expiry.secs(), m.claims.lifecycle.one_time, now],
    )?;
    tx.audit(
        Some(m.tenant),
        m.kind,
        Some(id),
        json!({
            "principal": m.principal, "agent": m.claims.agent.id, "agent_instance": m.claims.agent.instance,
            "purpose": m.claims.purpose, "grant_ref": m.claims.principal.grant_ref, "parent": m.parent,
            "hard_expiry": m.claims.lifecycle.hard_expiry, "details": m.details,
        }),
    )?;
    crate::signals::emit(
        tx,
        m.tenant,
        "issued",
        Some(id),
        &json!({"mandate_id": id, "state": "active", "parent": m.parent}),
    )?;
    Ok(())
}

/// Moves a mandate to `to`, writing the audit record; a terminal move
/// cascades to every known descendant still live. Returns every id changed.
/// A mandate already in `to` is left alone (repeating is harmless); a move
/// out of a terminal state is refused with `409`.
///
/// # Errors
/// [`StoreError::Refused`]: not found for an unknown id, a conflict for a
/// move out of a terminal state.
pub fn transition(
    tx: &mut Tx<'_>,
    id: &str,
    to: MandateState,
    by: &str,
    reason: &str,
) -> Result<Vec<MandateId>, StoreError> {
    let current: Option<(String, String)> = tx
        .conn()
        .query_row(
            "SELECT state, tenant FROM mandates WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((current, tenant)) = current else {
        return Err(StoreError::not_found(format!("mandate `{id}`")));
    };
    let from = MandateState::from_name(&current);
    if from == to {
        return Ok(Vec::new());
    }
    if is_terminal(from) {
        return Err(StoreError::conflict(
            "terminal",
            format!(
                "mandate `{id}` is {current}: it cannot become {}",
                state_name(to)
            ),
        ));
    }
    let mut changed = Vec::new();
    set_state(tx, &tenant, id, from, to, by, reason, None, &mut changed)?;
    Ok(changed)
}

#[allow(clippy::too_many_arguments, reason = "one audit record's fields")]
fn set_state(
    tx: &mut Tx<'_>,
    tenant: &str,
    id: &str,
    from: MandateState,
    to: MandateState,
    by: &str,
    reason: &str,
    cascade_from: Option<&str>,
    changed: &mut Vec<MandateId>,
) -> Result<(), StoreError> {
    let now = tx.now_ms();
    let terminal = is_terminal(to);
    tx.conn().execute(
        "UPDATE mandates SET state = ?2, ended_ms = CASE WHEN ?3 THEN ?4 ELSE ended_ms END, ended_by = CASE WHEN ?3 THEN ?5 ELSE ended_by END WHERE id = ?1",
        params![id, state_name(to), terminal, now, by],
    )?;
    let kind = match (from, to) {
        (MandateState::Suspended, MandateState::Active) => "resumed",
        _ => state_name(to),
    };
    tx.audit(
        Some(tenant),
        kind,
        Some(id),
        json!({"from": state_name(from), "by": by, "reason": reason, "cascade_from": cascade_from}),
    )?;
    crate::signals::emit(
        tx,
        tenant,
        kind,
        Some(id),
        &json!({"mandate_id": id, "state": state_name(to), "previous_state": state_name(from), "reason": reason, "cascade_from": cascade_from}),
    )?;
    if let Ok(mid) = MandateId::new(id) {
        changed.push(mid);
    }
    if terminal {
        for child in crate::registry::children(tx.conn(), id)? {
            let st: String = tx.conn().query_row(
                "SELECT state FROM mandates WHERE id = ?1",
                params![child],
                |r| r.get(0),
            )?;
            let cs = MandateState::from_name(&st);
            if !is_terminal(cs) {
                set_state(
                    tx,
                    tenant,
                    &child,
                    cs,
                    to,
                    by,
                    reason,
                    Some(cascade_from.unwrap_or(id)),
                    changed,
                )?;
            }
        }
    }
    Ok(())
}

/// The first mandate in `id`'s lineage (itself, then each parent up to the
/// root) that is not active, with its state; `None` when all are active.
/// Read inside the write transaction, so no change can slip between the
/// check and the write that depends on it.
///
/// # Errors
/// When a query fails.
pub fn first_inactive_in_lineage(
    conn: &Connection,
    id: &str,
) -> mandate_store::sql::Result<Option<(String, String)>> {
    let mut next = Some(id.to_owned());
    let mut hops = 0;
    while let Some(cur) = next {
        let row: Option<(String, Option<String>)> = conn
            .query_row(
                "SELECT state, parent_id FROM mandates WHERE id = ?1",
                params![cur],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((state, parent)) = row else {
            return Ok(Some((cur, "unknown".into())));
        };
        if state != "active" {
            return Ok(Some((cur, state)));
        }
        hops += 1;
        if hops > 64 {
            return Ok(Some((cur, "unknown".into())));
        }
        next = parent;
    }
    Ok(None)
}
