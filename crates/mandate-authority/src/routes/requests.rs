//! Requests and consent: an agent asks, the principal approves or denies,
//! the authority signs.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mandate_core::chain::issue_root;
use mandate_core::id::MandateId;
use mandate_core::model::{
    Agent, AuthorizationDetail, Condition, Delegation, DiscoveryAllowance, MandateClaims, OnExpiry,
    Principal, Purpose, TerminalEvent, TokenBinding,
};
use mandate_core::timestamp::UnixTime;
use mandate_core::validate::{CheckConditions, validate};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Caller, Role};
use crate::db::{self, NewMandate};
use crate::error::{ApiError, parse_body};
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

/// Random id with a prefix.
pub fn new_id(prefix: &str) -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 10];
    rand_core::OsRng.fill_bytes(&mut b);
    format!("{prefix}-{}", hex::encode(b))
}

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

/// The consent evidence: SHA-256 (hex) of the canonical JSON of exactly
/// what the principal is shown, which is the request as stored.
pub fn consent_hash(body: &Value) -> Result<String, ApiError> {
    let text = mandate_store::audit::canonical(body).map_err(ApiError::internal)?;
    Ok(hex::encode(mandate_core::hash::sha256(text.as_bytes())))
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
    let stored = serde_json::to_value(&req).map_err(ApiError::internal)?;
    let consent = consent_hash(&stored)?;
    let id = new_id("req");
    let (tenant, sub) = (caller.tenant.clone(), caller.sub.clone());
    let (id2, consent2) = (id.clone(), consent.clone());
    s.store
        .write(move |tx| {
            let now = tx.now_ms();
            tx.conn().execute(
                "INSERT INTO requests (id, tenant, principal, agent_sub, body, state, created_ms, consent_sha256) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
                params![id2, tenant, req.principal, sub, stored.to_string(), now, consent2],
            )?;
            tx.audit(Some(&tenant), "requested", None, json!({"request": id2, "agent": sub, "principal": req.principal, "purpose": req.purpose}))?;
            Ok(())
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(super::wire::RequestCreated {
            id,
            state: super::wire::PendingState::Pending,
            consent_sha256: consent,
        }),
    ))
}

struct RequestRow {
    tenant: String,
    principal: String,
    agent_sub: String,
    body: Value,
    state: String,
    consent: String,
    mandate_id: Option<String>,
    reason: Option<String>,
}

fn load_request(s: &AppState, caller: &Caller, id: &str) -> Result<RequestRow, ApiError> {
    let row = s.store.read(|c| {
        Ok(c.query_row(
            "SELECT tenant, principal, agent_sub, body, state, consent_sha256, mandate_id, reason FROM requests WHERE id = ?1",
            params![id],
            |r| {
                Ok(RequestRow {
                    tenant: r.get(0)?,
                    principal: r.get(1)?,
                    agent_sub: r.get(2)?,
                    body: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or(Value::Null),
                    state: r.get(4)?,
                    consent: r.get(5)?,
                    mandate_id: r.get(6)?,
                    reason: r.get(7)?,
                })
            },
        )
        .optional()?)
    })?;
    row.filter(|r| r.tenant == caller.tenant)
        .ok_or_else(|| ApiError::not_found("request"))
}

/// Records a refused attempt in the audit log, then returns the 403.
pub async fn refuse(
    s: &AppState,
    caller: &Caller,
    operation: &str,
    mandate_id: Option<&str>,
) -> ApiError {
    let message = format!("role `{}` may not {operation}", caller.role.as_str());
    refuse_saying(s, caller, operation, mandate_id, message).await
}

/// As [`refuse`], for what the caller's role may do but not here: a
/// principal acting on another principal's request or mandate is told that
/// (not that principals may not).
pub async fn refuse_not_theirs(
    s: &AppState,
    caller: &Caller,
    operation: &str,
    mandate_id: Option<&str>,
) -> ApiError {
    if caller.role != Role::Principal {
        return refuse(s, caller, operation, mandate_id).await;
    }
    // "approve requests" → "approve it": said of this one.
    let verb = operation
        .trim_end_matches(" requests")
        .trim_end_matches(" mandates");
    let message = match mandate_id {
        Some(id) => format!(
            "mandate {id} was granted by another principal: only that principal or an admin may {verb} it"
        ),
        None => format!(
            "this request is addressed to another principal: only that principal or an admin may {verb} it"
        ),
    };
    refuse_saying(s, caller, operation, mandate_id, message).await
}

async fn refuse_saying(
    s: &AppState,
    caller: &Caller,
    operation: &str,
    mandate_id: Option<&str>,
    message: String,
) -> ApiError {
    let (tenant, body) = (
        caller.tenant.clone(),
        json!({"caller": caller.sub, "role": caller.role.as_str(), "operation": operation}),
    );
    let mid = mandate_id.map(str::to_owned);
    let _ = s
        .store
        .write(move |tx| tx.audit(Some(&tenant), "refused", mid.as_deref(), body))
        .await;
    ApiError::forbidden(message)
}

