//! Requests and consent: an agent asks, the principal approves or denies,
//! the authority signs.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mandate_core::id::MandateId;
use mandate_core::model::{
    Agent, AuthorizationDetail, Condition, Delegation, DiscoveryAllowance, MandateClaims, OnExpiry,
    Principal, Purpose, TerminalEvent, TokenBinding,
};
use mandate_core::timestamp::UnixTime;
use mandate_core::validate::{CheckConditions, validate};
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, parse_body};
use crate::service::requests as service;
use crate::state::AppState;

/// What an agent asks for.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MandateRequest {
    /// The principal asked to grant it.
    pub principal: String,
    /// The requesting agent and its holder key.
    pub agent: Agent,
    /// Why.
    pub purpose: Purpose,
    /// What.
    pub authorization_details: Vec<AuthorizationDetail>,
    /// What must remain true.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When it ends.
    pub lifecycle: RequestedLifecycle,
    /// How it may be delegated.
    pub delegation: Delegation,
    /// What may be discovered.
    #[serde(default)]
    pub discovery: Option<DiscoveryAllowance>,
    /// The access token it governs.
    #[serde(default)]
    pub token_binding: Option<TokenBinding>,
}

/// The requested lifecycle.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestedLifecycle {
    /// The hard expiry.
    pub hard_expiry: UnixTime,
    /// Business events that end it.
    #[serde(default)]
    pub terminal_events: Vec<TerminalEvent>,
}

pub use crate::service::new_id;

impl MandateRequest {
    /// The claims this request becomes when approved.
    pub fn claims(
        &self,
        issuer: &str,
        mandate_id: MandateId,
        principal_iss: &str,
        grant_ref: &str,
        now: i64,
    ) -> Result<MandateClaims, ApiError> {
        let now = UnixTime::from_secs(now).map_err(ApiError::internal)?;
        Ok(MandateClaims {
            iss: issuer.to_owned(),
            iat: now,
            nbf: now,
            exp: self.lifecycle.hard_expiry,
            jti: mandate_id.as_str().to_owned(),
            mandate_id,
            principal: Principal {
                sub: self.principal.clone(),
                iss: principal_iss.to_owned(),
                grant_ref: grant_ref.to_owned(),
            },
            agent: self.agent.clone(),
            purpose: self.purpose.clone(),
            authorization_details: self.authorization_details.clone(),
            conditions: self.conditions.clone(),
            lifecycle: mandate_core::model::Lifecycle {
                hard_expiry: self.lifecycle.hard_expiry,
                terminal_events: self.lifecycle.terminal_events.clone(),
                on_expiry: OnExpiry::RevokeAndCascade,
                one_time: false,
            },
            delegation: self.delegation.clone(),
            delegation_chain: Vec::new(),
            token_binding: self.token_binding.clone(),
            discovery: self.discovery.clone(),
            extensions: Default::default(),
        })
    }
}

/// `POST /v1/requests` (agent).
pub async fn create(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<super::wire::RequestCreated>), ApiError> {
    caller.require(&[Role::Agent])?;
    let req: MandateRequest = parse_body(&body)?;
    // Every use needs a proof by the holder key: a mandate binding none
    // could never be used, so it is not asked for.
    if s.config.proof_of_possession == mandate_core::pop::Mode::Required {
        let cnf = req.agent.cnf.as_ref().ok_or_else(|| {
            ApiError::bad_request(
                "agent.cnf.jwk: missing (every use of a mandate is proved with the holder key it binds)",
            )
        })?;
        mandate_core::keys::VerifyingKey::from_jwk(&cnf.jwk)
            .map_err(|e| ApiError::bad_request(format!("agent.cnf.jwk: {e}")))?;
    }
    // Validate now, as the mandate it would become: refuse what could never be issued.
    let probe = req.claims(
        &s.issuer,
        MandateId::new("mnd-probe").map_err(ApiError::internal)?,
        "probe",
        "probe",
        crate::auth::now_secs(),
    )?;
    validate(&probe, CheckConditions::Compile)
        .map_err(|p| ApiError::unprocessable("invalid_mandate", p.to_string()))?;
    let (id, consent) = service::create(&s, &caller, &req).await?;
    Ok((
        StatusCode::CREATED,
        Json(super::wire::RequestCreated {
            id,
            state: super::wire::PendingState::Pending,
            consent_sha256: consent,
        }),
    ))
}

/// Records a refused attempt in the audit log, then returns the 403.
pub async fn refuse(
    s: &AppState,
    caller: &Caller,
    operation: &str,
    mandate_id: Option<&str>,
) -> ApiError {
    service::refuse(s, caller, operation, mandate_id)
        .await
        .into()
}

/// `GET /v1/requests/{id}`: the requesting agent, the addressed principal, or an admin.
pub async fn show(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<super::wire::RequestView>, ApiError> {
    let r = service::load(&s, &caller, &id)?;
    if !service::may_see(&caller, &r) {
        return Err(ApiError::not_found("request"));
    }
    let mandate = match &r.mandate_id {
        Some(m) => {
            s.with_registry(|reg| reg.get(&caller.tenant, m).map(|rec| rec.chain.to_string()))?
        }
        None => None,
    };
    Ok(Json(super::wire::RequestView {
        id,
        state: r.state,
        principal: r.principal,
        agent: r.agent_sub,
        request: r.body,
        consent_sha256: r.consent,
        mandate_id: r.mandate_id,
        mandate,
        reason: r.reason,
    }))
}

/// The approval body.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The consent hash of what the principal was shown; must match.
    #[serde(default)]
    consent_sha256: Option<String>,
}

/// The denial body.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Denial {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/requests/{id}/approve`: the addressed principal or an admin.
pub async fn approve(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Approved>, ApiError> {
    // Who may decide is checked (and a refusal audited) before the body is read.
    let r = service::load(&s, &caller, &id)?;
    if !service::may_decide(&caller, &r) {
        return Err(
            service::refuse_not_theirs(&s, &caller, "approve requests", None)
                .await
                .into(),
        );
    }
    let approval: Approval = if body.is_empty() {
        Approval::default()
    } else {
        parse_body(&body)?
    };
    let a = service::approve(&s, &caller, &id, approval.consent_sha256.as_deref(), None).await?;
    Ok(Json(super::wire::Approved {
        id,
        state: "approved".to_owned(),
        mandate_id: a.mandate_id,
        mandate: a.mandate,
    }))
}

/// `POST /v1/requests/{id}/deny`.
pub async fn deny(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Denied>, ApiError> {
    let r = service::load(&s, &caller, &id)?;
    if !service::may_decide(&caller, &r) {
        return Err(
            service::refuse_not_theirs(&s, &caller, "deny requests", None)
                .await
                .into(),
        );
    }
    let denial: Denial = if body.is_empty() {
        Denial::default()
    } else {
        parse_body(&body)?
    };
    let reason = service::deny(&s, &caller, &id, denial.reason).await?;
    Ok(Json(super::wire::Denied {
        id,
        state: "denied".to_owned(),
        reason,
    }))
}
