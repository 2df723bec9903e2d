//! Lists for operators and the console: requests, mandates and audit
//! records of the caller's tenant, newest first, one page at a time.
//!
//! A page ends with an opaque cursor (`next`) when more may follow; passing
//! it back as `cursor` continues strictly after the last item, so items
//! written meanwhile never shift a page (new ones appear on a fresh first
//! page). Each list shows a caller what the single-object endpoints would:
//! an admin the tenant, a principal what they granted, an agent what it
//! asked for or holds; any other role is refused.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mandate_store::audit::{self, AuditRecord, Position};
use mandate_store::sql::params;
use mandate_store::{Store, StoreError};
use serde_json::Value;

use crate::auth::{Caller, Role};

/// Items per page when the caller does not say.
pub const DEFAULT_LIMIT: usize = 50;
/// Most items per page.
pub const MAX_LIMIT: usize = 500;

/// What page to return: how many items, after which cursor.
#[derive(Debug, Clone, Default)]
pub struct Paging {
    /// Items at most.
    pub limit: usize,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

impl Paging {
    /// From query parameters: `limit` 1..=500 (default 50), `cursor` as
    /// issued.
    ///
    /// # Errors
    /// A malformed `limit`.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, StoreError> {
        let limit = match limit.map(str::trim).filter(|l| !l.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(StoreError::malformed(format!(
                        "limit: `{l}` is not a whole number from 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let cursor = cursor
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        Ok(Self { limit, cursor })
    }
}

/// One page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// The cursor of the next page, when there may be one.
    pub next: Option<String>,
}

/// A cursor: the list it belongs to and the position after which to go on.
fn encode(list: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}:{position}"))
}

fn decode<'a>(list: &str, cursor: &'a str, buf: &'a mut String) -> Result<&'a str, StoreError> {
    let bad = || StoreError::malformed("cursor: not a cursor this list issued");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    *buf = String::from_utf8(bytes).map_err(|_| bad())?;
    buf.strip_prefix(list)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(bad)
}

/// The audit log position a cursor of the `audit` list names.
///
/// # Errors
/// `cursor: not a cursor this list issued` for anything else.
pub fn audit_position(cursor: Option<&str>) -> Result<Option<Position>, StoreError> {
    let Some(c) = cursor else { return Ok(None) };
    let mut buf = String::new();
    let rest = decode("audit", c, &mut buf)?;
    let (seq, item) = audit::parse_reference(rest)
        .map_err(|_| StoreError::malformed("cursor: not a cursor this list issued"))?;
    Ok(Some(Position { seq, item }))
}

/// The cursor of the `requests` or `mandates` list that goes on after
/// `(created_ms, id)`.
#[must_use]
pub fn created_cursor(list: &str, created_ms: i64, id: &str) -> String {
    encode(list, &format!("{created_ms}:{id}"))
}

/// The `(created_ms, id)` position a cursor of the `requests` or `mandates`
/// list names.
///
/// # Errors
/// `cursor: not a cursor this list issued` for anything else.
pub fn created_position(
    list: &str,
    cursor: Option<&str>,
) -> Result<Option<(i64, String)>, StoreError> {
    let Some(c) = cursor else { return Ok(None) };
    let mut buf = String::new();
    let rest = decode(list, c, &mut buf)?;
    let (ms, id) = rest
        .split_once(':')
        .ok_or_else(|| StoreError::malformed("cursor: not a cursor this list issued"))?;
    let ms = ms
        .parse::<i64>()
        .map_err(|_| StoreError::malformed("cursor: not a cursor this list issued"))?;
    Ok(Some((ms, id.to_owned())))
}

fn one_of(
    field: &str,
    value: Option<&str>,
    allowed: &[&str],
) -> Result<Option<String>, StoreError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v.to_owned())),
        Some(v) => Err(StoreError::malformed(format!(
            "{field}: `{v}` is not one of {}",
            allowed.join(", ")
        ))),
    }
}

fn given(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// One request in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestItem {
    /// Its id.
    pub id: String,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    /// Whom it is addressed to.
    pub principal: String,
    /// The agent (caller subject) that made it.
    pub agent: String,
    /// When it was made (ms since the epoch).
    pub created_ms: i64,
    /// The mandate issued, once approved.
    pub mandate_id: Option<String>,
    /// The request as made.
    pub body: Value,
}

