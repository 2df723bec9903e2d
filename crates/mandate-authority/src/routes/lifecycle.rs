//! A mandate's life after issue: read, suspend, resume, revoke (with
//! cascade), amend (a new revision supersedes the old), register an
//! offline-derived child, grant a discovered tool once, consume a one-time
//! mandate.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use mandate_core::chain::{ChildLifecycle, ChildSpec, issue_discovery_grant};
use mandate_core::id::MandateId;
use mandate_core::model::{
    AuthorizationDetail, Condition, Delegation, DiscoveryAllowance, TerminalEvent,
};
use mandate_core::state::MandateState;
use mandate_core::timestamp::UnixTime;
use mandate_store::StoreError;
use mandate_store::sql::params;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::db::{self, NewMandate, state_name};
use crate::error::{ApiError, parse_body};
use crate::registry::MandateRecord;
use crate::routes::requests::new_id;
use crate::service::lifecycle::{self as service, Move};
use crate::state::AppState;

fn find(s: &AppState, caller: &Caller, id: &str) -> Result<MandateRecord, ApiError> {
    Ok(service::find(s, caller, id)?)
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
    mv: Move,
    operation: &str,
) -> Result<Json<super::wire::Transition>, ApiError> {
    // Who may is checked (and a refusal audited) before the body is read.
    let m = find(&s, &caller, &id)?;
    service::governs(&s, &caller, &m, operation).await?;
    let reason: Reason = if body.is_empty() {
        Reason::default()
    } else {
        parse_body(&body)?
    };
    let moved = service::transition(&s, &caller, &id, mv, reason.reason).await?;
    Ok(Json(super::wire::Transition {
        mandate_id: id,
        state: state_name(moved.state).to_owned(),
        changed: moved.changed,
    }))
}

/// `POST /v1/mandates/{id}/suspend`.
pub async fn suspend(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Transition>, ApiError> {
    move_to(s, caller, id, body, Move::Suspend, "suspend mandates").await
}

/// `POST /v1/mandates/{id}/resume`.
pub async fn resume(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Transition>, ApiError> {
    move_to(s, caller, id, body, Move::Resume, "resume mandates").await
}

/// `POST /v1/mandates/{id}/revoke`: cascades to every descendant.
pub async fn revoke(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Transition>, ApiError> {
    move_to(s, caller, id, body, Move::Revoke, "revoke mandates").await
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

impl From<Amendment> for service::Amendment {
    fn from(a: Amendment) -> Self {
        Self {
            authorization_details: a.authorization_details,
            conditions: a.conditions,
            hard_expiry: a.hard_expiry,
            terminal_events: a.terminal_events,
            delegation: a.delegation,
            discovery: a.discovery,
            reason: a.reason,
        }
    }
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
    service::governs(&s, &caller, &m, "amend mandates").await?;
    let a: Amendment = parse_body(&body)?;
    let amended = service::amend(&s, &caller, &id, a.into()).await?;
    Ok(Json(super::wire::Amended {
        mandate_id: amended.mandate_id,
        supersedes: id,
        state: "active".to_owned(),
        mandate: amended.mandate,
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
            StoreError::Database(e) if e.is_unique_violation() => {
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
