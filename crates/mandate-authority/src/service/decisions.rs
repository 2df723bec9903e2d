//! Decisions in the audit log: one decided here (its one-time consumption
//! and its proof's replay key in the same commit), and a shipment of
//! decisions made at an enforcement point, recorded once however often it
//! is sent.

use mandate_store::audit::{CanonicalBody, CanonicalObject};
use mandate_store::sql::OptionalExtension as _;
use serde_json::{Map, Value, json};

use super::Result;
use super::delegation::{Consumption, consume_in};
use crate::state::AppState;

/// What a decision's audit record says besides its outcome, borrowed from
/// the request and the chain it was decided on.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The chain decided on, root first (empty when none verified).
    pub chain: &'a [mandate_core::id::MandateId],
    /// How many of the chain's mandates, from the root, are registered here
    /// (in the caller's tenant): the record is indexed under the deepest of
    /// them and every one after it (see `mandate_store::audit::DECISION`).
    pub registered: u64,
    /// The leaf's principal.
    pub principal: Option<&'a str>,
    /// The grant the leaf's principal gave.
    pub grant_ref: Option<&'a str>,
    /// The leaf's agent.
    pub agent: Option<&'a str>,
    /// The leaf's agent instance.
    pub agent_instance: Option<&'a str>,
    /// The leaf's purpose.
    pub purpose: Option<&'a str>,
    /// The action asked for.
    pub action: &'a str,
    /// The resource's type.
    pub resource_type: &'a str,
    /// The resource's id.
    pub resource_id: &'a str,
    /// The enforcement point that asked.
    pub enforcer: &'a str,
    /// When it was decided.
    pub at: mandate_core::timestamp::UnixTime,
}

impl Record<'_> {
    /// The record's body in canonical form, with its outcome: written
    /// member by member (no JSON value built, sorted or dropped on every
    /// decision), the same text `CanonicalBody::new` makes of the record as
    /// a value (`a_decision_body_is_the_canonical_form_of_its_value`).
    ///
    /// # Errors
    /// When it cannot be encoded.
    pub fn body(
        &self,
        allow: bool,
        reasons: &[String],
        obligations: &Value,
    ) -> Result<CanonicalBody> {
        let mut o = CanonicalObject::new();
        o.string("action", Some(self.action))?
            .string("agent", self.agent)?
            .string("agent_instance", self.agent_instance)?
            .string("at", Some(&self.at.to_rfc3339()))?
            .chain(self.chain)?
            .string("decision", Some(verdict(allow)))?
            .string("enforcer", Some(self.enforcer))?
            .string("grant_ref", self.grant_ref)?
            .value("obligations", obligations)?
            .string("principal", self.principal)?
            .string("purpose", self.purpose)?
            .strings("reasons", reasons)?
            .registered(self.registered)?
            .object("resource", |r| {
                r.string("id", Some(self.resource_id))?
                    .string("type", Some(self.resource_type))?;
                Ok(())
            })?;
        Ok(o.finish()?)
    }
}

/// A decision taken, to be made durable before it is answered.
#[derive(Debug)]
pub struct Outcome {
    /// The caller's tenant.
    pub tenant: String,
    /// The enforcement point that asked.
    pub enforcer: String,
    /// The leaf mandate the decision is about.
    pub leaf: Option<String>,
    /// The audit record's body, outcome included ([`Record::body`]).
    pub body: CanonicalBody,
    /// Whether the evaluation allowed.
    pub allow: bool,
    /// Its reason codes.
    pub reasons: Vec<String>,
    /// The one-time mandate an allow consumes.
    pub one_time: Option<String>,
    /// The replay key and expiry of a DPoP proof first seen by this replica,
    /// to record where every replica sees it (on PostgreSQL; `None` on the
    /// embedded store, whose one process has the only replay cache).
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
        body,
        allow,
        reasons,
        one_time,
        fresh_proof,
    } = o;
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
                let mut changed_body = body.to_value()?;
                outcome(&mut changed_body, allow, &reasons);
                tx.audit(Some(&tenant), "decision", leaf.as_deref(), changed_body)?
                    .seq
            } else {
                tx.audit_canonical(Some(&tenant), "decision", leaf.as_deref(), &body)?
            };
            Ok((allow, seq, reasons))
        })
        .await?)
}

/// What a decision record says was decided.
fn verdict(allow: bool) -> &'static str {
    if allow { "allow" } else { "deny" }
}

/// Sets what a decision record says was decided, and why.
fn outcome(body: &mut Value, allow: bool, reasons: &[String]) {
    if let Some(b) = body.as_object_mut() {
        b.insert("decision".into(), json!(verdict(allow)));
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

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]
    use mandate_core::id::MandateId;
    use mandate_core::timestamp::UnixTime;
    use mandate_store::audit::CanonicalBody;
    use proptest::prelude::*;
    use serde_json::json;

    use super::{Record, outcome};

    proptest! {
        /// A decision's body written member by member is the text the
        /// record built as a value (as every earlier release built it) makes
        /// canonical, for any strings, a chain or none, any reasons and
        /// obligations; and read back, it is that value.
        #[test]
        fn a_decision_body_is_the_canonical_form_of_its_value(
            strings in prop::collection::vec(any::<String>(), 9),
            absent in any::<bool>(),
            chain in prop::collection::vec("mnd-[a-z0-9]{1,12}", 0..4),
            registered in 0u64..6,
            reasons in prop::collection::vec("[a-z_:-]{0,24}", 0..3),
            allow in any::<bool>(),
            notify in any::<bool>(),
            secs in 0i64..4_102_444_800,
        ) {
            let chain: Vec<MandateId> = chain.into_iter().map(|c| MandateId::new(c).unwrap()).collect();
            let at = UnixTime::from_secs(secs).unwrap();
            let s = |i: usize| strings[i].as_str();
            let leaf = |i: usize| (!absent).then(|| s(i));
            let obligations = if notify {
                json!([{"type": "notify_principal", "principal": s(0), "mandate_id": "mnd-1", "condition": s(1)}])
            } else {
                json!([])
            };
            let record = Record {
                chain: &chain, registered, principal: leaf(0), grant_ref: leaf(1), agent: leaf(2),
                agent_instance: leaf(3), purpose: leaf(4), action: s(5),
                resource_type: s(6), resource_id: s(7), enforcer: s(8), at,
            };
            let reasons: Vec<String> = reasons;
            let body = record.body(allow, &reasons, &obligations).unwrap();
            let mut value = json!({
                "chain": chain, "principal": leaf(0), "grant_ref": leaf(1),
                "agent": leaf(2), "agent_instance": leaf(3), "purpose": leaf(4),
                "action": s(5), "resource": {"type": s(6), "id": s(7)},
                "enforcer": s(8), "at": at, "registered": registered,
            });
            value.as_object_mut().unwrap().insert("obligations".into(), obligations);
            outcome(&mut value, allow, &reasons);
            let reference = CanonicalBody::new(&value).unwrap();
            prop_assert_eq!(&body, &reference);
            prop_assert_eq!(body.to_value().unwrap(), value);
        }
    }
}
