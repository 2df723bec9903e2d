//! Mission facts: a JSON document per tenant that conditions read. A change
//! re-evaluates the conditions of live mandates at once and applies their
//! `on_failure` (suspend and notify, or revoke) — not only at the next action.

use mandate_core::condition::{CompiledCondition, Facts, Outcome};
use mandate_core::id::MandateId;
use mandate_core::model::OnFailure;
use mandate_core::state::MandateState;
use mandate_store::sql::{OptionalExtension, params};
use serde_json::{Value, json};

use super::{Error, Result};
use crate::auth::{Caller, Role};
use crate::state::AppState;
use crate::store;

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Reads a tenant's facts in a write job.
///
/// # Errors
/// A store failure.
pub fn read_facts(
    conn: &mandate_store::sql::Connection,
    tenant: &str,
) -> mandate_store::sql::Result<(Value, i64)> {
    let row: Option<(String, i64)> = conn
        .query_row(
            "SELECT doc, version FROM facts WHERE tenant = ?1",
            params![tenant],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((doc, v)) => (serde_json::from_str(&doc).unwrap_or_else(|_| json!({})), v),
        None => (json!({}), 0),
    })
}

/// Writes a tenant's facts in a write job (after checking they convert).
///
/// # Errors
/// `invalid_facts` when the document cannot be used as facts; a store
/// failure.
pub fn write_facts(
    tx: &mut mandate_store::Tx<'_>,
    tenant: &str,
    doc: &Value,
    by: &str,
    cause: &str,
) -> std::result::Result<i64, mandate_store::StoreError> {
    Facts::from_json(doc.clone())
        .map_err(|e| mandate_store::StoreError::invalid("invalid_facts", e.to_string()))?;
    let (_, version) = read_facts(tx.conn(), tenant)?;
    let next = version + 1;
    tx.conn().execute(
        "INSERT INTO facts (tenant, doc, version) VALUES (?1, ?2, ?3) ON CONFLICT(tenant) DO UPDATE SET doc = ?2, version = ?3",
        params![tenant, doc.to_string(), next],
    )?;
    tx.audit(
        Some(tenant),
        "facts_changed",
        None,
        json!({"version": next, "by": by, "cause": cause, "facts": doc}),
    )?;
    crate::signals::emit(
        tx,
        tenant,
        "facts-changed",
        None,
        &json!({"version": next, "facts": doc}),
    )?;
    Ok(next)
}

/// After a facts change: evaluates every live mandate's conditions against
/// the new facts (conditions that need an action cannot be judged now and
/// are left to the next decision) and applies `on_failure` for those that
/// are false. Returns the mandates changed.
///
/// # Errors
/// A store failure.
pub async fn reevaluate(s: &AppState, tenant: &str) -> Result<Vec<MandateId>> {
    let (snapshot, live) = s.with_registry(|r| {
        // A condition is enforced on the mandate that introduced it; its
        // descendants repeat it and end with it through their chain.
        let live: Vec<_> = r
            .in_tenant(tenant)
            .filter(|m| m.state == MandateState::Active)
            .map(|m| {
                let inherited: Vec<_> = m
                    .parent
                    .as_ref()
                    .and_then(|p| r.get(tenant, p.as_str()))
                    .map(|p| p.claims.conditions.clone())
                    .unwrap_or_default();
                (
                    m.id.clone(),
                    m.principal.clone(),
                    m.claims.clone(),
                    inherited,
                )
            })
            .collect();
        (r.snapshot(tenant), live)
    })?;
    let mut actions: Vec<(MandateId, String, OnFailure, String)> = Vec::new();
    for (id, principal, claims, inherited) in live {
        for c in claims.conditions.iter().filter(|c| !inherited.contains(c)) {
            let Ok(compiled) = CompiledCondition::new(c) else {
                continue;
            };
            if compiled.evaluate(&snapshot.facts().scope()) == Outcome::False
                && c.on_failure != OnFailure::Deny
            {
                actions.push((
                    id.clone(),
                    principal.clone(),
                    c.on_failure,
                    c.id.to_string(),
                ));
                break;
            }
        }
    }
    if actions.is_empty() {
        return Ok(Vec::new());
    }
    let tenant2 = tenant.to_owned();
    let changed = s
        .store
        .write(move |tx| {
            let mut changed = Vec::new();
            for (id, principal, on_failure, condition) in actions {
                let st: String = tx.conn().query_row("SELECT state FROM mandates WHERE id = ?1", params![id.as_str()], |r| r.get(0))?;
                if st != "active" {
                    continue;
                }
                let to = if on_failure == OnFailure::Revoke { MandateState::Revoked } else { MandateState::Suspended };
                changed.extend(store::transition(tx, id.as_str(), to, "authority", &format!("condition_failed:{condition}"))?);
                let note = json!({"mandate_id": id, "condition": condition, "action": store::state_name(to)});
                let now = tx.now_ms();
                tx.conn().execute(
                    "INSERT INTO notifications (tenant, principal, mandate_id, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![tenant2, principal, id.as_str(), note.to_string(), now],
                )?;
                tx.audit(Some(&tenant2), "principal_notified", Some(id.as_str()), json!({"principal": principal, "notice": note}))?;
            }
            Ok(changed)
        })
        .await?;
    for _ in &changed {
        s.metrics.transition("condition_enforced");
    }
    s.refresh(&changed)?;
    Ok(changed)
}

/// Sets the tenant's facts (admin): `doc` computes the new document from the
/// current one, in the write's transaction. Returns the document, its
/// version and the mandates whose conditions the change ended or suspended.
///
/// # Errors
/// `forbidden` for any caller but an admin (the refusal is audited);
/// `invalid_facts`; a store failure.
pub async fn set(
    s: &AppState,
    caller: &Caller,
    doc: impl FnOnce(Value) -> Value + Send + 'static,
) -> Result<(Value, i64, Vec<MandateId>)> {
    if caller.role != Role::Admin {
        return Err(super::requests::refuse(s, caller, "set mission facts", None).await);
    }
    let (tenant, by) = (caller.tenant.clone(), caller.sub.clone());
    let (doc, version) = s
        .store
        .write(move |tx| {
            let (current, _) = read_facts(tx.conn(), &tenant)?;
            let next = doc(current);
            let v = write_facts(tx, &tenant, &next, &by, "api")?;
            Ok((next, v))
        })
        .await?;
    let facts = Facts::from_json(doc.clone()).map_err(Error::internal)?;
    s.with_registry_mut(|r| crate::registry::set_facts(r, &caller.tenant, facts))?;
    s.signals.notify_waiters();
    let changed = reevaluate(s, &caller.tenant).await?;
    Ok((doc, version, changed))
}

/// The tenant's mission facts and their version.
///
/// # Errors
/// A store failure.
pub fn show(s: &AppState, tenant: &str) -> Result<(Value, i64)> {
    Ok(s.store.read(|c| Ok(read_facts(c, tenant)?))?)
}
