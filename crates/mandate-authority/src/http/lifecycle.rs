//! A mandate's life after issue: read, suspend, resume, revoke (with
//! cascade), amend (a new revision supersedes the old), register an
//! offline-derived child, grant a discovered tool once, consume a one-time
//! mandate.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use mandate_core::model::{
    AuthorizationDetail, Condition, Delegation, DiscoveryAllowance, TerminalEvent,
};
use mandate_core::timestamp::UnixTime;
use serde::Deserialize;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, parse_body};
use crate::registry::MandateRecord;
use crate::service::delegation;
pub use crate::service::delegation::DiscoveryRequest;
use crate::service::lifecycle::{self as service, Move};
use crate::state::AppState;
use crate::store::state_name;

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
            // Only the console's fresh-approval page has one.
            widening_shown: None,
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
    let reg: ChildRegistration = parse_body(&body)?;
    let child_id = delegation::register_child(&s, &caller, &id, &reg.mandate).await?;
    Ok(Json(super::wire::ChildRegistered {
        mandate_id: child_id,
        parent: id,
        state: "active".to_owned(),
    }))
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
    let req: DiscoveryRequest = parse_body(&body)?;
    let (grant_id, chain) = delegation::discovery(&s, &caller, &id, req).await?;
    Ok(Json(super::wire::DiscoveryGrant {
        mandate_id: grant_id,
        parent: id,
        one_time: true,
        mandate: chain,
    }))
}

/// `POST /v1/mandates/{id}/consume` (enforcer): 200 the first time, 409
/// `one_time_used` after.
pub async fn consume(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<super::wire::Consumed>, ApiError> {
    delegation::consume(&s, &caller, &id).await?;
    Ok(Json(super::wire::Consumed {
        mandate_id: id,
        consumed: true,
    }))
}
