//! Decisions over the OpenID AuthZEN Authorization API 1.0. The mandate
//! travels in `subject.properties.mandate`, an access token in
//! `subject.properties.access_token`; a deny is `200 {"decision": false}`
//! with the reason codes in `context`. Decisions read in-memory state only;
//! each one is audited (durably, group-committed) before it is answered.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse as _;
use mandate_core::decision::{Decision, Obligation, decide};
use mandate_core::pop;
use mandate_core::request::EvaluationRequest;
use mandate_core::timestamp::UnixTime;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, parse_body};
use crate::service::decisions;
use crate::state::AppState;

/// `GET /.well-known/authzen-configuration`.
pub async fn configuration(State(s): State<Arc<AppState>>) -> Json<Value> {
    let base = s.issuer.trim_end_matches('/');
    Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
        "search_action_endpoint": format!("{base}/access/v1/search/action"),
    }))
}

fn subject_props(req: &EvaluationRequest) -> Option<&Map<String, Value>> {
    req.subject.as_ref()?.get("properties")?.as_object()
}

/// Whether this task runs on a multi-threaded runtime (where
/// `block_in_place` may hand the worker's other tasks to another thread).
fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Checks the DPoP proof the enforcement point passed in `context`. The
/// evaluations of one batch answer one request the enforcement point
/// received, so they share its proof: admitted to the replay cache once,
/// at its first use in the batch (`batch` holds what this batch admitted).
/// The signature is checked on the signature batcher's thread, with those
/// of the decisions running at the same time.
async fn check_pop(
    s: &AppState,
    chain: &mandate_core::chain::VerifiedChain,
    req: &EvaluationRequest,
    token: Option<&str>,
    now: UnixTime,
    batch: &mut Vec<String>,
    fresh: &mut Option<(String, i64)>,
) -> Option<pop::PopError> {
    let possession = pop::from_context(req, token);
    let proof = match s.signatures.prove_possession(chain, &possession, now).await {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => return Some(e),
    };
    let pop::Possession::Proof {
        proof: Some(text), ..
    } = possession
    else {
        return None;
    };
    if batch.iter().any(|p| p == text) {
        return None;
    }
    let key = proof.replay_key();
    if let Err(e) = s.replay.admit_key(&key, proof.iat, now) {
        return Some(e);
    }
    // With replicas (PostgreSQL), the decision's commit also records the
    // proof where every replica sees it (kept past any acceptable `iat`).
    if s.store.dialect() == mandate_store::sql::Dialect::Postgres {
        *fresh = Some((
            hex::encode(key),
            proof.iat.saturating_add(POP_SEEN_SECS).saturating_mul(1000),
        ));
    }
    batch.push(text.to_owned());
    None
}

/// How long past its `iat` a proof is remembered by every replica: longer
/// than any proof is accepted.
const POP_SEEN_SECS: i64 = 600;

