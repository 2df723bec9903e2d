//! A mandate's life after issue, as the principal (or an admin) governs it:
//! suspend, resume, revoke with cascade, amend (a new revision supersedes
//! the old one).

use mandate_core::chain::issue_root;
use mandate_core::id::MandateId;
use mandate_core::model::{
    AuthorizationDetail, Condition, Delegation, DiscoveryAllowance, TerminalEvent,
};
use mandate_core::state::MandateState;
use mandate_core::timestamp::UnixTime;
use mandate_store::StoreError;
use mandate_store::sql::params;
use serde_json::json;

use super::new_id;
use super::{Error, Result};
use crate::auth::{Caller, Role};
use crate::registry::MandateRecord;
use crate::state::AppState;
use crate::store::{self, NewMandate, state_name};

/// The mandate `id` of the caller's tenant, from memory.
///
/// # Errors
/// Not found (also for another tenant's).
pub fn find(s: &AppState, caller: &Caller, id: &str) -> Result<MandateRecord> {
    s.with_registry(|r| r.get(&caller.tenant, id).cloned())?
        .ok_or_else(|| Error::not_found("mandate"))
}

/// Whether the caller governs this mandate: its granting principal or an
/// admin of its tenant. Agents never do; a refusal is audited.
///
/// # Errors
/// Forbidden.
pub async fn governs(
    s: &AppState,
    caller: &Caller,
    m: &MandateRecord,
    operation: &str,
) -> Result<()> {
    let ok = match caller.role {
        Role::Admin => true,
        Role::Principal => m.principal == caller.sub,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(super::requests::refuse_not_theirs(s, caller, operation, Some(m.id.as_str())).await)
    }
}

/// A governing move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Active → suspended.
    Suspend,
    /// Suspended → active.
    Resume,
    /// Any live state → revoked, with every descendant.
    Revoke,
}

impl Move {
    fn target(self) -> MandateState {
        match self {
            Move::Suspend => MandateState::Suspended,
            Move::Resume => MandateState::Active,
            Move::Revoke => MandateState::Revoked,
        }
    }
    fn operation(self) -> &'static str {
        match self {
            Move::Suspend => "suspend mandates",
            Move::Resume => "resume mandates",
            Move::Revoke => "revoke mandates",
        }
    }
}

/// What a move did: the mandate's state after it and every mandate that
/// changed (a revocation's cascade).
#[derive(Debug, Clone)]
pub struct Moved {
    /// The mandate's state now.
    pub state: MandateState,
    /// Every mandate that changed.
    pub changed: Vec<MandateId>,
}

