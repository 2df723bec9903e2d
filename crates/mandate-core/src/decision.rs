//! The decision: one pure function of (verified chain, action, token, state
//! snapshot, time). A deny is not an error: it carries every reason that
//! applied, as stable codes.
//!
//! | code | when |
//! | --- | --- |
//! | `expired` | `now` is at or past any chain mandate's `hard_expiry`, or the state says so |
//! | `not_yet_valid` | `now` is before any chain mandate's `nbf` |
//! | `revoked`, `suspended`, `completed`, `superseded`, `pending` | a chain mandate is in that state |
//! | `completed` | also: a recorded business event that happened at or after a chain mandate's `iat` matches its terminal event |
//! | `state_unknown` | a chain mandate is in a state this build does not know |
//! | `one_time_used` | the leaf is one-time and was already used |
//! | `resource_type_not_permitted` | no authorization detail of `resource.type` |
//! | `location_not_permitted` | `resource.id` is not within the detail's locations (or not a URL) |
//! | `action_not_permitted` | `action.name` is not in the detail's actions |
//! | `resource_not_permitted` | a required resource attribute is missing or different |
//! | `constraint_not_satisfied:<name>` | a constraint input is missing or outside its bound |
//! | `not_yet_valid` | also: a chain mandate's `iat` is more than [`IAT_LEEWAY_SECS`] after `now` |
//! | `agent_instance_missing` | the request has no `context.agent_instance` |
//! | `agent_instance_mismatch` | `context.agent_instance` is not the leaf's `agent.instance` |
//! | `agent_mismatch` | the request has a `subject` whose `id` is not the leaf's `agent.id` |
//! | `token_binding_mismatch`, `token_missing` | see [`crate::binding`] |
//! | `condition_failed:<id>` | a condition evaluated to `false` |
//! | `condition_error:<id>` | a condition errored, was not a bool, or would exceed its evaluation budget |
//!
//! Chain verification failures deny with their own codes (see
//! [`crate::chain::ChainError::codes`]): `signature_invalid`, `alg_none`,
//! `attenuation_violation:<dimension>`, and so on.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::binding;
use crate::chain::{ChainError, VerifiedChain, VerifiedMandate, Verifier};
use crate::condition::{Outcome, json_to_cel};
use crate::constraint::Constraint;
use crate::id::{ConditionId, MandateId};
use crate::location::{Requested, any_covers_requested};
use crate::model::{AuthorizationDetail, MandateClaims, OnFailure};
use crate::request::EvaluationRequest;
use crate::state::{MandateState, StateSnapshot};
use crate::timestamp::UnixTime;

/// How far in the future a mandate's `iat` may be (clock skew between the
/// issuer and the enforcement point) before the mandate is `not_yet_valid`.
/// Expiry has no leeway: it fails closed on time.
pub const IAT_LEEWAY_SECS: i64 = 60;

/// What the enforcement point must do besides allowing or denying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Obligation {
    /// Tell the granting principal.
    NotifyPrincipal {
        /// The mandate concerned.
        mandate_id: MandateId,
        /// The principal's subject.
        principal: String,
        /// The condition that failed.
        condition: ConditionId,
    },
    /// Suspend this mandate at the authority.
    SuspendMandate {
        /// The mandate to suspend.
        mandate_id: MandateId,
        /// The condition that failed.
        condition: ConditionId,
    },
    /// Revoke this mandate (and its descendants) at the authority.
    RevokeMandate {
        /// The mandate to revoke.
        mandate_id: MandateId,
        /// The condition that failed.
        condition: ConditionId,
    },
    /// Consume this one-time mandate at the authority, exactly once, before
    /// acting.
    ConsumeOneTime {
        /// The one-time mandate.
        mandate_id: MandateId,
    },
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Decision {
    /// Allowed only when no reason applies.
    pub allow: bool,
    /// Every reason that applied, as stable codes, without repeats.
    pub reasons: Vec<String>,
    /// The chain's mandate ids, root first (empty when it did not verify).
    pub chain: std::sync::Arc<[MandateId]>,
    /// What the enforcement point must also do.
    pub obligations: Vec<Obligation>,
}

impl Decision {
    /// Adds a reason found outside [`decide`] (a failed proof of possession,
    /// a consumption refused): the decision becomes a deny, and the
    /// obligation to consume a one-time mandate, which only an allow
    /// carries, goes.
    pub fn deny_also(&mut self, code: &str) {
        self.allow = false;
        if !self.reasons.iter().any(|r| r == code) {
            self.reasons.push(code.to_owned());
        }
        self.obligations
            .retain(|o| !matches!(o, Obligation::ConsumeOneTime { .. }));
    }

    /// A deny for a chain that did not verify.
    #[must_use]
    pub fn from_chain_error(e: &ChainError) -> Self {
        Self {
            allow: false,
            reasons: e.codes(),
            chain: std::sync::Arc::from([]),
            obligations: Vec::new(),
        }
    }
}

struct Reasons(Vec<String>);

impl Reasons {
    fn add(&mut self, code: impl Into<String>) {
        let code = code.into();
        if !self.0.contains(&code) {
            self.0.push(code);
        }
    }
}

