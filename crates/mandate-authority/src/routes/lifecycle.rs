//! A mandate's life after issue: read, suspend, resume, revoke (with
//! cascade), amend (a new revision supersedes the old), register an
//! offline-derived child, grant a discovered tool once, consume a one-time
//! mandate.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use mandate_core::chain::{ChildLifecycle, ChildSpec, issue_discovery_grant, issue_root};
use mandate_core::id::MandateId;
use mandate_core::model::{
    AuthorizationDetail, Condition, Delegation, DiscoveryAllowance, TerminalEvent,
};
use mandate_core::state::MandateState;
use mandate_core::timestamp::UnixTime;
use mandate_store::StoreError;
use rusqlite::params;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::db::{self, NewMandate, state_name};
use crate::error::{ApiError, parse_body};
use crate::registry::MandateRecord;
use crate::routes::requests::new_id;
use crate::state::AppState;

fn find(s: &AppState, caller: &Caller, id: &str) -> Result<MandateRecord, ApiError> {
    s.with_registry(|r| r.get(&caller.tenant, id).cloned())?
        .ok_or_else(|| ApiError::not_found("mandate"))
}

/// `GET /v1/mandates/{id}`: the holding agent, the granting principal, an
/// admin or an enforcer of the tenant.
pub async fn show(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<super::wire::MandateView>, ApiError> {
    let m = find(&s, &caller, &id)?;
    let visible = match caller.role {
        Role::Admin | Role::Enforcer => true,
        Role::Principal => m.principal == caller.sub,
        Role::Agent => m.agent_sub == caller.sub,
        Role::EventSource => false,
    };
    if !visible {
        return Err(ApiError::not_found("mandate"));
    }
    Ok(Json(super::wire::MandateView {
        mandate_id: m.id.to_string(),
        state: state_name(m.state).to_owned(),
        parent: m.parent.as_ref().map(ToString::to_string),
        consumed: m.consumed,
        mandate: m.chain.to_string(),
        claims: (*m.claims).clone(),
    }))
}

/// Whether the caller governs this mandate: its granting principal or an
/// admin of its tenant. Agents never do.
async fn governs(
    s: &AppState,
    caller: &Caller,
    m: &MandateRecord,
    operation: &str,
) -> Result<(), ApiError> {
    let ok = match caller.role {
        Role::Admin => true,
        Role::Principal => m.principal == caller.sub,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(
            crate::routes::requests::refuse_not_theirs(s, caller, operation, Some(m.id.as_str()))
                .await,
        )
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

async fn move_to(
    s: Arc<AppState>,
    caller: Caller,
    id: String,
    body: Bytes,
    to: MandateState,
    operation: &str,
) -> Result<Json<super::wire::Transition>, ApiError> {
    let m = find(&s, &caller, &id)?;
    governs(&s, &caller, &m, operation).await?;
    let reason: Reason = if body.is_empty() {
        Reason::default()
    } else {
        parse_body(&body)?
    };
    let by = caller.sub.clone();
    let reason = reason.reason.unwrap_or_default();
    let resume = to == MandateState::Active;
    let id2 = id.clone();
    let changed = s
        .store
        .write(move |tx| {
            if resume {
                // Only a suspended mandate resumes; an active one answers as before.
                let st: String = tx.conn().query_row(
                    "SELECT state FROM mandates WHERE id = ?1",
                    params![id2],
                    |r| r.get(0),
                )?;
                if st == "active" {
                    return Ok(Vec::new());
                }
                if st != "suspended" {
                    return Err(StoreError::conflict(
                        "not_suspended",
                        format!("mandate `{id2}` is {st}: it cannot be resumed"),
                    ));
                }
            }
            db::transition(tx, &id2, to, &by, &reason)
        })
        .await?;
    for c in &changed {
        let _ = c;
        s.metrics.transition(state_name(to));
    }
    s.refresh(&changed)?;
    let m = find(&s, &caller, &id)?;
    Ok(Json(super::wire::Transition {
        mandate_id: id,
        state: state_name(m.state).to_owned(),
        changed,
    }))
}

/// `POST /v1/mandates/{id}/suspend`.
pub async fn suspend(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Transition>, ApiError> {
    move_to(
        s,
        caller,
        id,
        body,
        MandateState::Suspended,
        "suspend mandates",
    )
    .await
}

/// `POST /v1/mandates/{id}/resume`.
pub async fn resume(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Transition>, ApiError> {
    move_to(s, caller, id, body, MandateState::Active, "resume mandates").await
}

/// `POST /v1/mandates/{id}/revoke`: cascades to every descendant.
pub async fn revoke(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Transition>, ApiError> {
    move_to(
        s,
        caller,
        id,
        body,
        MandateState::Revoked,
        "revoke mandates",
    )
    .await
}

/// What an amendment changes; everything else is kept.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Amendment {
    #[serde(default)]
    authorization_details: Option<Vec<AuthorizationDetail>>,
    #[serde(default)]
    conditions: Option<Vec<Condition>>,
    #[serde(default)]
    hard_expiry: Option<UnixTime>,
    #[serde(default)]
    terminal_events: Option<Vec<TerminalEvent>>,
    #[serde(default)]
    delegation: Option<Delegation>,
    #[serde(default)]
    discovery: Option<DiscoveryAllowance>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/mandates/{id}/amend`: a new revision, signed by the authority,
/// supersedes this one (and ends its descendants). Roots only.
pub async fn amend(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Amended>, ApiError> {
    let m = find(&s, &caller, &id)?;
    governs(&s, &caller, &m, "amend mandates").await?;
    let a: Amendment = parse_body(&body)?;
    if m.parent.is_some() {
        return Err(ApiError::unprocessable(
            "not_a_root",
            "only a root mandate is amended; amend its root",
        ));
    }
    if db::is_terminal(m.state) {
        return Err(ApiError::conflict(
            "conflict",
            format!(
                "mandate `{id}` is {}: it cannot be amended",
                state_name(m.state)
            ),
        ));
    }
    let mut claims = (*m.claims).clone();
    let new_id = MandateId::new(new_id("mnd")).map_err(ApiError::internal)?;
    let now = UnixTime::from_secs(crate::auth::now_secs()).map_err(ApiError::internal)?;
    claims.mandate_id = new_id.clone();
    claims.jti = new_id.as_str().to_owned();
    claims.iat = now;
    claims.nbf = now;
    if let Some(d) = a.authorization_details {
        claims.authorization_details = d;
    }
    if let Some(c) = a.conditions {
        claims.conditions = c;
    }
    if let Some(e) = a.hard_expiry {
        claims.lifecycle.hard_expiry = e;
        claims.exp = e;
    }
    if let Some(t) = a.terminal_events {
        claims.lifecycle.terminal_events = t;
    }
    if let Some(d) = a.delegation {
        claims.delegation = d;
    }
    if a.discovery.is_some() {
        claims.discovery = a.discovery;
    }
    let jws = issue_root(&s.authority(), &claims)
        .map_err(|e| ApiError::unprocessable("invalid_mandate", e.to_string()))?;
    let (tenant, by, old, jws2, agent_sub, reason) = (
        caller.tenant.clone(),
        caller.sub.clone(),
        id.clone(),
        jws.clone(),
        m.agent_sub.clone(),
        a.reason.unwrap_or_default(),
    );
    let mut changed = s
        .store
        .write(move |tx| {
            // Only an active mandate is amended: amending a suspended one
            // would resume it without a resume; an ended one stays ended.
            let current: String = tx.conn().query_row(
                "SELECT state FROM mandates WHERE id = ?1",
                params![old],
                |r| r.get(0),
            )?;
            if current != "active" {
                return Err(StoreError::conflict(
                    "not_active",
                    format!("mandate `{old}` is {current}: only an active mandate is amended (resume it first)"),
                ));
            }
            let changed = db::transition(tx, &old, MandateState::Superseded, &by, &reason)?;
            tx.conn().execute(
                "UPDATE mandates SET superseded_by = ?2 WHERE id = ?1",
                params![old, claims.mandate_id.as_str()],
            )?;
            db::insert_mandate(
                tx,
                &NewMandate {
                    tenant: &tenant,
                    principal: &claims.principal.sub,
                    agent_sub: &agent_sub,
                    parent: None,
                    chain: &jws2,
                    claims: &claims,
                    kind: "amended",
                    details: json!({"supersedes": old, "by": by, "reason": reason}),
                },
            )?;
            Ok(changed)
        })
        .await?;
    s.metrics.transition("amended");
    changed.push(new_id.clone());
    s.refresh(&changed)?;
    Ok(Json(super::wire::Amended {
        mandate_id: new_id,
        supersedes: id,
        state: "active".to_owned(),
        mandate: jws,
    }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildRegistration {
    mandate: String,
}

/// `POST /v1/mandates/{id}/children`: the holder registers a child it
/// derived offline, so revocation cascades to it by name as well as by chain.
pub async fn register_child(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::ChildRegistered>, ApiError> {
    caller.require(&[Role::Agent])?;
    let m = find(&s, &caller, &id)?;
    if m.agent_sub != caller.sub {
        return Err(ApiError::not_found("mandate"));
    }
    let reg: ChildRegistration = parse_body(&body)?;
    let chain = s
        .verifier
        .verify(&reg.mandate)
        .map_err(|e| ApiError::unprocessable(&e.codes().join(","), e.to_string()))?;
    let n = chain.mandates().len();
    let parent_ok = n >= 2 && chain.mandates().get(n - 2).is_some_and(|p| p.id() == &m.id);
    if !parent_ok {
        return Err(ApiError::unprocessable(
            "not_a_child",
            format!("the mandate's parent is not `{id}`"),
        ));
    }
    let claims = chain.leaf().claims().clone();
    let child_id = claims.mandate_id.clone();
    // A registered child's id lives under its parent's: `<parent id>.<name>`.
    // Parent ids are the tenant's own (roots are random ids the authority
    // drew), so no tenant can squat another's ids, and a taken id can only
    // be one of the caller's own lineage: no answer tells anything about
    // another tenant.
    if !child_id
        .as_str()
        .strip_prefix(id.as_str())
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
    {
        return Err(ApiError::unprocessable(
            "child_id_not_namespaced",
            format!(
                "mandate_id: `{child_id}` must be `{id}.<name>` (a child's id lives under its parent's)"
            ),
        ));
    }
    let (tenant, principal, sub, presented, parent) = (
        caller.tenant.clone(),
        m.principal.clone(),
        caller.sub.clone(),
        reg.mandate.trim().to_owned(),
        id.clone(),
    );
    s.store
        .write(move |tx| {
            // Under an ended (or suspended) parent, a child is not recorded
            // as active: it is refused.
            if let Some((which, state)) = db::first_inactive_in_lineage(tx.conn(), &parent)? {
                return Err(StoreError::conflict(
                    "not_active",
                    format!("mandate `{which}` is {state}: no child can be registered under it"),
                ));
            }
            db::insert_mandate(
                tx,
                &NewMandate {
                    tenant: &tenant,
                    principal: &principal,
                    agent_sub: &sub,
                    parent: Some(&parent),
                    chain: &presented,
                    claims: &claims,
                    kind: "child_registered",
                    details: json!({"holder": claims.agent.id}),
                },
            )
        })
        .await
        .map_err(|e| match e {
            StoreError::Sqlite(e) if db::is_unique_violation(&e) => {
                ApiError::conflict("conflict", "a mandate with this id is already registered")
            }
            other => other.into(),
        })?;
    s.refresh(std::slice::from_ref(&child_id))?;
    Ok(Json(super::wire::ChildRegistered {
        mandate_id: child_id,
        parent: id,
        state: "active".to_owned(),
    }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryRequest {
    #[serde(rename = "type")]
    type_: String,
    location: String,
    action: String,
    #[serde(default)]
    lifetime_secs: Option<u32>,
}

/// `POST /v1/mandates/{id}/discovery`: the holding agent names a tool it
/// found; the authority grants it once, within what the principal approved
/// for discovery, or refuses with the reason.
pub async fn discovery(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::DiscoveryGrant>, ApiError> {
    caller.require(&[Role::Agent])?;
    let m = find(&s, &caller, &id)?;
    if m.agent_sub != caller.sub {
        return Err(ApiError::not_found("mandate"));
    }
    if m.state != MandateState::Active {
        return Err(ApiError::conflict(
            "conflict",
            format!("mandate `{id}` is {}", state_name(m.state)),
        ));
    }
    let req: DiscoveryRequest = parse_body(&body)?;
    let allowance = m
        .claims
        .discovery
        .clone()
        .ok_or_else(|| ApiError::forbidden("discovery: the grant allows no discovery"))?;
    let now = UnixTime::from_secs(crate::auth::now_secs()).map_err(ApiError::internal)?;
    let life = i64::from(
        req.lifetime_secs
            .unwrap_or(allowance.max_lifetime_secs)
            .min(allowance.max_lifetime_secs),
    );
    let spec = ChildSpec {
        mandate_id: None,
        agent: mandate_core::model::Agent {
            id: m.claims.agent.id.clone(),
            instance: m.claims.agent.instance.clone(),
            // The same holder proves possession with the same key.
            cnf: m.claims.agent.cnf.clone(),
        },
        authorization_details: vec![AuthorizationDetail {
            type_: req.type_.clone(),
            locations: vec![req.location.clone()],
            resource: Default::default(),
            actions: vec![req.action.clone()],
            constraints: Default::default(),
        }],
        conditions: Vec::new(),
        lifecycle: ChildLifecycle {
            hard_expiry: now.plus(life).min(m.claims.lifecycle.hard_expiry),
            terminal_events: Vec::new(),
            one_time: true,
        },
        delegation: Delegation {
            permitted: false,
            max_additional_hops: 0,
            attenuation: mandate_core::model::Attenuation::StrictSubsetOfParent,
            cascade_revocation: mandate_core::model::CascadeRevocation::Immediate,
        },
        token_binding: None,
        discovery: None,
    };
    let grant_id = MandateId::new(new_id("mnd-once")).map_err(ApiError::internal)?;
    let chain = match issue_discovery_grant(&m.chain, &s.authority(), &spec, grant_id.clone(), now)
    {
        Ok(c) => c,
        Err(e) => {
            let (tenant, body) = (
                caller.tenant.clone(),
                json!({"agent": caller.sub, "type": req.type_, "location": req.location, "action": req.action, "refused": e.codes()}),
            );
            let mid = id.clone();
            s.store
                .write(move |tx| tx.audit(Some(&tenant), "discovery_refused", Some(&mid), body))
                .await?;
            return Err(ApiError::forbidden(format!("discovery refused: {e}")));
        }
    };
    let verified = s.verifier.verify(&chain).map_err(ApiError::internal)?;
    let claims = verified.leaf().claims().clone();
    let (tenant, principal, sub, chain2, parent) = (
        caller.tenant.clone(),
        m.principal.clone(),
        caller.sub.clone(),
        chain.clone(),
        id.clone(),
    );
    s.store
        .write(move |tx| {
            // Under an ended (or suspended) parent, no grant is issued.
            if let Some((which, state)) = db::first_inactive_in_lineage(tx.conn(), &parent)? {
                return Err(StoreError::conflict(
                    "not_active",
                    format!("mandate `{which}` is {state}: no discovery grant can be issued under it"),
                ));
            }
            db::insert_mandate(
                tx,
                &NewMandate {
                    tenant: &tenant,
                    principal: &principal,
                    agent_sub: &sub,
                    parent: Some(&parent),
                    chain: &chain2,
                    claims: &claims,
                    kind: "discovery_granted",
                    details: json!({"type": req.type_, "location": req.location, "action": req.action}),
                },
            )
        })
        .await?;
    s.metrics.transition("discovery_granted");
    s.refresh(std::slice::from_ref(&grant_id))?;
    Ok(Json(super::wire::DiscoveryGrant {
        mandate_id: grant_id,
        parent: id,
        one_time: true,
        mandate: chain,
    }))
}

/// What consuming a one-time mandate did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumption {
    /// This call consumed it.
    Now,
    /// It was consumed before.
    Already,
    /// It, or an ancestor, is no longer active (`which`, `state`): over,
    /// not used, so nothing is consumed.
    Ended(String, String),
}

/// Consumes a one-time mandate exactly once, in a write job.
pub fn consume_in(
    tx: &mut mandate_store::Tx<'_>,
    tenant: &str,
    id: &str,
    by: &str,
) -> Result<Consumption, StoreError> {
    if let Some((which, state)) = db::first_inactive_in_lineage(tx.conn(), id)? {
        return Ok(Consumption::Ended(which, state));
    }
    let now = tx.now_ms();
    let n = tx.conn().execute(
        "UPDATE mandates SET consumed_ms = ?2 WHERE id = ?1 AND tenant = ?3 AND one_time = 1 AND consumed_ms IS NULL",
        params![id, now, tenant],
    )?;
    if n == 1 {
        tx.audit(Some(tenant), "consumed", Some(id), json!({"by": by}))?;
        crate::signals::emit(tx, tenant, "consumed", Some(id), &json!({"mandate_id": id}))?;
        Ok(Consumption::Now)
    } else {
        Ok(Consumption::Already)
    }
}

/// `POST /v1/mandates/{id}/consume` (enforcer): 200 the first time, 409
/// `one_time_used` after.
pub async fn consume(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<super::wire::Consumed>, ApiError> {
    caller.require(&[Role::Enforcer])?;
    let m = find(&s, &caller, &id)?;
    if !m.claims.lifecycle.one_time {
        return Err(ApiError::unprocessable(
            "not_one_time",
            "the mandate is not one-time",
        ));
    }
    let (tenant, by, id2) = (caller.tenant.clone(), caller.sub.clone(), id.clone());
    let consumed = s
        .store
        .write(move |tx| consume_in(tx, &tenant, &id2, &by))
        .await?;
    s.refresh(std::slice::from_ref(&m.id))?;
    match consumed {
        Consumption::Now => Ok(Json(super::wire::Consumed {
            mandate_id: id,
            consumed: true,
        })),
        Consumption::Already => Err(ApiError::conflict(
            "one_time_used",
            "the one-time mandate was already used",
        )),
        // The code is the state that ended it (`completed`, `revoked`, ...).
        Consumption::Ended(which, state) => Err(ApiError::conflict(
            &state,
            format!("mandate `{which}` is {state}: nothing under it can be consumed"),
        )),
    }
}