/// Suspends, resumes or revokes mandate `id`. Repeating a move changes
/// nothing; a move out of an ended state is a conflict.
///
/// # Errors
/// Not found; forbidden (audited); a conflict.
pub async fn transition(
    s: &AppState,
    caller: &Caller,
    id: &str,
    mv: Move,
    reason: Option<String>,
) -> Result<Moved> {
    let m = find(s, caller, id)?;
    governs(s, caller, &m, mv.operation()).await?;
    let to = mv.target();
    let by = caller.sub.clone();
    let reason = reason.unwrap_or_default();
    let id2 = id.to_owned();
    let changed = s
        .store
        .write(move |tx| {
            if mv == Move::Resume {
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
            store::transition(tx, &id2, to, &by, &reason)
        })
        .await?;
    for _ in &changed {
        s.metrics.transition(state_name(to));
    }
    s.refresh(&changed)?;
    let m = find(s, caller, id)?;
    Ok(Moved {
        state: m.state,
        changed,
    })
}

/// What an amendment changes; everything else is kept.
#[derive(Debug, Default, Clone)]
pub struct Amendment {
    /// New scope.
    pub authorization_details: Option<Vec<AuthorizationDetail>>,
    /// New conditions.
    pub conditions: Option<Vec<Condition>>,
    /// New hard expiry.
    pub hard_expiry: Option<UnixTime>,
    /// New terminal events.
    pub terminal_events: Option<Vec<TerminalEvent>>,
    /// New delegation rules.
    pub delegation: Option<Delegation>,
    /// New discovery allowance.
    pub discovery: Option<DiscoveryAllowance>,
    /// Why.
    pub reason: Option<String>,
    /// A wider scope approved afresh in the console: the hash of the page
    /// that showed what it adds, recorded in the amendment's own commit.
    pub widening_shown: Option<String>,
}

/// An amendment's result: the new revision.
#[derive(Debug, Clone)]
pub struct Amended {
    /// The new mandate's id.
    pub mandate_id: MandateId,
    /// Its signed form.
    pub mandate: String,
}

/// Amends root mandate `id`: the authority signs a new revision with the
/// changes, which supersedes the old one (ending its descendants), in one
/// commit. Only an active root is amended.
///
/// # Errors
/// Not found; forbidden (audited); invalid for a child or an unsignable
/// revision; a conflict when it is not active.
pub async fn amend(s: &AppState, caller: &Caller, id: &str, a: Amendment) -> Result<Amended> {
    let m = find(s, caller, id)?;
    governs(s, caller, &m, "amend mandates").await?;
    amend_governed(s, caller, &m, a).await
}

/// [`amend`] once the caller is known to govern `m`.
async fn amend_governed(
    s: &AppState,
    caller: &Caller,
    m: &MandateRecord,
    a: Amendment,
) -> Result<Amended> {
    let id = m.id.as_str();
    if m.parent.is_some() {
        return Err(Error::invalid(
            "not_a_root",
            "only a root mandate is amended; amend its root",
        ));
    }
    if store::is_terminal(m.state) {
        return Err(Error::conflict(
            "conflict",
            format!(
                "mandate `{id}` is {}: it cannot be amended",
                state_name(m.state)
            ),
        ));
    }
    let mut claims = (*m.claims).clone();
    let new_id = MandateId::new(new_id("mnd")).map_err(Error::internal)?;
    let now = UnixTime::from_secs(crate::auth::now_secs()).map_err(Error::internal)?;
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
        .map_err(|e| Error::invalid("invalid_mandate", e.to_string()))?;
    let (tenant, by, old, jws2, agent_sub, reason) = (
        caller.tenant.clone(),
        caller.sub.clone(),
        id.to_owned(),
        jws.clone(),
        m.agent_sub.clone(),
        a.reason.unwrap_or_default(),
    );
    let widening_shown = a.widening_shown;
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
            let changed = store::transition(tx, &old, MandateState::Superseded, &by, &reason)?;
            tx.conn().execute(
                "UPDATE mandates SET superseded_by = ?2 WHERE id = ?1",
                params![old, claims.mandate_id.as_str()],
            )?;
            store::insert_mandate(
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
            if let Some(shown) = &widening_shown {
                tx.audit(
                    Some(&tenant),
                    "widening_approved",
                    Some(claims.mandate_id.as_str()),
                    json!({"by": by, "supersedes": old, "shown_sha256": shown}),
                )?;
            }
            Ok(changed)
        })
        .await?;
    s.metrics.transition("amended");
    changed.push(new_id.clone());
    s.refresh(&changed)?;
    Ok(Amended {
        mandate_id: new_id,
        mandate: jws,
    })
}

/// The mandate that `?1` superseded, in tenant `?2`: by the
/// `mandates_superseded_by` index.
pub(crate) const SUPERSEDED: &str =
    "SELECT id FROM mandates WHERE superseded_by = ?1 AND tenant = ?2";

/// The revisions around mandate `id`: the one it amended, and the one that
/// superseded it.
///
/// # Errors
/// A store failure.
pub fn revisions(
    s: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Option<String>, Option<String>)> {
    use mandate_store::sql::OptionalExtension as _;
    Ok(s.store.read(|c| {
        let by: Option<String> = c
            .query_row(
                "SELECT superseded_by FROM mandates WHERE id = ?1 AND tenant = ?2",
                params![id, caller.tenant],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let of: Option<String> = c
            .query_row(SUPERSEDED, params![id, caller.tenant], |r| r.get(0))
            .optional()?;
        Ok((of, by))
    })?)
}