/// Decides one request for the caller's tenant and audits it.
async fn evaluate_one(
    s: &AppState,
    caller: &Caller,
    req: &EvaluationRequest,
    batch: &mut Vec<String>,
) -> Result<super::wire::DecisionAnswer, ApiError> {
    let started = Instant::now();
    let mut fresh_proof: Option<(String, i64)> = None;
    let props = subject_props(req);
    // A request without a mandate is answered (deny) and audited like any other.
    let presented = props
        .and_then(|p| p.get("mandate"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let token = props
        .and_then(|p| p.get("access_token"))
        .and_then(Value::as_str);
    let now = UnixTime::from_secs(crate::auth::now_secs()).map_err(ApiError::internal)?;
    // Verified once (through the cache); the audit record reads the same chain.
    let verified = if presented.is_empty() {
        None
    } else {
        Some(s.verifier.verify(presented))
    };
    let mut registered = 0usize;
    let mut decision = match &verified {
        None => Decision {
            allow: false,
            reasons: vec!["mandate_missing".into()],
            chain: std::sync::Arc::from([]),
            obligations: Vec::new(),
        },
        Some(Ok(chain)) => {
            // The root must be one this authority issued to the caller's
            // tenant. How many of the chain's mandates are registered, from
            // the root, decides where its record is indexed.
            let snapshot = s.with_registry(|r| {
                registered = chain
                    .mandates()
                    .iter()
                    .take_while(|m| r.get(&caller.tenant, m.id().as_str()).is_some())
                    .count();
                r.get(&caller.tenant, chain.root().id().as_str())
                    .map(|_| r.snapshot(&caller.tenant))
            })?;
            // The enforcement point passes the DPoP proof it received, with
            // the method and URL it was sent for; checked for known roots only.
            let pop_failure = match (&snapshot, s.config.proof_of_possession) {
                (Some(_), pop::Mode::Required) => {
                    check_pop(s, chain, req, token, now, batch, &mut fresh_proof).await
                }
                _ => None,
            };
            let decided = match snapshot {
                // A decision whose conditions iterate may take up to the
                // evaluation budget: not on an async worker.
                Some(snap) if chain.iterates() && multi_threaded() => {
                    tokio::task::block_in_place(|| decide(chain, req, token, &snap, now))
                }
                Some(snap) => decide(chain, req, token, &snap, now),
                None => Decision {
                    allow: false,
                    reasons: vec!["unknown_mandate".into()],
                    chain: chain.shared_ids(),
                    obligations: Vec::new(),
                },
            };
            let mut decided = decided;
            if let Some(e) = pop_failure {
                decided.deny_also(e.code());
            }
            decided
        }
        Some(Err(e)) => Decision::from_chain_error(e),
    };
    let one_time = decision.obligations.iter().find_map(|o| match o {
        Obligation::ConsumeOneTime { mandate_id } => Some(mandate_id.to_string()),
        _ => None,
    });
    let leaf = decision.chain.last().map(ToString::to_string);
    let chain = verified.and_then(Result::ok);
    let claims = chain.as_ref().map(|c| c.leaf().claims());
    let (tenant, enforcer) = (caller.tenant.clone(), caller.sub.clone());
    let allow = decision.allow;
    let reasons = decision.reasons.clone();
    let obligations = serde_json::to_value(&decision.obligations).map_err(ApiError::internal)?;
    let body = decisions::Record {
        chain: &decision.chain,
        registered: u64::try_from(registered).unwrap_or(0),
        principal: claims.map(|c| c.principal.sub.as_str()),
        grant_ref: claims.map(|c| c.principal.grant_ref.as_str()),
        agent: claims.map(|c| c.agent.id.as_str()),
        agent_instance: claims.map(|c| c.agent.instance.as_str()),
        purpose: claims.map(|c| c.purpose.objective.as_str()),
        action: &req.action.name,
        resource_type: &req.resource.type_,
        resource_id: &req.resource.id,
        enforcer: &enforcer,
        at: now,
    }
    .body(allow, &reasons, &obligations)?;
    let (allow, seq, final_reasons) = decisions::record(
        s,
        decisions::Outcome {
            tenant,
            enforcer,
            leaf,
            body,
            allow,
            reasons,
            one_time,
            fresh_proof,
        },
    )
    .await?;
    if decision.allow && !allow {
        decision.allow = false;
        decision.reasons = final_reasons;
        decision.obligations.clear();
    }
    if let Some(id) = decision.chain.last().filter(|_| decision.allow)
        && decision
            .obligations
            .iter()
            .any(|o| matches!(o, Obligation::ConsumeOneTime { .. }))
    {
        // The authority consumed it in the same commit: nothing left to do.
        s.refresh(std::slice::from_ref(id))?;
        decision
            .obligations
            .retain(|o| !matches!(o, Obligation::ConsumeOneTime { .. }));
    }
    s.metrics.decision(
        decision.allow,
        &decision.reasons,
        started.elapsed().as_secs_f64(),
    );
    Ok(super::wire::DecisionAnswer {
        decision: decision.allow,
        context: super::wire::DecisionContext {
            reasons: decision.reasons,
            chain: decision.chain.to_vec(),
            obligations: decision.obligations,
            audit_seq: seq,
            error: None,
        },
    })
}

/// An action search (AuthZEN 1.0 Search API): the subject, the resource and
/// the context; which actions are asked.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ActionSearch {
    subject: Option<Value>,
    resource: mandate_core::request::Resource,
    #[serde(default)]
    context: Map<String, Value>,
}

/// `POST /access/v1/search/action` (enforcer): which actions the agent may
/// take on this resource now, as an agent runtime planning its next step
/// asks. Every action the leaf names for the resource's type is decided as
/// an evaluation would be (state, scope, conditions, the agent's identity
/// and its one DPoP proof); the allowed ones are listed. Nothing is
/// consumed: a one-time mandate's action is listed while it is unused. The
/// search is audited (one record) before it is answered.
pub async fn search_action(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Enforcer])?;
    let _in_flight = s.signatures.request();
    let q: ActionSearch = parse_body(&body)?;
    let probe = EvaluationRequest {
        subject: q.subject.clone(),
        action: mandate_core::request::Action {
            name: String::new(),
            properties: Map::new(),
        },
        resource: q.resource.clone(),
        context: q.context.clone(),
    };
    check_subject(&probe).map_err(ApiError::bad_request)?;
    let props = subject_props(&probe);
    let presented = props
        .and_then(|p| p.get("mandate"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let token = props
        .and_then(|p| p.get("access_token"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let now = UnixTime::from_secs(crate::auth::now_secs()).map_err(ApiError::internal)?;
    let mut results: Vec<String> = Vec::new();
    let mut chain_ids = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    match s.verifier.verify(&presented) {
        Ok(chain) => {
            chain_ids = chain.ids();
            let snapshot = s.with_registry(|r| {
                r.get(&caller.tenant, chain.root().id().as_str())
                    .map(|_| r.snapshot(&caller.tenant))
            })?;
            match snapshot {
                None => reasons.push("unknown_mandate".into()),
                Some(snap) => {
                    let pop_failure = match s.config.proof_of_possession {
                        pop::Mode::Required => {
                            check_pop(
                                &s,
                                &chain,
                                &probe,
                                token.as_deref(),
                                now,
                                &mut Vec::new(),
                                &mut None,
                            )
                            .await
                        }
                        pop::Mode::Bearer => None,
                    };
                    if let Some(e) = pop_failure {
                        reasons.push(e.code().to_owned());
                    } else {
                        let mut candidates: Vec<&str> = chain
                            .leaf()
                            .claims()
                            .authorization_details
                            .iter()
                            .filter(|d| d.type_ == q.resource.type_)
                            .flat_map(|d| d.actions.iter().map(String::as_str))
                            .collect();
                        candidates.dedup();
                        for name in candidates {
                            if results.iter().any(|r| r == name) {
                                continue;
                            }
                            let mut req = probe.clone();
                            req.action.name = name.to_owned();
                            let d = if chain.iterates() && multi_threaded() {
                                tokio::task::block_in_place(|| {
                                    decide(&chain, &req, token.as_deref(), &snap, now)
                                })
                            } else {
                                decide(&chain, &req, token.as_deref(), &snap, now)
                            };
                            if d.allow {
                                results.push(name.to_owned());
                            }
                        }
                    }
                }
            }
        }
        Err(e) if !presented.is_empty() => reasons = e.codes(),
        Err(_) => reasons.push("mandate_missing".into()),
    }
    let leaf = chain_ids.last().map(ToString::to_string);
    let (tenant, record) = (
        caller.tenant.clone(),
        json!({"chain": chain_ids, "enforcer": caller.sub, "resource": {"type": q.resource.type_, "id": q.resource.id},
            "actions": results, "reasons": reasons, "at": now}),
    );
    decisions::note(s.as_ref(), tenant, "action_search", leaf, record).await?;
    let results: Vec<Value> = results.into_iter().map(|n| json!({"name": n})).collect();
    Ok(Json(
        json!({"results": results, "page": {"next_token": ""}}),
    ))
}

/// `POST /access/v1/evaluation` (enforcer).
pub async fn evaluation(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<super::wire::DecisionAnswer>, ApiError> {
    caller.require(&[Role::Enforcer])?;
    let _in_flight = s.signatures.request();
    let req: EvaluationRequest = parse_body(&body)?;
    check_subject(&req).map_err(ApiError::bad_request)?;
    // Written straight from the answer (no intermediate JSON tree).
    evaluate_one(&s, &caller, &req, &mut Vec::new())
        .await
        .map(Json)
}

/// AuthZEN 1.0 requires a subject with a `type` and an `id` (strings): a
/// request without them is malformed (400), never a decision.
fn check_subject(req: &EvaluationRequest) -> Result<(), String> {
    let Some(subject) = req.subject.as_ref() else {
        return Err("subject: missing (AuthZEN requires subject.type and subject.id)".into());
    };
    for member in ["type", "id"] {
        match subject.get(member) {
            Some(Value::String(v)) if !v.is_empty() => {}
            Some(_) => return Err(format!("subject.{member}: must be a non-empty string")),
            None => return Err(format!("subject.{member}: missing")),
        }
    }
    Ok(())
}

/// The batch request: defaults at the top level, `evaluations` override them.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Batch {
    #[serde(default)]
    subject: Option<Value>,
    #[serde(default)]
    action: Option<Value>,
    #[serde(default)]
    resource: Option<Value>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    evaluations: Vec<Map<String, Value>>,
    #[serde(default)]
    options: Option<Value>,
}

/// `POST /access/v1/evaluations` (enforcer): `execute_all` (default),
/// `deny_on_first_deny` or `permit_on_first_permit`.
pub async fn evaluations(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    caller.require(&[Role::Enforcer])?;
    let _in_flight = s.signatures.request();
    let batch: Batch = parse_body(&body)?;
    if batch.evaluations.len() > 256 {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "evaluations: at most 256",
        ));
    }
    let semantic = batch
        .options
        .as_ref()
        .and_then(|o| o.get("evaluations_semantic"))
        .and_then(Value::as_str)
        .unwrap_or("execute_all")
        .to_owned();
    if !matches!(
        semantic.as_str(),
        "execute_all" | "deny_on_first_deny" | "permit_on_first_permit"
    ) {
        return Err(ApiError::bad_request(format!(
            "options.evaluations_semantic: `{semantic}` is not supported"
        )));
    }
    // Without `evaluations`, the request is a single evaluation and is
    // answered as one (AuthZEN 1.0 §7.1).
    if batch.evaluations.is_empty() {
        let single = json!({"subject": batch.subject, "action": batch.action, "resource": batch.resource, "context": batch.context.unwrap_or_else(|| json!({}))});
        let req: EvaluationRequest =
            serde_json::from_value(single).map_err(|e| ApiError::bad_request(e.to_string()))?;
        check_subject(&req).map_err(ApiError::bad_request)?;
        return evaluate_one(&s, &caller, &req, &mut Vec::new())
            .await
            .map(|a| Json(a).into_response());
    }
    let defaults = json!({"subject": batch.subject, "action": batch.action, "resource": batch.resource, "context": batch.context});
    let items = batch.evaluations;
    let mut out = Vec::new();
    let mut proofs = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut merged = defaults.clone();
        if let Some(obj) = merged.as_object_mut() {
            obj.extend(item);
        }
        if let Some(obj) = merged.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        let result = match serde_json::from_value::<EvaluationRequest>(merged)
            .map_err(|e| e.to_string())
            .and_then(|req| check_subject(&req).map(|()| req))
        {
            Ok(req) => evaluate_one(&s, &caller, &req, &mut proofs).await?,
            Err(e) => {
                // Answered with a deny, so audited and counted like one.
                let message = format!("evaluations[{i}]: {e}");
                let seq = decisions::note(
                    s.as_ref(),
                    caller.tenant.clone(),
                    "decision",
                    None,
                    json!({"decision": "deny", "reasons": ["invalid_request"], "error": message, "enforcer": caller.sub, "chain": []}),
                )
                .await?;
                s.metrics
                    .decision(false, &["invalid_request".to_owned()], 0.0);
                super::wire::DecisionAnswer {
                    decision: false,
                    context: super::wire::DecisionContext {
                        reasons: vec!["invalid_request".to_owned()],
                        chain: Vec::new(),
                        obligations: Vec::new(),
                        audit_seq: seq,
                        error: Some(super::wire::ItemError {
                            status: 400,
                            message,
                        }),
                    },
                }
            }
        };
        let decision = result.decision;
        out.push(result);
        if (semantic == "deny_on_first_deny" && !decision)
            || (semantic == "permit_on_first_permit" && decision)
        {
            break;
        }
    }
    Ok(Json(super::wire::EvaluationsAnswer { evaluations: out }).into_response())
}

