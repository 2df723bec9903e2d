//! Mandate requests: who may see and decide one, approval (the authority
//! signs the mandate) and denial, exactly one outcome each.

use mandate_core::chain::issue_root;
use mandate_core::id::MandateId;
use mandate_store::sql::{OptionalExtension, params};
use serde_json::{Value, json};

use super::new_id;
use super::{Error, Result};
use crate::auth::{Caller, Role};
use crate::http::requests::MandateRequest;
use crate::state::AppState;
use crate::store::{self, NewMandate};

/// A stored request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Whom it is addressed to.
    pub principal: String,
    /// The agent (caller subject) that made it.
    pub agent_sub: String,
    /// The request as made (what the principal is shown).
    pub body: Value,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    /// SHA-256 of the consent page.
    pub consent: String,
    /// The mandate issued, once approved.
    pub mandate_id: Option<String>,
    /// Why it was denied.
    pub reason: Option<String>,
}

/// The consent evidence: SHA-256 (hex) of the canonical JSON of exactly
/// what the principal is shown, which is the request as stored.
///
/// # Errors
/// Internal, for a value JSON cannot hold.
pub fn consent_hash(body: &Value) -> Result<String> {
    let text = mandate_store::audit::canonical(body)?;
    Ok(hex::encode(mandate_core::hash::sha256(text.as_bytes())))
}

