//! Delegation below a mandate the authority issued: an offline-derived child
//! registered by its holder, a discovered tool granted once, and the
//! consumption of a one-time mandate.

use mandate_core::chain::{ChildLifecycle, ChildSpec, issue_discovery_grant};
use mandate_core::id::MandateId;
use mandate_core::model::{AuthorizationDetail, Delegation};
use mandate_core::state::MandateState;
use mandate_core::timestamp::UnixTime;
use mandate_store::StoreError;
use mandate_store::sql::params;
use serde::Deserialize;
use serde_json::json;

use super::new_id;
use super::{Error, Result};
use crate::auth::{Caller, Role};
use crate::state::AppState;
use crate::store::{self, NewMandate, state_name};

/// A tool an agent found and asks to use once.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryRequest {
    /// The kind of tool (an `authorization_details` type).
    #[serde(rename = "type")]
    pub type_: String,
    /// Where it is.
    pub location: String,
    /// The one action asked for.
    pub action: String,
    /// How long the grant should last (capped by the allowance).
    #[serde(default)]
    pub lifetime_secs: Option<u32>,
}

/// The holder registers a child it derived offline (`mandate`: the child's
/// chain), so revocation cascades to it by name as well as by chain.
/// Returns the child's id.
///
/// # Errors
/// `not_found` unless the caller holds `id`; `not_a_child` or
/// `child_id_not_namespaced` for a chain that is not a child of it;
/// `not_active` under an ended or suspended lineage; `conflict` for an id
/// already registered; a store failure.
pub async fn register_child(
    s: &AppState,
    caller: &Caller,
    id: &str,
    mandate: &str,
) -> Result<MandateId> {
    caller.require(&[Role::Agent])?;
    let m = super::lifecycle::find(s, caller, id)?;
    if m.agent_sub != caller.sub {
        return Err(Error::not_found("mandate"));
    }
    let chain = s
        .verifier
        .verify(mandate)
        .map_err(|e| Error::invalid(&e.codes().join(","), e.to_string()))?;
    let n = chain.mandates().len();
    let parent_ok = n >= 2 && chain.mandates().get(n - 2).is_some_and(|p| p.id() == &m.id);
    if !parent_ok {
        return Err(Error::invalid(
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
        .strip_prefix(id)
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
    {
        return Err(Error::invalid(
            "child_id_not_namespaced",
            format!(
                "mandate_id: `{child_id}` must be `{id}.<name>` (a child's id lives under its parent's)"
            ),
        ));
    }
    let below = Below {
        tenant: caller.tenant.clone(),
        principal: m.principal.clone(),
        agent_sub: caller.sub.clone(),
        parent: id.to_owned(),
        chain: mandate.trim().to_owned(),
        kind: "child_registered",
        refused: "no child can be registered under it",
    };
    let details = json!({"holder": claims.agent.id});
    s.store
        .write(move |tx| below.record(tx, &claims, details))
        .await
        .map_err(|e| match e {
            StoreError::Database(e) if e.is_unique_violation() => {
                Error::conflict("conflict", "a mandate with this id is already registered")
            }
            other => other.into(),
        })?;
    s.refresh(std::slice::from_ref(&child_id))?;
    Ok(child_id)
}

/// The holding agent names a tool it found; the authority grants it once,
/// within what the principal approved for discovery, or refuses with the
/// reason (audited). Returns the grant's id and its chain.
///
/// # Errors
/// `not_found` unless the caller holds `id`; `conflict` when the mandate is
/// not active; `forbidden` when the grant allows no discovery or the tool is
/// outside it; `not_active` under an ended lineage; a store failure.
pub async fn discovery(
    s: &AppState,
    caller: &Caller,
    id: &str,
    req: DiscoveryRequest,
) -> Result<(MandateId, String)> {
    caller.require(&[Role::Agent])?;
    let m = super::lifecycle::find(s, caller, id)?;
    if m.agent_sub != caller.sub {
        return Err(Error::not_found("mandate"));
    }
    if m.state != MandateState::Active {
        return Err(Error::conflict(
            "conflict",
            format!("mandate `{id}` is {}", state_name(m.state)),
        ));
    }
    let allowance = m
        .claims
        .discovery
        .clone()
        .ok_or_else(|| Error::forbidden("discovery: the grant allows no discovery"))?;
    let now = UnixTime::from_secs(crate::auth::now_secs()).map_err(Error::internal)?;
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
    let grant_id = MandateId::new(new_id("mnd-once")).map_err(Error::internal)?;
    let chain = match issue_discovery_grant(&m.chain, &s.authority(), &spec, grant_id.clone(), now)
    {
        Ok(c) => c,
        Err(e) => {
            let (tenant, body) = (
                caller.tenant.clone(),
                json!({"agent": caller.sub, "type": req.type_, "location": req.location, "action": req.action, "refused": e.codes()}),
            );
            let mid = id.to_owned();
            s.store
                .write(move |tx| tx.audit(Some(&tenant), "discovery_refused", Some(&mid), body))
                .await?;
            return Err(Error::forbidden(format!("discovery refused: {e}")));
        }
    };
    let verified = s.verifier.verify(&chain).map_err(Error::internal)?;
    let claims = verified.leaf().claims().clone();
    let below = Below {
        tenant: caller.tenant.clone(),
        principal: m.principal.clone(),
        agent_sub: caller.sub.clone(),
        parent: id.to_owned(),
        chain: chain.clone(),
        kind: "discovery_granted",
        refused: "no discovery grant can be issued under it",
    };
    let details = json!({"type": req.type_, "location": req.location, "action": req.action});
    s.store
        .write(move |tx| below.record(tx, &claims, details))
        .await?;
    s.metrics.transition("discovery_granted");
    s.refresh(std::slice::from_ref(&grant_id))?;
    Ok((grant_id, chain))
}

/// A mandate recorded below one the authority knows: a registered child or
/// a discovery grant.
struct Below {
    tenant: String,
    principal: String,
    agent_sub: String,
    parent: String,
    chain: String,
    /// The audit record's kind.
    kind: &'static str,
    /// What the refusal says when the lineage is not active.
    refused: &'static str,
}

impl Below {
    /// In a write job: refused under an ended (or suspended) lineage, else
    /// recorded as active with its audit record.
    fn record(
        &self,
        tx: &mut mandate_store::Tx<'_>,
        claims: &mandate_core::model::MandateClaims,
        details: serde_json::Value,
    ) -> std::result::Result<(), StoreError> {
        if let Some((which, state)) = store::first_inactive_in_lineage(tx.conn(), &self.parent)? {
            return Err(StoreError::conflict(
                "not_active",
                format!("mandate `{which}` is {state}: {}", self.refused),
            ));
        }
        store::insert_mandate(
            tx,
            &NewMandate {
                tenant: &self.tenant,
                principal: &self.principal,
                agent_sub: &self.agent_sub,
                parent: Some(&self.parent),
                chain: &self.chain,
                claims,
                kind: self.kind,
                details,
            },
        )
    }
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
///
/// # Errors
/// A store failure.
pub fn consume_in(
    tx: &mut mandate_store::Tx<'_>,
    tenant: &str,
    id: &str,
    by: &str,
) -> std::result::Result<Consumption, StoreError> {
    if let Some((which, state)) = store::first_inactive_in_lineage(tx.conn(), id)? {
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

/// Consumes a one-time mandate (enforcer): once, then `one_time_used`.
///
/// # Errors
/// `not_found`; `not_one_time`; `one_time_used` after the first time; the
/// state that ended it (`revoked`, `completed`, ...) when its lineage is
/// over; a store failure.
pub async fn consume(s: &AppState, caller: &Caller, id: &str) -> Result<()> {
    caller.require(&[Role::Enforcer])?;
    let m = super::lifecycle::find(s, caller, id)?;
    if !m.claims.lifecycle.one_time {
        return Err(Error::invalid(
            "not_one_time",
            "the mandate is not one-time",
        ));
    }
    let (tenant, by, id2) = (caller.tenant.clone(), caller.sub.clone(), id.to_owned());
    let consumed = s
        .store
        .write(move |tx| consume_in(tx, &tenant, &id2, &by))
        .await?;
    s.refresh(std::slice::from_ref(&m.id))?;
    match consumed {
        Consumption::Now => Ok(()),
        Consumption::Already => Err(Error::conflict(
            "one_time_used",
            "the one-time mandate was already used",
        )),
        // The code is the state that ended it (`completed`, `revoked`, ...).
        Consumption::Ended(which, state) => Err(Error::conflict(
            &state,
            format!("mandate `{which}` is {state}: nothing under it can be consumed"),
        )),
    }
}