/// Decisions an enforcement point made locally: `source` names the series
/// (a stream, a run), `first` the number of the first record in it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shipment {
    /// The series.
    pub source: String,
    /// The number of `records[0]` in it.
    pub first: u64,
    /// The decisions.
    pub records: Vec<Value>,
}

/// Parses and checks the body of `POST /v1/audit/decisions`.
///
/// # Errors
/// The first problem, naming its field.
pub fn parse_shipment(body: &[u8]) -> Result<Shipment, ApiError> {
    let shipment: Shipment = parse_body(body)?;
    if shipment.records.len() > MAX_SHIPMENT {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("records: at most {MAX_SHIPMENT}"),
        ));
    }
    if shipment.source.is_empty() || shipment.source.len() > 200 {
        return Err(ApiError::bad_request("source: must be 1 to 200 characters"));
    }
    if shipment
        .first
        .checked_add(shipment.records.len() as u64)
        .is_none_or(|end| end > i64::MAX as u64)
    {
        return Err(ApiError::bad_request("first: too large"));
    }
    for (i, r) in shipment.records.iter().enumerate() {
        check_shipped(i, r)?;
    }
    Ok(shipment)
}

/// Most decisions in one shipment.
pub const MAX_SHIPMENT: usize = 10_000;

/// Checks one shipped decision, naming the field and the problem.
fn check_shipped(i: usize, r: &Value) -> Result<(), ApiError> {
    let bad = |field: &str, problem: &str| {
        Err(ApiError::bad_request(format!(
            "records[{i}].{field}: {problem}"
        )))
    };
    let Some(o) = r.as_object() else {
        return Err(ApiError::bad_request(format!(
            "records[{i}]: must be an object"
        )));
    };
    match o.get("decision").and_then(Value::as_str) {
        Some("allow" | "deny") => {}
        _ => return bad("decision", "must be \"allow\" or \"deny\""),
    }
    if o.get("at_ms").and_then(Value::as_u64).is_none() {
        return bad("at_ms", "must be a time in milliseconds since the epoch");
    }
    let chain = o.get("chain").and_then(Value::as_array);
    if !chain.is_some_and(|c| {
        c.len() <= 64
            && c.iter()
                .all(|v| v.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 200))
    }) {
        return bad("chain", "must be at most 64 mandate ids");
    }
    if !o
        .get("reasons")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().all(Value::is_string))
    {
        return bad("reasons", "must be an array of reason codes");
    }
    Ok(())
}