/// The caller's requests, newest first.
///
/// # Errors
/// Forbidden for roles that see no requests; malformed filters or cursor.
pub fn requests(
    store: &Store,
    caller: &Caller,
    state: Option<&str>,
    principal: Option<&str>,
    paging: &Paging,
) -> Result<Page<RequestItem>, StoreError> {
    let (only_principal, only_agent) = match caller.role {
        Role::Admin => (None, None),
        Role::Principal => (Some(caller.sub.clone()), None),
        Role::Agent => (None, Some(caller.sub.clone())),
        Role::Enforcer | Role::EventSource => {
            return Err(StoreError::forbidden("this role does not list requests"));
        }
    };
    let state = one_of("state", state, &["pending", "approved", "denied"])?;
    let principal = given(principal);
    let after = created_position("requests", paging.cursor.as_deref())?;
    let limit = i64::try_from(paging.limit).unwrap_or(i64::MAX);
    let (after_ms, after_id) = after.map_or((None, None), |(m, i)| (Some(m), Some(i)));
    let items = store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT id, state, principal, agent_sub, created_ms, mandate_id, body FROM requests
             WHERE tenant = ?1 AND (CAST(?2 AS TEXT) IS NULL OR state = ?2) AND (CAST(?3 AS TEXT) IS NULL OR instr(principal, ?3) > 0)
               AND (CAST(?4 AS TEXT) IS NULL OR principal = ?4) AND (CAST(?5 AS TEXT) IS NULL OR agent_sub = ?5)
               AND (CAST(?6 AS BIGINT) IS NULL OR created_ms < ?6 OR (created_ms = ?6 AND id < ?7))
             ORDER BY created_ms DESC, id DESC LIMIT ?8",
        )?;
        let rows = stmt.query_map(
            params![caller.tenant, state, principal, only_principal, only_agent, after_ms, after_id, limit],
            |r| {
                let body: String = r.get(6)?;
                Ok(RequestItem {
                    id: r.get(0)?,
                    state: r.get(1)?,
                    principal: r.get(2)?,
                    agent: r.get(3)?,
                    created_ms: r.get(4)?,
                    mandate_id: r.get(5)?,
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                })
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })?;
    Ok(created_page("requests", items, paging, |r| {
        (r.created_ms, &r.id)
    }))
}

/// A page of a list ordered by `(created_ms, id)`: its `next` names the
/// last item's position when the page is full.
fn created_page<T>(
    list: &str,
    items: Vec<T>,
    paging: &Paging,
    position: impl Fn(&T) -> (i64, &str),
) -> Page<T> {
    let next = items
        .last()
        .filter(|_| items.len() == paging.limit)
        .map(|last| {
            let (ms, id) = position(last);
            created_cursor(list, ms, id)
        });
    Page { items, next }
}

/// The states a mandate can be in, as lists filter by them.
pub const MANDATE_STATES: [&str; 6] = [
    "active",
    "suspended",
    "revoked",
    "expired",
    "completed",
    "superseded",
];

/// One mandate in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MandateItem {
    /// Its id.
    pub mandate_id: String,
    /// Its state.
    pub state: String,
    /// Its parent, for a delegated mandate.
    pub parent: Option<String>,
    /// The principal who granted it (or its root).
    pub principal: String,
    /// The agent it was issued to (`agent.id` of its claims).
    pub agent: String,
    /// The mission's objective.
    pub objective: String,
    /// When the authority recorded it (ms since the epoch).
    pub created_ms: i64,
    /// Its hard expiry (seconds since the epoch).
    pub hard_expiry: i64,
}

