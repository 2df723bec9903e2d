//! `GET /v1/requests`, `GET /v1/mandates`, `GET /v1/audit`: adapters over
//! [`crate::service::listing`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::wire;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::listing::{self, AuditFilter, Paging};
use crate::state::AppState;

/// The query of a list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    state: Option<String>,
    principal: Option<String>,
    agent: Option<String>,
    mandate: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl ListQuery {
    fn paging(&self) -> Result<Paging, ApiError> {
        Ok(Paging::parse(
            self.limit.as_deref(),
            self.cursor.as_deref(),
        )?)
    }
}

/// `GET /v1/requests?state=&principal=&limit=&cursor=`.
///
/// # Errors
/// 400 for a malformed parameter, 403 for roles that see no requests.
pub async fn requests(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<wire::RequestList>, ApiError> {
    let page = listing::requests(
        &s.store,
        &caller,
        q.state.as_deref(),
        q.principal.as_deref(),
        &q.paging()?,
    )?;
    Ok(Json(wire::RequestList {
        items: page
            .items
            .into_iter()
            .map(|r| wire::RequestSummary {
                id: r.id,
                state: r.state,
                principal: r.principal,
                agent: r.agent,
                created_ms: r.created_ms,
                mandate_id: r.mandate_id,
                request: r.body,
            })
            .collect(),
        next: page.next,
    }))
}

/// `GET /v1/mandates?state=&agent=&principal=&limit=&cursor=`.
///
/// # Errors
/// 400 for a malformed parameter, 403 for event sources.
pub async fn mandates(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<wire::MandateList>, ApiError> {
    let page = listing::mandates(
        &s.store,
        &caller,
        q.state.as_deref(),
        q.agent.as_deref(),
        q.principal.as_deref(),
        &q.paging()?,
    )?;
    Ok(Json(wire::MandateList {
        items: page
            .items
            .into_iter()
            .map(|m| wire::MandateSummary {
                mandate_id: m.mandate_id,
                state: m.state,
                parent: m.parent,
                principal: m.principal,
                agent: m.agent,
                objective: m.objective,
                created_ms: m.created_ms,
                hard_expiry: m.hard_expiry,
            })
            .collect(),
        next: page.next,
    }))
}

/// `GET /v1/audit?mandate=&agent=&outcome=&from=&to=&limit=&cursor=`.
///
/// # Errors
/// 400 for a malformed parameter, 403 for roles other than admin and
/// principal.
pub async fn audit(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<wire::AuditList>, ApiError> {
    let filter = AuditFilter::parse(
        q.mandate.as_deref(),
        q.agent.as_deref(),
        q.outcome.as_deref(),
        q.from.as_deref(),
        q.to.as_deref(),
    )?;
    let page = listing::audit(&s.store, &caller, &filter, &q.paging()?)?;
    Ok(Json(wire::AuditList {
        items: page
            .items
            .into_iter()
            .map(|r| wire::AuditEntry {
                reference: r.reference(),
                seq: r.seq,
                at_ms: r.at_ms,
                kind: r.kind,
                mandate_id: r.mandate_id,
                body: r.body,
                hash: r.hash,
            })
            .collect(),
        next: page.next,
    }))
}