/// `POST /v1/audit/decisions` (enforcer): a batch of decisions made at an
/// enforcement point, appended to the audit log as one record. Each
/// decision is recorded once however often it is sent: the authority keeps,
/// per enforcer and source, the number of the next decision it expects and
/// drops those below it; decisions that never arrived (`first` beyond it)
/// are counted in the record as `missing`.
pub async fn ship(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Enforcer])?;
    let Shipment {
        source,
        first,
        records,
    } = parse_shipment(&body)?;
    // An enforcer ships decisions about its own tenant's mandates only: a
    // chain id that names another tenant's mandate is refused (it would
    // write history into that tenant's timeline).
    s.with_registry(|r| {
        for (i, rec) in records.iter().enumerate() {
            let ids = rec
                .get("chain")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for (j, id) in ids.enumerate() {
                let id = id.as_str().unwrap_or_default();
                if r.tenant_of(id).is_some_and(|t| t != caller.tenant) {
                    return Err(ApiError::forbidden(format!(
                        "records[{i}].chain[{j}]: not a mandate of this tenant"
                    )));
                }
            }
        }
        Ok(())
    })??;
    let (tenant, enforcer) = (caller.tenant.clone(), caller.sub.clone());
    let (accepted, duplicates, next) =
        decisions::ship(&s, tenant, enforcer, source, first, records).await?;
    Ok(Json(
        json!({"accepted": accepted, "duplicates": duplicates, "next": next}),
    ))
}