/// The mandates the caller may see, newest first.
///
/// # Errors
/// Forbidden for event sources; malformed filters or cursor.
pub fn mandates(
    store: &Store,
    caller: &Caller,
    state: Option<&str>,
    agent: Option<&str>,
    principal: Option<&str>,
    paging: &Paging,
) -> Result<Page<MandateItem>, StoreError> {
    let (only_principal, only_agent_sub) = match caller.role {
        Role::Admin | Role::Enforcer => (None, None),
        Role::Principal => (Some(caller.sub.clone()), None),
        Role::Agent => (None, Some(caller.sub.clone())),
        Role::EventSource => {
            return Err(StoreError::forbidden("this role does not list mandates"));
        }
    };
    let state = one_of("state", state, &MANDATE_STATES)?;
    let (agent, principal) = (given(agent), given(principal));
    let after = created_position("mandates", paging.cursor.as_deref())?;
    let limit = i64::try_from(paging.limit).unwrap_or(i64::MAX);
    let (after_ms, after_id) = after.map_or((None, None), |(m, i)| (Some(m), Some(i)));
    let items = store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT id, state, parent_id, principal, claims, created_ms, hard_expiry FROM mandates
             WHERE tenant = ?1 AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR instr(json_extract(claims, '$.agent.id'), ?3) > 0)
               AND (CAST(?4 AS TEXT) IS NULL OR instr(principal, ?4) > 0) AND (CAST(?5 AS TEXT) IS NULL OR principal = ?5)
               AND (CAST(?6 AS TEXT) IS NULL OR agent_sub = ?6)
               AND (CAST(?7 AS BIGINT) IS NULL OR created_ms < ?7 OR (created_ms = ?7 AND id < ?8))
             ORDER BY created_ms DESC, id DESC LIMIT ?9",
        )?;
        let rows = stmt.query_map(
            params![
                caller.tenant,
                state,
                agent,
                principal,
                only_principal,
                only_agent_sub,
                after_ms,
                after_id,
                limit
            ],
            |r| {
                let claims: String = r.get(4)?;
                let claims: Value = serde_json::from_str(&claims).unwrap_or(Value::Null);
                let text = |p: &str| {
                    claims
                        .pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                Ok(MandateItem {
                    mandate_id: r.get(0)?,
                    state: r.get(1)?,
                    parent: r.get(2)?,
                    principal: r.get(3)?,
                    agent: text("/agent/id"),
                    objective: text("/purpose/objective"),
                    created_ms: r.get(5)?,
                    hard_expiry: r.get(6)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })?;
    Ok(created_page("mandates", items, paging, |m| {
        (m.created_ms, &m.mandate_id)
    }))
}

/// Filters of the audit list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Records about this mandate or any descendant.
    pub mandate: Option<String>,
    /// Records whose `agent` contains this.
    pub agent: Option<String>,
    /// Decisions with this outcome (`allow`, `deny`).
    pub outcome: Option<String>,
    /// Decided (or recorded) at or after, ms since the epoch.
    pub from_ms: Option<i64>,
    /// Decided (or recorded) at or before, ms since the epoch.
    pub to_ms: Option<i64>,
}

impl AuditFilter {
    /// From query parameters (times in RFC 3339).
    ///
    /// # Errors
    /// A malformed outcome or time, naming the parameter.
    pub fn parse(
        mandate: Option<&str>,
        agent: Option<&str>,
        outcome: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Self, StoreError> {
        let time = |field: &str, v: Option<&str>| -> Result<Option<i64>, StoreError> {
            match given(v) {
                None => Ok(None),
                Some(t) => mandate_core::timestamp::UnixTime::parse_rfc3339(&t)
                    .map(|t| Some(t.secs().saturating_mul(1000)))
                    .map_err(|_| {
                        StoreError::malformed(format!(
                            "{field}: `{t}` is not an RFC 3339 time (2026-01-31T09:00:00Z)"
                        ))
                    }),
            }
        };
        Ok(Self {
            mandate: given(mandate),
            agent: given(agent),
            outcome: one_of("outcome", outcome, &["allow", "deny"])?,
            from_ms: time("from", from)?,
            to_ms: time("to", to)?,
        })
    }

    fn keeps(&self, r: &AuditRecord) -> bool {
        let text = |p: &str| r.body.pointer(p).and_then(Value::as_str);
        self.agent
            .as_deref()
            .is_none_or(|a| text("/agent").is_some_and(|x| x.contains(a)))
            && self
                .outcome
                .as_deref()
                .is_none_or(|o| text("/decision") == Some(o))
            && self.from_ms.is_none_or(|f| audit::decided_at(r) >= f)
            && self.to_ms.is_none_or(|t| audit::decided_at(r) <= t)
    }
}

/// A principal's mandates in a tenant (what of the audit log a principal
/// sees): by the `mandates_tenant_principal` index.
pub(crate) const PRINCIPAL_MANDATES: &str =
    "SELECT id FROM mandates WHERE tenant = ?1 AND principal = ?2";

/// A page of the tenant's audit log, newest first, shipped batches
/// expanded into their decisions. An admin sees every record of the
/// tenant; a principal the records about mandates they granted (and their
/// descendants' decisions).
///
/// # Errors
/// Forbidden for other roles; a malformed cursor.
pub fn audit(
    store: &Store,
    caller: &Caller,
    filter: &AuditFilter,
    paging: &Paging,
) -> Result<Page<AuditRecord>, StoreError> {
    let visible: Option<HashSet<String>> = match caller.role {
        Role::Admin => None,
        Role::Principal => Some(store.read(|c| {
            let mut stmt = c.prepare_cached(PRINCIPAL_MANDATES)?;
            let ids = stmt
                .query_map(params![caller.tenant, caller.sub], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<HashSet<_>, _>>()?;
            Ok(ids)
        })?),
        _ => {
            return Err(StoreError::forbidden(
                "only admins and principals read the audit log",
            ));
        }
    };
    let before = audit_position(paging.cursor.as_deref())?;
    let page = store.read(|c| {
        audit::page(
            c,
            &caller.tenant,
            filter.mandate.as_deref(),
            before,
            paging.limit,
            |r| {
                visible.as_ref().is_none_or(|v| {
                    r.mandate_id.as_ref().is_some_and(|m| v.contains(m))
                        || (r.kind == "decision"
                            && r.body
                                .get("chain")
                                .and_then(Value::as_array)
                                .is_some_and(|c| {
                                    c.iter().filter_map(Value::as_str).any(|m| v.contains(m))
                                }))
                }) && filter.keeps(r)
            },
        )
    })?;
    let next = page.next.map(|p| {
        encode(
            "audit",
            &match p.item {
                Some(i) => format!("{}.{i}", p.seq),
                None => p.seq.to_string(),
            },
        )
    });
    Ok(Page {
        items: page.records,
        next,
    })
}

/// How many records the audit log holds (what `/healthz` reports, and a
/// proof that the store reads).
///
/// # Errors
/// A store failure.
pub fn audit_records(s: &crate::state::AppState) -> super::Result<i64> {
    Ok(s.store.read(|c| {
        Ok(c.query_row(
            "SELECT COUNT(*) FROM audit",
            mandate_store::params![],
            |r| r.get::<_, i64>(0),
        )?)
    })?)
}

/// The record that ended a mandate (or an ancestor it ended with), when it
/// has ended.
///
/// # Errors
/// A store failure.
pub fn how_it_ended(store: &Store, mandate_id: &str) -> super::Result<Option<AuditRecord>> {
    Ok(store.read(|c| audit::ended(c, mandate_id))?)
}

/// A page of a mandate's timeline with the business events behind its
/// transitions, in log order, and the record that ended it.
///
/// # Errors
/// A store failure.
pub fn timeline(
    store: &Store,
    mandate_id: &str,
    page: Vec<AuditRecord>,
) -> super::Result<(Vec<AuditRecord>, Option<AuditRecord>)> {
    Ok(store.read(|c| {
        let mut records = page;
        let events = audit::events_behind(c, &records)?;
        records.extend(events);
        records.sort_by_key(|r| (r.seq, r.item));
        records.dedup_by_key(|r| (r.seq, r.item));
        Ok((records, audit::ended(c, mandate_id)?))
    })?)
}

/// Verifies the whole log: the hash chain and the signed checkpoint.
///
/// # Errors
/// A store failure (a broken chain is a finding in the report, not an
/// error).
pub fn verify(
    store: &Store,
    key: &mandate_core::keys::VerifyingKey,
) -> super::Result<audit::VerifyReport> {
    Ok(store.read(|c| audit::verify(c, &mandate_store::checkpoint_path(store.dir()), key))?)
}