/// `GET /v1/requests/{id}`: the requesting agent, the addressed principal, or an admin.
pub async fn show(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<super::wire::RequestView>, ApiError> {
    let r = load_request(&s, &caller, &id)?;
    let allowed = match caller.role {
        Role::Admin => true,
        Role::Principal => r.principal == caller.sub,
        Role::Agent => r.agent_sub == caller.sub,
        _ => false,
    };
    if !allowed {
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

fn may_decide(caller: &Caller, r: &RequestRow) -> bool {
    match caller.role {
        Role::Admin => true,
        Role::Principal => r.principal == caller.sub,
        _ => false,
    }
}

/// `POST /v1/requests/{id}/approve`: the addressed principal or an admin.
pub async fn approve(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Approved>, ApiError> {
    let r = load_request(&s, &caller, &id)?;
    if !may_decide(&caller, &r) {
        return Err(refuse_not_theirs(&s, &caller, "approve requests", None).await);
    }
    let approval: Approval = if body.is_empty() {
        Approval::default()
    } else {
        parse_body(&body)?
    };
    if let Some(h) = &approval.consent_sha256
        && !bool::from(subtle::ConstantTimeEq::ct_eq(
            h.as_bytes(),
            r.consent.as_bytes(),
        ))
    {
        return Err(ApiError::conflict(
            "consent_mismatch",
            "consent_sha256: the request differs from what was shown",
        ));
    }
    match r.state.as_str() {
        "approved" => {
            let chain = r.mandate_id.as_deref().and_then(|m| {
                s.with_registry(|reg| reg.get(&caller.tenant, m).map(|x| x.chain.to_string()))
                    .ok()
                    .flatten()
            });
            return Ok(Json(super::wire::Approved {
                id,
                state: "approved".to_owned(),
                mandate_id: r.mandate_id.unwrap_or_default(),
                mandate: chain,
            }));
        }
        "pending" => {}
        other => {
            return Err(ApiError::conflict(
                "conflict",
                format!("request is {other}"),
            ));
        }
    }
    let req: MandateRequest = serde_json::from_value(r.body.clone()).map_err(ApiError::internal)?;
    let mandate_id = MandateId::new(new_id("mnd")).map_err(ApiError::internal)?;
    let grant_ref = format!("gnt-{}", id.trim_start_matches("req-"));
    let principal_iss = if caller.role == Role::Principal {
        caller.iss.clone()
    } else {
        crate::config::LOCAL_ISSUER.to_owned()
    };
    let claims = req.claims(
        &s.issuer,
        mandate_id.clone(),
        &principal_iss,
        &grant_ref,
        crate::auth::now_secs(),
    )?;
    let jws = issue_root(&s.authority(), &claims)
        .map_err(|e| ApiError::unprocessable("invalid_mandate", e.to_string()))?;
    let (tenant, who, consent, jws2, agent_sub) = (
        caller.tenant.clone(),
        caller.sub.clone(),
        r.consent.clone(),
        jws.clone(),
        r.agent_sub.clone(),
    );
    let id2 = id.clone();
    s.store
        .write(move |tx| {
            let now = tx.now_ms();
            let n = tx.conn().execute(
                "UPDATE requests SET state = 'approved', decided_by = ?2, decided_ms = ?3, mandate_id = ?4 WHERE id = ?1 AND state = 'pending'",
                params![id2, who, now, claims.mandate_id.as_str()],
            )?;
            if n != 1 {
                return Err(mandate_store::StoreError::conflict("decided", "the request was decided meanwhile"));
            }
            tx.audit(Some(&tenant), "approved", Some(claims.mandate_id.as_str()), json!({"request": id2, "by": who, "consent_sha256": consent, "grant_ref": claims.principal.grant_ref}))?;
            db::insert_mandate(
                tx,
                &NewMandate {
                    tenant: &tenant,
                    principal: &claims.principal.sub,
                    agent_sub: &agent_sub,
                    parent: None,
                    chain: &jws2,
                    claims: &claims,
                    kind: "issued",
                    details: json!({"request": id2}),
                },
            )
        })
        .await?;
    s.metrics.transition("issued");
    s.refresh(std::slice::from_ref(&mandate_id))?;
    Ok(Json(super::wire::Approved {
        id,
        state: "approved".to_owned(),
        mandate_id: mandate_id.to_string(),
        mandate: Some(jws),
    }))
}

/// `POST /v1/requests/{id}/deny`.
pub async fn deny(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<super::wire::Denied>, ApiError> {
    let r = load_request(&s, &caller, &id)?;
    if !may_decide(&caller, &r) {
        return Err(refuse_not_theirs(&s, &caller, "deny requests", None).await);
    }
    let denial: Denial = if body.is_empty() {
        Denial::default()
    } else {
        parse_body(&body)?
    };
    match r.state.as_str() {
        "denied" => {
            return Ok(Json(super::wire::Denied {
                id,
                state: "denied".to_owned(),
                reason: r.reason,
            }));
        }
        "pending" => {}
        other => {
            return Err(ApiError::conflict(
                "conflict",
                format!("request is {other}"),
            ));
        }
    }
    let (tenant, who, id2, reason) = (
        caller.tenant.clone(),
        caller.sub.clone(),
        id.clone(),
        denial.reason.clone(),
    );
    s.store
        .write(move |tx| {
            let now = tx.now_ms();
            let n = tx.conn().execute(
                "UPDATE requests SET state = 'denied', decided_by = ?2, decided_ms = ?3, reason = ?4 WHERE id = ?1 AND state = 'pending'",
                params![id2, who, now, reason],
            )?;
            // Approved (or denied) by someone else meanwhile: exactly one
            // outcome, and this one is not it.
            if n != 1 {
                return Err(mandate_store::StoreError::conflict(
                    "decided",
                    "the request was decided meanwhile",
                ));
            }
            tx.audit(Some(&tenant), "request_denied", None, json!({"request": id2, "by": who, "reason": reason}))?;
            Ok(())
        })
        .await?;
    Ok(Json(super::wire::Denied {
        id,
        state: "denied".to_owned(),
        reason: denial.reason,
    }))
}
