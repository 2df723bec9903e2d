//! Decisions in the audit log: one decided here (its one-time consumption
//! and its proof's replay key in the same commit), and a shipment of
//! decisions made at an enforcement point, recorded once however often it
//! is sent.

use mandate_store::sql::OptionalExtension as _;
use serde_json::{Map, Value, json};

use super::Result;
use super::delegation::{Consumption, consume_in};
use crate::state::AppState;

/// A decision taken, to be made durable before it is answered.
#[derive(Debug)]
pub struct Outcome {
    /// The caller's tenant.
    pub tenant: String,
    /// The enforcement point that asked.
    pub enforcer: String,
    /// The leaf mandate the decision is about.
    pub leaf: Option<String>,
    /// The audit record's body (without the outcome).
    pub record: Value,
    /// Whether the evaluation allowed.
    pub allow: bool,
    /// Its reason codes.
    pub reasons: Vec<String>,
    /// Its obligations, as recorded.
    pub obligations: Value,
    /// The one-time mandate an allow consumes.
    pub one_time: Option<String>,
    /// The replay key and expiry of a DPoP proof first seen by this replica.
    pub fresh_proof: Option<(String, i64)>,
}

/// Records a decision in one commit with what it consumes. An allow turns
/// into a deny when another replica took the same proof (`pop_replayed`)
/// or the one-time mandate was used (`one_time_used`). Returns the final
/// allow, the record's sequence number and the final reasons.
///
/// # Errors
/// A store failure: the decision is not answered.
pub async fn record(s: &AppState, o: Outcome) -> Result<(bool, i64, Vec<String>)> {
    let Outcome {
        tenant,
        enforcer,
        leaf,
        record,
        allow,
        reasons,
        obligations,
        one_time,
        fresh_proof,
    } = o;
    // The record as it will read unless the commit changes the outcome,
    // made canonical here (on the caller's worker, in parallel) rather than
    // on the single writer.
    let mut body = record;
    if let Some(b) = body.as_object_mut() {
        b.insert("obligations".into(), obligations);
    }
    outcome(&mut body, allow, &reasons);
    let prepared = mandate_store::audit::CanonicalBody::new(&body)?;
    Ok(s.store
        .write(move |tx| {
            // A proof another replica accepted already is a replay here.
            let replayed = match (&fresh_proof, allow, tx.conn().dialect()) {
                (Some((key, exp)), true, mandate_store::sql::Dialect::Postgres) => {
                    tx.conn().execute(
                        "INSERT INTO pop_seen (key, exp_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        mandate_store::params![key, exp],
                    )? == 0
                }
                _ => false,
            };
            // A one-time mandate is consumed in the same commit as the allow.
            let (changed, allow, reasons) = match (&one_time, allow) {
                _ if replayed => (true, false, vec!["pop_replayed".to_owned()]),
                (Some(id), true) if consume_in(tx, &tenant, id, &enforcer)? != Consumption::Now => {
                    (true, false, vec!["one_time_used".to_owned()])
                }
                _ => (false, allow, reasons),
            };
            let seq = if changed {
                let mut body = body;
                outcome(&mut body, allow, &reasons);
                tx.audit(Some(&tenant), "decision", leaf.as_deref(), body)?
                    .seq
            } else {
                tx.audit_canonical(Some(&tenant), "decision", leaf.as_deref(), &prepared)?
            };
            Ok((allow, seq, reasons))
        })
        .await?)
}

/// Sets what a decision record says was decided, and why.
fn outcome(body: &mut Value, allow: bool, reasons: &[String]) {
    if let Some(b) = body.as_object_mut() {
        b.insert(
            "decision".into(),
            json!(if allow { "allow" } else { "deny" }),
        );
        b.insert("reasons".into(), json!(reasons));
    }
}

/// Appends a shipment of `records` (from `source`, numbered from `first`)
/// as one audit record, dropping those already recorded and counting the
/// ones that never arrived. Returns `(accepted, duplicates, next)`.
///
/// # Errors
/// A store failure.
pub async fn ship(
    s: &AppState,
    tenant: String,
    enforcer: String,
    source: String,
    first: u64,
    mut records: Vec<Value>,
) -> Result<(u64, u64, u64)> {
    let end = first.saturating_add(records.len() as u64);
    Ok(s.store
        .write(move |tx| {
            let next: u64 = tx
                .conn()
                .query_row(
                    "SELECT next FROM ship_marks WHERE tenant = ?1 AND enforcer = ?2 AND source = ?3",
                    mandate_store::params![tenant, enforcer, source],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .map_or(0, |n| u64::try_from(n).unwrap_or(0));
            let skip = usize::try_from(next.saturating_sub(first))
                .unwrap_or(usize::MAX)
                .min(records.len());
            let duplicates = skip as u64;
            if skip == records.len() {
                return Ok((0u64, duplicates, next.max(end)));
            }
            records.drain(..skip);
            let accepted = records.len() as u64;
            let start = first + duplicates;
            // Built by moving the records in: `json!` would copy them all.
            let mut body = Map::new();
            body.insert("enforcer".into(), Value::String(enforcer.clone()));
            body.insert("source".into(), Value::String(source.clone()));
            body.insert("first".into(), Value::from(start));
            if start > next {
                body.insert("missing".into(), Value::from(start - next));
            }
            body.insert("records".into(), Value::Array(records));
            tx.audit(
                Some(&tenant),
                mandate_store::audit::DECISIONS,
                None,
                Value::Object(body),
            )?;
            tx.conn().execute(
                "INSERT INTO ship_marks (tenant, enforcer, source, next) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, enforcer, source) DO UPDATE SET next = excluded.next",
                mandate_store::params![tenant, enforcer, source, i64::try_from(end).unwrap_or(i64::MAX)],
            )?;
            Ok((accepted, duplicates, end))
        })
        .await?)
}

/// Appends one record of `kind` (an action search, a refused request
/// answered as a deny, an access token issued) and returns its sequence
/// number: durable before the caller answers.
///
/// # Errors
/// A store failure.
pub async fn note(
    s: &AppState,
    tenant: String,
    kind: &'static str,
    mandate_id: Option<String>,
    body: Value,
) -> Result<i64> {
    Ok(s.store
        .write(move |tx| {
            Ok(tx
                .audit(Some(&tenant), kind, mandate_id.as_deref(), body)?
                .seq)
        })
        .await?)
}