fn lifecycle<'a>(
    mandates: impl IntoIterator<Item = &'a MandateClaims>,
    state: &StateSnapshot,
    now: UnixTime,
    reasons: &mut Reasons,
) {
    for c in mandates {
        if now >= c.lifecycle.hard_expiry || now >= c.exp {
            reasons.add("expired");
        }
        if now < c.nbf || now.secs().saturating_add(IAT_LEEWAY_SECS) < c.iat.secs() {
            reasons.add("not_yet_valid");
        }
        if let Some(r) = state.state(&c.mandate_id).reason() {
            reasons.add(r);
        }
        if state.events().iter().any(|e| {
            e.occurred_at.is_none_or(|at| at >= c.iat)
                && c.lifecycle
                    .terminal_events
                    .iter()
                    .any(|t| t.matches(&e.type_, e.subject.as_deref()))
        }) {
            reasons.add(MandateState::Completed.reason().unwrap_or("completed"));
        }
    }
}

/// Why these mandates (a chain, root first) are not all in force at `now`:
/// expiry, validity time, recorded state, a terminal business event. Empty
/// when every one is active. The part of [`decide`] that does not depend on
/// the proposed action (what a token exchange or an introspection asks).
#[must_use]
pub fn not_in_force<'a>(
    mandates: impl IntoIterator<Item = &'a MandateClaims>,
    state: &StateSnapshot,
    now: UnixTime,
) -> Vec<String> {
    let mut reasons = Reasons(Vec::new());
    lifecycle(mandates, state, now, &mut reasons);
    reasons.0
}