/// The request `id` of the caller's tenant (not found for another
/// tenant's). Visibility is the caller's to check ([`may_see`]).
///
/// # Errors
/// Not found; a store failure.
pub fn load(s: &AppState, caller: &Caller, id: &str) -> Result<Request> {
    let row = s.store.read(|c| {
        Ok(c.query_row(
            "SELECT tenant, principal, agent_sub, body, state, consent_sha256, mandate_id, reason FROM requests WHERE id = ?1",
            params![id],
            |r| {
                Ok(Request {
                    id: id.to_owned(),
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
        .ok_or_else(|| Error::not_found("request"))
}

/// Whether the caller may see the request: the agent that made it, the
/// principal it is addressed to, an admin.
#[must_use]
pub fn may_see(caller: &Caller, r: &Request) -> bool {
    match caller.role {
        Role::Admin => true,
        Role::Principal => r.principal == caller.sub,
        Role::Agent => r.agent_sub == caller.sub,
        _ => false,
    }
}

/// Whether the caller may decide it: the addressed principal or an admin.
#[must_use]
pub fn may_decide(caller: &Caller, r: &Request) -> bool {
    match caller.role {
        Role::Admin => true,
        Role::Principal => r.principal == caller.sub,
        _ => false,
    }
}

/// Records a refused attempt in the audit log; the refusal to answer with.
pub async fn refuse(
    s: &AppState,
    caller: &Caller,
    operation: &str,
    mandate_id: Option<&str>,
) -> Error {
    let message = format!("role `{}` may not {operation}", caller.role.as_str());
    refuse_saying(s, caller, operation, mandate_id, message).await
}

/// [`refuse`], saying to a principal that the object is another's (not that
/// principals may not).
pub async fn refuse_not_theirs(
    s: &AppState,
    caller: &Caller,
    operation: &str,
    mandate_id: Option<&str>,
) -> Error {
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
) -> Error {
    let (tenant, body) = (
        caller.tenant.clone(),
        json!({"caller": caller.sub, "role": caller.role.as_str(), "operation": operation}),
    );
    let mid = mandate_id.map(str::to_owned);
    let _ = s
        .store
        .write(move |tx| tx.audit(Some(&tenant), "refused", mid.as_deref(), body))
        .await;
    Error::forbidden(message)
}

/// An approval: the mandate issued (its chain is absent when an approval
/// is repeated after the mandate left memory).
#[derive(Debug, Clone)]
pub struct Approval {
    /// The mandate's id.
    pub mandate_id: String,
    /// The signed mandate.
    pub mandate: Option<String>,
}

/// Approves request `id`: checks the consent hash against what was shown
/// (when given), signs the mandate, records the approval and the mandate in
/// one commit — with the hash of the page a console showed (`shown`), when
/// approved there. Repeating an approval answers the same mandate.
///
/// # Errors
/// Not found; forbidden (refusal audited); `consent_mismatch`; a conflict
/// when the request was denied (or decided meanwhile); invalid when the
/// mandate cannot be issued.
pub async fn approve(
    s: &AppState,
    caller: &Caller,
    id: &str,
    consent_sha256: Option<&str>,
    shown: Option<&str>,
) -> Result<Approval> {
    let r = load(s, caller, id)?;
    if !may_decide(caller, &r) {
        return Err(refuse_not_theirs(s, caller, "approve requests", None).await);
    }
    if let Some(h) = consent_sha256
        && !bool::from(subtle::ConstantTimeEq::ct_eq(
            h.as_bytes(),
            r.consent.as_bytes(),
        ))
    {
        return Err(Error::conflict(
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
            return Ok(Approval {
                mandate_id: r.mandate_id.unwrap_or_default(),
                mandate: chain,
            });
        }
        "pending" => {}
        other => return Err(Error::conflict("conflict", format!("request is {other}"))),
    }
    let req: MandateRequest = serde_json::from_value(r.body.clone()).map_err(Error::internal)?;
    let mandate_id = MandateId::new(new_id("mnd")).map_err(Error::internal)?;
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
        .map_err(|e| Error::invalid("invalid_mandate", e.to_string()))?;
    let (tenant, who, consent, jws2, agent_sub, id2) = (
        caller.tenant.clone(),
        caller.sub.clone(),
        r.consent.clone(),
        jws.clone(),
        r.agent_sub.clone(),
        id.to_owned(),
    );
    let shown = shown.map(str::to_owned);
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
            store::insert_mandate(
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
            )?;
            if let Some(shown) = shown {
                tx.audit(
                    Some(&tenant),
                    "consent_shown",
                    Some(claims.mandate_id.as_str()),
                    json!({"request": id2, "by": who, "shown_sha256": shown}),
                )?;
            }
            Ok(())
        })
        .await?;
    s.metrics.transition("issued");
    s.refresh(std::slice::from_ref(&mandate_id))?;
    Ok(Approval {
        mandate_id: mandate_id.to_string(),
        mandate: Some(jws),
    })
}

/// Denies request `id` with a reason. Repeating a denial answers the first
/// one's reason.
///
/// # Errors
/// Not found; forbidden (refusal audited); a conflict when it was approved
/// (or decided meanwhile).
pub async fn deny(
    s: &AppState,
    caller: &Caller,
    id: &str,
    reason: Option<String>,
) -> Result<Option<String>> {
    let r = load(s, caller, id)?;
    if !may_decide(caller, &r) {
        return Err(refuse_not_theirs(s, caller, "deny requests", None).await);
    }
    match r.state.as_str() {
        "denied" => return Ok(r.reason),
        "pending" => {}
        other => return Err(Error::conflict("conflict", format!("request is {other}"))),
    }
    let (tenant, who, id2, reason2) = (
        caller.tenant.clone(),
        caller.sub.clone(),
        id.to_owned(),
        reason.clone(),
    );
    s.store
        .write(move |tx| {
            let now = tx.now_ms();
            let n = tx.conn().execute(
                "UPDATE requests SET state = 'denied', decided_by = ?2, decided_ms = ?3, reason = ?4 WHERE id = ?1 AND state = 'pending'",
                params![id2, who, now, reason2],
            )?;
            // Approved (or denied) by someone else meanwhile: exactly one
            // outcome, and this one is not it.
            if n != 1 {
                return Err(mandate_store::StoreError::conflict(
                    "decided",
                    "the request was decided meanwhile",
                ));
            }
            tx.audit(Some(&tenant), "request_denied", None, json!({"request": id2, "by": who, "reason": reason2}))?;
            Ok(())
        })
        .await?;
    Ok(reason)
}

/// Records an agent's request (already validated as the mandate it would
/// become) as pending. Returns its id and the hash of what the principal
/// will be shown to consent to.
///
/// # Errors
/// A store failure.
pub async fn create(
    s: &AppState,
    caller: &Caller,
    req: &MandateRequest,
) -> Result<(String, String)> {
    let stored = serde_json::to_value(req).map_err(Error::internal)?;
    let consent = consent_hash(&stored)?;
    let id = new_id("req");
    let (tenant, sub) = (caller.tenant.clone(), caller.sub.clone());
    let (id2, consent2) = (id.clone(), consent.clone());
    let (principal, purpose) = (req.principal.clone(), req.purpose.clone());
    s.store
        .write(move |tx| {
            let now = tx.now_ms();
            tx.conn().execute(
                "INSERT INTO requests (id, tenant, principal, agent_sub, body, state, created_ms, consent_sha256) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
                params![id2, tenant, principal, sub, stored.to_string(), now, consent2],
            )?;
            tx.audit(Some(&tenant), "requested", None, json!({"request": id2, "agent": sub, "principal": principal, "purpose": purpose}))?;
            Ok(())
        })
        .await?;
    Ok((id, consent))
}