/// Decides one proposed action under a verified chain.
#[must_use]
pub fn decide(
    chain: &VerifiedChain,
    request: &EvaluationRequest,
    token: Option<&str>,
    state: &StateSnapshot,
    now: UnixTime,
) -> Decision {
    let mut reasons = Reasons(Vec::new());
    let mut obligations = Vec::new();
    let leaf = chain.leaf().claims();

    lifecycle(
        chain.mandates().iter().map(VerifiedMandate::claims),
        state,
        now,
        &mut reasons,
    );
    if leaf.lifecycle.one_time && state.is_consumed(&leaf.mandate_id) {
        reasons.add("one_time_used");
    }

    scope(&leaf.authorization_details, request, &mut reasons);

    // The acting agent must say who it is, and be the leaf's holder: an
    // ancestor cut from a longer chain names another agent (or instance).
    match request.agent_instance() {
        None => reasons.add("agent_instance_missing"),
        Some(instance) if instance != leaf.agent.instance => {
            reasons.add("agent_instance_mismatch");
        }
        Some(_) => {}
    }
    if let Some(subject) = &request.subject
        && subject.get("id").and_then(Value::as_str) != Some(leaf.agent.id.as_str())
    {
        reasons.add("agent_mismatch");
    }
    if let Some(r) = binding::check(chain, token) {
        reasons.add(r);
    }

    if !chain.conditions().is_empty() {
        let direct = crate::condition::DirectInput {
            facts: state.facts().members(),
            request,
        };
        // Built on the first condition the direct evaluator leaves to CEL.
        let mut interpreted: Option<cel::Context<'_, 'static>> = None;
        // A chain that already ended is not suspended or revoked again by a
        // failing condition: the deny says why it ended, and the principal
        // is still told of the condition.
        let ended = reasons.0.iter().any(|r| {
            matches!(
                r.as_str(),
                "expired" | "revoked" | "completed" | "superseded"
            )
        });
        let mut request_sizes: Option<(u64, u64)> = None;
        for cc in chain.conditions() {
            let c = &cc.condition;
            let outcome = if c.iterates() {
                let (context_size, resource_size) = *request_sizes.get_or_insert_with(|| {
                    (
                        request
                            .context
                            .values()
                            .map(crate::condition::input_size)
                            .sum(),
                        request
                            .resource
                            .properties
                            .values()
                            .map(crate::condition::input_size)
                            .sum::<u64>()
                            + 2,
                    )
                });
                let input: u64 = c
                    .variables()
                    .iter()
                    .map(|v| match v.as_str() {
                        "context" => context_size,
                        "resource" => resource_size,
                        "action" | "now" | "mandate" => 4,
                        fact => state.facts().size_of(fact),
                    })
                    .sum();
                if c.within_budget(input) {
                    c.evaluate(
                        interpreted
                            .get_or_insert_with(|| bind(chain.reads(), state, request, leaf, now)),
                    )
                } else {
                    Outcome::Error("over the evaluation budget".into())
                }
            } else if let Some(outcome) = c.evaluate_direct(&direct) {
                outcome
            } else {
                c.evaluate(
                    interpreted
                        .get_or_insert_with(|| bind(chain.reads(), state, request, leaf, now)),
                )
            };
            match outcome {
                Outcome::True => {}
                Outcome::Error(_) => reasons.add(format!("condition_error:{}", c.id)),
                Outcome::False => {
                    reasons.add(format!("condition_failed:{}", c.id));
                    let origin = chain
                        .mandates()
                        .get(cc.origin)
                        .unwrap_or_else(|| chain.leaf());
                    let mandate_id = origin.id().clone();
                    match c.on_failure {
                        OnFailure::Deny => {}
                        OnFailure::SuspendAndNotify => {
                            if !ended {
                                obligations.push(Obligation::SuspendMandate {
                                    mandate_id: mandate_id.clone(),
                                    condition: c.id.clone(),
                                });
                            }
                            obligations.push(Obligation::NotifyPrincipal {
                                mandate_id,
                                principal: leaf.principal.sub.clone(),
                                condition: c.id.clone(),
                            });
                        }
                        OnFailure::Revoke => {
                            if !ended {
                                obligations.push(Obligation::RevokeMandate {
                                    mandate_id: mandate_id.clone(),
                                    condition: c.id.clone(),
                                });
                            }
                            obligations.push(Obligation::NotifyPrincipal {
                                mandate_id,
                                principal: leaf.principal.sub.clone(),
                                condition: c.id.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    let allow = reasons.0.is_empty();
    if allow && leaf.lifecycle.one_time {
        obligations.push(Obligation::ConsumeOneTime {
            mandate_id: leaf.mandate_id.clone(),
        });
    }
    Decision {
        allow,
        reasons: reasons.0,
        chain: chain.shared_ids(),
        obligations,
    }
}

/// The CEL scope of one decision: the facts, and the variables the chain's
/// conditions read (`action`, `resource`, `context`, `now`, `mandate`).
pub(crate) fn bind<'s>(
    reads: crate::chain::Reads,
    state: &'s StateSnapshot,
    request: &EvaluationRequest,
    leaf: &MandateClaims,
    now: UnixTime,
) -> cel::Context<'s, 'static> {
    let mut scope = state.facts().scope();
    if reads.action {
        scope.add_variable_from_value(
            "action",
            json_to_cel(&serde_json::json!({"name": request.action.name})),
        );
    }
    if reads.resource {
        scope.add_variable_from_value(
            "resource",
            json_to_cel(&serde_json::json!({
                "type": request.resource.type_,
                "id": request.resource.id,
                "properties": request.resource.properties,
            })),
        );
    }
    if reads.context {
        scope.add_variable_from_value(
            "context",
            json_to_cel(&Value::Object(request.context.clone())),
        );
    }
    if reads.now
        && let Some(t) = chrono::DateTime::from_timestamp(now.secs(), 0)
    {
        scope.add_variable_from_value("now", cel::Value::Timestamp(t.fixed_offset()));
    }
    if reads.mandate {
        scope.add_variable_from_value(
            "mandate",
            json_to_cel(&serde_json::json!({
                "id": leaf.mandate_id,
                "agent": {"id": leaf.agent.id, "instance": leaf.agent.instance},
                "principal": {"sub": leaf.principal.sub, "iss": leaf.principal.iss},
            })),
        );
    }
    scope
}

/// Verifies the presented chain (through the verifier's cache) and decides;
/// a chain that does not verify denies with its reason codes.
#[must_use]
pub fn decide_presented(
    verifier: &Verifier,
    presented: &str,
    request: &EvaluationRequest,
    token: Option<&str>,
    state: &StateSnapshot,
    now: UnixTime,
) -> Decision {
    match verifier.verify(presented) {
        Ok(chain) => decide(&chain, request, token, state, now),
        Err(e) => Decision::from_chain_error(&e),
    }
}

/// Adds the scope reasons: the action must fall within one authorization
/// detail in every dimension at once. When none matches, the reasons are
/// those of the detail that came closest.
fn scope(details: &[AuthorizationDetail], request: &EvaluationRequest, reasons: &mut Reasons) {
    let Ok(location) = Requested::parse(&request.resource.id) else {
        reasons.add("location_not_permitted");
        return;
    };
    let mut best: Option<Vec<String>> = None;
    for d in details.iter().filter(|d| d.type_ == request.resource.type_) {
        let found = mismatches(d, request, &location);
        if found.is_empty() {
            return;
        }
        if best.as_ref().is_none_or(|b| found.len() < b.len()) {
            best = Some(found);
        }
    }
    match best {
        Some(found) => found.into_iter().for_each(|r| reasons.add(r)),
        None => reasons.add("resource_type_not_permitted"),
    }
}

fn mismatches(
    d: &AuthorizationDetail,
    request: &EvaluationRequest,
    location: &Requested<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    let props: &Map<String, Value> = &request.resource.properties;
    if !any_covers_requested(&d.locations, location) {
        out.push("location_not_permitted".to_owned());
    }
    if !d.actions.iter().any(|a| a == &request.action.name) {
        out.push("action_not_permitted".to_owned());
    }
    if d.resource
        .iter()
        .any(|(k, v)| crate::json::member(props, k) != Some(v))
    {
        out.push("resource_not_permitted".to_owned());
    }
    for (k, v) in &d.constraints {
        let ok = match (Constraint::parse(v), crate::json::member(props, k)) {
            (Ok(c), Some(input)) => c.admits(input),
            _ => false,
        };
        if !ok {
            out.push(format!("constraint_not_satisfied:{k}"));
        }
    }
    out
}
