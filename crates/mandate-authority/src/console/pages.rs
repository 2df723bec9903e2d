//! The console's pages.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::model::MandateClaims;
use mandate_store::audit;
use serde::Deserialize;
use serde_json::Value;

use super::html::{Me, notice, respond};
use super::{User, cookie};
use crate::auth::Role;
use crate::error::ApiError;
use crate::service;
use crate::state::AppState;
use crate::store::state_name;

type Page = Result<Response, Response>;

static NULL: Value = Value::Null;

/// The value at a JSON pointer, or `null`.
fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&NULL)
}

fn fail(u: Option<&User>, status: StatusCode, message: &str) -> Response {
    notice(status, "Not possible", u.and_then(me), message, false)
}

fn api_fail(u: &User, e: &ApiError) -> Response {
    fail(Some(u), e.status, &e.detail)
}

/// A service error as a page: its status and detail (a 500 says no more).
fn service_fail(u: &User, e: service::Error) -> Response {
    api_fail(u, &ApiError::from(e))
}

/// The address of the next page of a list: `path` with the filters and the
/// cursor URL-encoded as a query (the template escapes it for the
/// attribute).
fn next_href(path: &str, filters: &[(&str, &str)], next: Option<&str>) -> Option<String> {
    let cursor = next?;
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in filters {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.append_pair("cursor", cursor);
    Some(format!("{path}?{}", q.finish()))
}

/// The page of a list to show.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: String,
}

/// The page asked for: `limit` (else `default`) items after `cursor`.
fn paging(
    u: &User,
    limit: &str,
    cursor: &str,
    default: usize,
) -> Result<service::listing::Paging, Response> {
    let mut p = service::listing::Paging::parse(Some(limit), Some(cursor))
        .map_err(|e| service_fail(u, service::Error::from(e)))?;
    if limit.trim().is_empty() {
        p.limit = default;
    }
    Ok(p)
}

fn me(u: &User) -> Option<Me<'_>> {
    Some(Me {
        sub: u.caller().sub.as_str(),
        role: u.caller().role.as_str(),
        csrf: u.session.csrf.as_str(),
    })
}

/// The text of a JSON value as a page shows it: a string as itself, any
/// other value as JSON (the template escapes it).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON list as comma-separated text.
fn inline(v: &Value) -> String {
    v.as_array().map_or_else(
        || text(v),
        |a| a.iter().map(text).collect::<Vec<_>>().join(", "),
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `GET /console/login`: an identity provider, the local identities the
/// operator configured, or a pasted token.
pub async fn login_form(State(s): State<Arc<AppState>>) -> Response {
    let identities = if s.config.local_issuer {
        s.config
            .console_identity
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.sub.as_str(), c.role.as_str(), c.tenant.as_str()))
            .collect()
    } else {
        Vec::new()
    };
    respond(&LoginPage {
        title: "Sign in",
        me: None,
        oidc: s.config.console_oidc.is_some(),
        identities,
    })
}

#[derive(Debug, Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    oidc: bool,
    identities: Vec<(usize, &'a str, &'a str, &'a str)>,
}

#[derive(Debug, Deserialize)]
pub struct PickForm {
    identity: usize,
}

fn start_session(s: &AppState, caller: crate::auth::Caller) -> Response {
    let Some(sid) = s.sessions.start(caller) else {
        return fail(
            None,
            StatusCode::TOO_MANY_REQUESTS,
            "too many sign-ins; try again in a minute",
        );
    };
    let mut r = Redirect::to("/console/requests").into_response();
    if let Ok(v) = header::HeaderValue::from_str(&cookie(s, &sid, super::SESSION_TTL.as_secs())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /console/login/pick`: one of the configured local identities.
pub async fn pick(State(s): State<Arc<AppState>>, Form(f): Form<PickForm>) -> Response {
    let Some(c) = s
        .config
        .console_identity
        .get(f.identity)
        .filter(|_| s.config.local_issuer)
    else {
        return fail(None, StatusCode::BAD_REQUEST, "no such identity");
    };
    let role = if c.role == "admin" {
        Role::Admin
    } else {
        Role::Principal
    };
    start_session(
        &s,
        crate::auth::Caller {
            sub: c.sub.clone(),
            iss: crate::config::LOCAL_ISSUER.into(),
            role,
            tenant: c.tenant.clone(),
        },
    )
}

/// `POST /console/login`: agents, enforcers and event sources are refused.
pub async fn login(State(s): State<Arc<AppState>>, Form(f): Form<LoginForm>) -> Response {
    match s.issuers.verify(f.token.trim(), crate::auth::now_secs()) {
        Ok(c) if matches!(c.role, Role::Principal | Role::Admin) => start_session(&s, c),
        Ok(c) => fail(
            None,
            StatusCode::FORBIDDEN,
            &format!("role `{}` cannot use the console", c.role.as_str()),
        ),
        Err(e) => fail(None, StatusCode::UNAUTHORIZED, &e.detail),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// `POST /console/logout`.
pub async fn logout(State(s): State<Arc<AppState>>, u: User, Form(f): Form<CsrfOnly>) -> Page {
    u.check_csrf(&f.csrf)?;
    s.sessions.end(&u.sid);
    let mut r = Redirect::to("/console/login").into_response();
    if let Ok(v) = header::HeaderValue::from_str(&cookie(&s, "", 0)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

fn sees(u: &User, principal: &str) -> bool {
    u.caller().role == Role::Admin || principal == u.caller().sub
}

/// `GET /console/requests`: pending requests addressed to this principal
/// (an admin: the tenant's).
pub async fn requests(State(s): State<Arc<AppState>>, u: User, Query(q): Query<PageQuery>) -> Page {
    let list = service::listing::requests(
        &s.store,
        u.caller(),
        Some("pending"),
        None,
        &paging(&u, &q.limit, &q.cursor, LIST_PAGE)?,
    )
    .map_err(|e| service_fail(&u, e.into()))?;
    let rows = list
        .items
        .iter()
        .map(|r| RequestRow {
            id: &r.id,
            agent_id: text(at(&r.body, "/agent/id")),
            agent_sub: &r.agent,
            objective: text(at(&r.body, "/purpose/objective")),
            principal: &r.principal,
        })
        .collect();
    Ok(respond(&RequestsPage {
        title: "Requests",
        me: me(&u),
        rows,
        first_page: q.cursor.is_empty(),
        next: next_href(
            "/console/requests",
            &[("limit", q.limit.trim())],
            list.next.as_deref(),
        ),
        next_label: "Older requests →",
    }))
}

#[derive(Debug)]
struct RequestRow<'a> {
    id: &'a str,
    agent_id: String,
    agent_sub: &'a str,
    objective: String,
    principal: &'a str,
}

#[derive(Debug, Template)]
#[template(path = "console/requests.html")]
struct RequestsPage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    rows: Vec<RequestRow<'a>>,
    first_page: bool,
    next: Option<String>,
    next_label: &'a str,
}

fn digest(shown: &str) -> String {
    hex::encode(mandate_core::hash::sha256(shown.as_bytes()))
}

/// The consent fragment: everything the principal is asked to grant, in
/// words. Its SHA-256 is the consent evidence recorded with the approval.
fn consent_fragment(req: &Value, agent_sub: &str) -> Result<String, askama::Error> {
    let heading = format!("{} asks to act for you", text(at(req, "/agent/id")));
    Grant::of(req, agent_sub, "consent", heading).render()
}

/// One row of the scope table.
#[derive(Debug)]
struct DetailRow {
    type_: String,
    locations: Vec<String>,
    actions: Vec<String>,
    resource: Vec<(String, String)>,
    constraints: Vec<(String, String)>,
}

/// One condition, with what its failure does.
#[derive(Debug)]
struct ConditionRow {
    id: String,
    expression: String,
    then: &'static str,
}

/// What discovery allows.
#[derive(Debug)]
struct DiscoveryText {
    types: String,
    locations: String,
    actions: String,
    max_lifetime_secs: String,
}

/// What a mandate grants, in words: the consent fragment's content under
/// another heading (the mandate page shows what the consent screen showed).
#[derive(Debug, Template)]
#[template(path = "console/grant.html")]
struct Grant<'a> {
    section_id: &'a str,
    heading: String,
    agent: String,
    instance: String,
    agent_sub: &'a str,
    objective: String,
    context: String,
    details: Vec<DetailRow>,
    conditions: Vec<ConditionRow>,
    expiry: String,
    events: Vec<(String, Option<String>)>,
    delegation: Option<(String, String)>,
    discovery: Option<DiscoveryText>,
}

impl<'a> Grant<'a> {
    fn of(req: &Value, agent_sub: &'a str, section_id: &'a str, heading: String) -> Self {
        let list = |v: &Value| {
            v.as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default()
        };
        let map = |v: &Value| {
            v.as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default()
        };
        let details = at(req, "/authorization_details")
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| DetailRow {
                type_: text(at(d, "/type")),
                locations: list(at(d, "/locations")),
                actions: list(at(d, "/actions")),
                resource: map(at(d, "/resource")),
                constraints: map(at(d, "/constraints")),
            })
            .collect();
        let conditions = at(req, "/conditions")
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| ConditionRow {
                id: text(at(c, "/id")),
                expression: text(at(c, "/expression")),
                then: match at(c, "/on_failure").as_str() {
                    Some("suspend_and_notify") => "the mandate is suspended and you are notified",
                    Some("revoke") => "the mandate is revoked",
                    _ => "the action is denied",
                },
            })
            .collect();
        let events = at(req, "/lifecycle/terminal_events")
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| match e {
                Value::String(t) => (t.clone(), None),
                other => (text(at(other, "/type")), other.get("subject").map(text)),
            })
            .collect();
        let d = at(req, "/delegation");
        let delegation = (at(d, "/permitted") == true
            && at(d, "/max_additional_hops").as_u64().unwrap_or(0) > 0)
            .then(|| {
                (
                    text(at(d, "/max_additional_hops")),
                    text(at(d, "/attenuation")),
                )
            });
        let discovery = req
            .get("discovery")
            .filter(|v| !v.is_null())
            .map(|disc| DiscoveryText {
                types: inline(at(disc, "/types")),
                locations: inline(at(disc, "/locations")),
                actions: inline(at(disc, "/actions")),
                max_lifetime_secs: text(at(disc, "/max_lifetime_secs")),
            });
        Self {
            section_id,
            heading,
            agent: text(at(req, "/agent/id")),
            instance: text(at(req, "/agent/instance")),
            agent_sub,
            objective: text(at(req, "/purpose/objective")),
            context: text(at(req, "/purpose/business_context")),
            details,
            conditions,
            expiry: text(at(req, "/lifecycle/hard_expiry")),
            events,
            delegation,
            discovery,
        }
    }
}

fn render_fail(u: &User, e: &askama::Error) -> Response {
    tracing::error!(error = %e, "a console fragment failed to render");
    fail(
        Some(u),
        StatusCode::INTERNAL_SERVER_ERROR,
        "the page could not be rendered",
    )
}

fn load_request(
    s: &AppState,
    u: &User,
    id: &str,
) -> Result<(String, String, String, Value), Response> {
    match service::requests::load(s, u.caller(), id) {
        Ok(r) if sees(u, &r.principal) => Ok((r.principal, r.agent_sub, r.state, r.body)),
        Ok(_) | Err(service::Error::Refused(service::Refusal::NotFound { .. })) => {
            Err(fail(Some(u), StatusCode::NOT_FOUND, "request not found"))
        }
        Err(e) => Err(service_fail(u, e)),
    }
}

/// `GET /console/requests/{id}`: the consent screen.
pub async fn consent(State(s): State<Arc<AppState>>, u: User, Path(id): Path<String>) -> Page {
    let (_, agent, state, req) = load_request(&s, &u, &id)?;
    let fragment = consent_fragment(&req, &agent).map_err(|e| render_fail(&u, &e))?;
    let shown = digest(&fragment);
    Ok(respond(&ConsentPage {
        title: "Consent",
        me: me(&u),
        fragment: &fragment,
        pending: state == "pending",
        id: &id,
        csrf: &u.session.csrf,
        shown: &shown,
        state: &state,
    }))
}

#[derive(Debug, Template)]
#[template(path = "console/consent.html")]
struct ConsentPage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    /// Rendered by its own template: its hash is the consent evidence.
    fragment: &'a str,
    pending: bool,
    id: &'a str,
    csrf: &'a str,
    shown: &'a str,
    state: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct ApproveForm {
    csrf: String,
    shown: String,
}

/// `POST /console/requests/{id}/approve`: only if the request is exactly
/// what the page showed; the page's hash is recorded as consent evidence.
pub async fn approve(
    State(s): State<Arc<AppState>>,
    u: User,
    Path(id): Path<String>,
    Form(f): Form<ApproveForm>,
) -> Page {
    u.check_csrf(&f.csrf)?;
    let (_, agent, _, req) = load_request(&s, &u, &id)?;
    let shown = digest(&consent_fragment(&req, &agent).map_err(|e| render_fail(&u, &e))?);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        shown.as_bytes(),
        f.shown.as_bytes(),
    )) {
        return Err(fail(
            Some(&u),
            StatusCode::CONFLICT,
            "the request changed since the page was shown; review it again",
        ));
    }
    let consent = service::requests::consent_hash(&req).map_err(|e| service_fail(&u, e))?;
    // The page's hash is consent evidence: recorded in the approval's commit.
    let answer = service::requests::approve(&s, u.caller(), &id, Some(&consent), Some(&shown))
        .await
        .map_err(|e| service_fail(&u, e))?;
    let mandate_id = answer.mandate_id;
    Ok(Redirect::to(&format!("/console/mandates/{mandate_id}")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DenyForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/requests/{id}/deny`.
pub async fn deny(
    State(s): State<Arc<AppState>>,
    u: User,
    Path(id): Path<String>,
    Form(f): Form<DenyForm>,
) -> Page {
    u.check_csrf(&f.csrf)?;
    service::requests::deny(&s, u.caller(), &id, Some(f.reason))
        .await
        .map_err(|e| service_fail(&u, e))?;
    Ok(Redirect::to("/console/requests").into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct MandateFilter {
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    principal: String,
}

/// `GET /console/mandates?state=&agent=&principal=`.
pub async fn mandates(
    State(s): State<Arc<AppState>>,
    u: User,
    Query(q): Query<MandateFilter>,
) -> Page {
    let list = service::listing::mandates(
        &s.store,
        u.caller(),
        Some(q.state.as_str()),
        Some(q.agent.as_str()),
        Some(q.principal.as_str()),
        &paging(&u, &q.limit, &q.cursor, LIST_PAGE)?,
    )
    .map_err(|e| service_fail(&u, e.into()))?;
    let states = service::listing::MANDATE_STATES.map(|st| (st, q.state == st));
    Ok(respond(&MandatesPage {
        title: "Mandates",
        me: me(&u),
        states,
        agent: &q.agent,
        principal: &q.principal,
        rows: &list.items,
        next: next_href(
            "/console/mandates",
            &[
                ("state", &q.state),
                ("agent", &q.agent),
                ("principal", &q.principal),
                ("limit", q.limit.trim()),
            ],
            list.next.as_deref(),
        ),
        next_label: "Older mandates →",
    }))
}

#[derive(Debug, Template)]
#[template(path = "console/mandates.html")]
struct MandatesPage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    states: [(&'a str, bool); 6],
    agent: &'a str,
    principal: &'a str,
    rows: &'a [service::listing::MandateItem],
    next: Option<String>,
    next_label: &'a str,
}

fn descendants(s: &AppState, tenant: &str, id: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut stack = vec![(id.to_owned(), 0usize)];
    while let Some((cur, depth)) = stack.pop() {
        let kids: Vec<(String, String)> = s
            .with_registry(|r| {
                r.in_tenant(tenant)
                    .filter(|m| m.parent.as_ref().is_some_and(|p| p.as_str() == cur))
                    .map(|m| (m.id.to_string(), state_name(m.state).to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for (k, st) in kids {
            out.push((k.clone(), st, depth + 1));
            stack.push((k, depth + 1));
        }
    }
    out
}

/// `GET /console/mandates/{id}`: fields, revisions, delegation tree and the
/// timeline, with attempts after the end marked.
pub async fn mandate(
    State(s): State<Arc<AppState>>,
    u: User,
    Path(id): Path<String>,
    Query(pq): Query<PageQuery>,
) -> Page {
    let tenant = u.caller().tenant.clone();
    let m = s
        .with_registry(|r| r.get(&tenant, &id).cloned())
        .map_err(|e| api_fail(&u, &e))?
        .filter(|m| sees(&u, &m.principal))
        .ok_or_else(|| fail(Some(&u), StatusCode::NOT_FOUND, "mandate not found"))?;
    let c: &MandateClaims = &m.claims;
    let st = state_name(m.state);
    // How it ended, when it did: the record that ended it, who, and why.
    let ended = service::listing::how_it_ended(&s.store, &id)
        .ok()
        .flatten()
        .map(|e| Ended {
            by: e.body.get("by").filter(|v| !v.is_null()).map(text),
            reason: e.body.get("reason").filter(|v| !v.is_null()).map(text),
            kind: e.kind,
        });
    // Everything the consent screen showed: purpose, scope with resource
    // and constraints, conditions, ending events, delegation, discovery.
    let granted = serde_json::to_value(c).unwrap_or(Value::Null);
    let granted = Grant::of(
        &granted,
        &m.agent_sub,
        "granted",
        "What was granted".to_owned(),
    )
    .render()
    .map_err(|e| render_fail(&u, &e))?;
    let (revision_of, superseded_by) =
        service::lifecycle::revisions(&s, u.caller(), &id).unwrap_or((None, None));
    let tree: Vec<(String, String, usize)> = descendants(&s, &tenant, &id)
        .into_iter()
        .map(|(k, st, depth)| (k, st, depth.saturating_sub(1) * 2))
        .collect();
    let govern = (!crate::store::is_terminal(m.state)).then(|| Govern {
        suspended: m.state == mandate_core::state::MandateState::Suspended,
        hard_expiry: c.lifecycle.hard_expiry.to_rfc3339(),
        scope: serde_json::to_string_pretty(&c.authorization_details).unwrap_or_default(),
    });
    // The newest page of the tree's records (with the business events that
    // changed any of them), shown in order; older pages by the link below.
    let filter = service::listing::AuditFilter {
        mandate: Some(id.clone()),
        ..service::listing::AuditFilter::default()
    };
    let paging = paging(&u, &pq.limit, &pq.cursor, TIMELINE_PAGE)?;
    let list = service::listing::audit(&s.store, u.caller(), &filter, &paging)
        .map_err(|e| service_fail(&u, e.into()))?;
    let (records, end) =
        service::listing::timeline(&s.store, &id, list.items).map_err(|e| service_fail(&u, e))?;
    let timeline = records
        .iter()
        .map(|r| timeline_row(r, end.as_ref()))
        .collect();
    Ok(respond(&MandatePage {
        title: &format!("Mandate {id}"),
        me: me(&u),
        id: &id,
        csrf: &u.session.csrf,
        state: st,
        agent: c.agent.id.as_str(),
        instance: &c.agent.instance,
        principal: &m.principal,
        grant_ref: &c.principal.grant_ref,
        ended,
        granted: &granted,
        revision_of,
        superseded_by,
        tree,
        govern,
        timeline,
        next: next_href(
            &format!("/console/mandates/{id}"),
            &[("limit", pq.limit.trim())],
            list.next.as_deref(),
        ),
        next_label: "← Earlier records",
    }))
}

/// How a mandate ended.
#[derive(Debug)]
struct Ended {
    kind: String,
    by: Option<String>,
    reason: Option<String>,
}

/// What the principal may still do with a live mandate.
#[derive(Debug)]
struct Govern {
    suspended: bool,
    hard_expiry: String,
    scope: String,
}

/// One line of a mandate's timeline.
#[derive(Debug)]
struct TimelineRow {
    reference: String,
    when: String,
    class: &'static str,
    what: String,
    after_end: bool,
    mandate: String,
    detail: String,
}

fn timeline_row(r: &audit::AuditRecord, end: Option<&audit::AuditRecord>) -> TimelineRow {
    let after_end = r.kind == "decision"
        && end.is_some_and(|e| audit::decided_at(r) >= e.at_ms && r.seq != e.seq);
    let (class, what) = match (
        r.kind.as_str(),
        r.body.get("decision").and_then(Value::as_str),
    ) {
        ("decision", Some("allow")) => ("allow", "allowed".to_owned()),
        ("decision", _) => (
            "deny",
            format!(
                "denied: {}",
                at(&r.body, "/reasons")
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
        ),
        (k, _) => ("", k.to_owned()),
    };
    let when = mandate_core::timestamp::UnixTime::from_secs(audit::decided_at(r).div_euclid(1000))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let detail = match r.kind.as_str() {
        // At the authority: the action on the resource; at a gateway
        // (shipped): the HTTP request it judged, and which gateway.
        "decision" => match r.body.get("action").filter(|v| !v.is_null()) {
            Some(action) => format!(
                "{} {}",
                text(action),
                text(at(r.body.get("resource").unwrap_or(&Value::Null), "/id"))
            ),
            None => format!(
                "{} {}{}",
                text(at(&r.body, "/method")),
                text(at(&r.body, "/path")),
                r.body
                    .get("gateway")
                    .filter(|v| !v.is_null())
                    .map(|g| format!(" at gateway {}", text(g)))
                    .unwrap_or_default()
            ),
        },
        "event" => format!(
            "{} {}",
            text(at(&r.body, "/type")),
            text(at(&r.body, "/subject"))
        ),
        _ => r
            .body
            .get("by")
            .or_else(|| r.body.get("reason"))
            .filter(|v| !v.is_null())
            .map(text)
            .unwrap_or_default(),
    };
    TimelineRow {
        reference: r.reference(),
        when,
        class,
        what,
        after_end,
        mandate: r.mandate_id.clone().unwrap_or_default(),
        detail,
    }
}

#[derive(Debug, Template)]
#[template(path = "console/mandate.html")]
struct MandatePage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    id: &'a str,
    csrf: &'a str,
    state: &'a str,
    agent: &'a str,
    instance: &'a str,
    principal: &'a str,
    grant_ref: &'a str,
    ended: Option<Ended>,
    /// Rendered by the grant template.
    granted: &'a str,
    revision_of: Option<String>,
    superseded_by: Option<String>,
    /// Each descendant, its state and its indentation in rem.
    tree: Vec<(String, String, usize)>,
    govern: Option<Govern>,
    timeline: Vec<TimelineRow>,
    next: Option<String>,
    next_label: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct ConfirmQuery {
    op: String,
    #[serde(default)]
    hard_expiry: String,
}

/// `GET /console/mandates/{id}/confirm?op=`: says what will be cascaded.
pub async fn confirm(
    State(s): State<Arc<AppState>>,
    u: User,
    Path(id): Path<String>,
    Query(q): Query<ConfirmQuery>,
) -> Page {
    if !matches!(q.op.as_str(), "suspend" | "resume" | "revoke" | "amend") {
        return Err(fail(Some(&u), StatusCode::BAD_REQUEST, "unknown operation"));
    }
    let tenant = u.caller().tenant.clone();
    let visible = s
        .with_registry(|r| r.get(&tenant, &id).is_some_and(|m| sees(&u, &m.principal)))
        .unwrap_or(false);
    if !visible {
        return Err(fail(Some(&u), StatusCode::NOT_FOUND, "mandate not found"));
    }
    let tree = descendants(&s, &tenant, &id);
    let effect = match q.op.as_str() {
        "revoke" => format!(
            "Revoking ends it for good, and with it {} descendant mandate(s) — and any a holder derived offline, since every decision checks the whole chain:",
            tree.len()
        ),
        "suspend" => format!(
            "Suspending pauses it; its {} descendant mandate(s) are denied while it is suspended:",
            tree.len()
        ),
        "amend" => format!(
            "Amending issues a new revision with the hard expiry {}; this one ends as superseded, and with it {} descendant mandate(s):",
            q.hard_expiry,
            tree.len()
        ),
        _ => "Resuming makes it usable again, and its live descendants with it:".to_owned(),
    };
    Ok(respond(&ConfirmPage {
        title: &format!("{} {id}?", q.op),
        me: me(&u),
        effect: &effect,
        tree,
        id: &id,
        csrf: &u.session.csrf,
        op: &q.op,
        hard_expiry: &q.hard_expiry,
    }))
}

#[derive(Debug, Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    effect: &'a str,
    tree: Vec<(String, String, usize)>,
    id: &'a str,
    csrf: &'a str,
    op: &'a str,
    hard_expiry: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct ActForm {
    csrf: String,
    op: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    hard_expiry: String,
}

/// `POST /console/mandates/{id}/act`: suspend, resume, revoke or amend.
pub async fn act(
    State(s): State<Arc<AppState>>,
    u: User,
    Path(id): Path<String>,
    Form(f): Form<ActForm>,
) -> Page {
    u.check_csrf(&f.csrf)?;
    use service::lifecycle::{Amendment, Move, amend, transition};
    let caller = u.caller();
    let reason = Some(f.reason.clone());
    let target = match f.op.as_str() {
        "suspend" => transition(&s, caller, &id, Move::Suspend, reason)
            .await
            .map(|_| id.clone()),
        "resume" => transition(&s, caller, &id, Move::Resume, reason)
            .await
            .map(|_| id.clone()),
        "revoke" => transition(&s, caller, &id, Move::Revoke, reason)
            .await
            .map(|_| id.clone()),
        "amend" => {
            // Who may is checked (and a refusal audited) before the form is read.
            let m = service::lifecycle::find(&s, caller, &id).map_err(|e| service_fail(&u, e))?;
            service::lifecycle::governs(&s, caller, &m, "amend mandates")
                .await
                .map_err(|e| service_fail(&u, e))?;
            let expiry = mandate_core::timestamp::UnixTime::parse_rfc3339(f.hard_expiry.trim())
                .map_err(|e| {
                    fail(
                        Some(&u),
                        StatusCode::BAD_REQUEST,
                        &format!("hard_expiry: {e}"),
                    )
                })?;
            let a = Amendment {
                hard_expiry: Some(expiry),
                reason: Some("amended in the console".to_owned()),
                ..Amendment::default()
            };
            amend(&s, caller, &id, a)
                .await
                .map(|a| a.mandate_id.to_string())
        }
        _ => return Err(fail(Some(&u), StatusCode::BAD_REQUEST, "unknown operation")),
    }
    .map_err(|e| service_fail(&u, e))?;
    Ok(Redirect::to(&format!("/console/mandates/{target}")).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditFilter {
    #[serde(default)]
    mandate: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: String,
}

impl AuditFilter {
    fn parsed(&self, u: &User) -> Result<service::listing::AuditFilter, Response> {
        service::listing::AuditFilter::parse(
            Some(&self.mandate),
            Some(&self.agent),
            Some(&self.outcome),
            Some(&self.from),
            Some(&self.to),
        )
        .map_err(|e| service_fail(u, e.into()))
    }

    fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("limit", self.limit.trim()),
            ("mandate", self.mandate.trim()),
            ("agent", self.agent.trim()),
            ("outcome", self.outcome.trim()),
            ("from", self.from.trim()),
            ("to", self.to.trim()),
        ]
    }
}

/// Items per page of the request and mandate lists.
const LIST_PAGE: usize = 50;

/// Records per page of a mandate's timeline.
const TIMELINE_PAGE: usize = 200;

/// Records per page of the audit page.
const AUDIT_PAGE: usize = 200;

/// `GET /console/audit`: search (one page at a time, newest first), export,
/// and the result of verification.
pub async fn audit(State(s): State<Arc<AppState>>, u: User, Query(q): Query<AuditFilter>) -> Page {
    let filter = q.parsed(&u)?;
    let paging = paging(&u, &q.limit, &q.cursor, AUDIT_PAGE)?;
    let list = service::listing::audit(&s.store, u.caller(), &filter, &paging)
        .map_err(|e| service_fail(&u, e.into()))?;
    let key = s.checkpoint_key.clone();
    let report = service::listing::verify(&s.store, &key).map_err(|e| service_fail(&u, e))?;
    let mut export = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in q.pairs().into_iter().skip(1) {
        if !v.is_empty() {
            export.append_pair(k, v);
        }
    }
    Ok(respond(&AuditPage {
        title: "Audit",
        me: me(&u),
        broken: report.first_problem.clone(),
        records: report.records,
        head: &report.head_hash,
        q: &q,
        export: export.finish(),
        rows: &list.items,
        next: next_href("/console/audit", &q.pairs(), list.next.as_deref()),
        next_label: "Older records →",
    }))
}

#[derive(Debug, Template)]
#[template(path = "console/audit.html")]
struct AuditPage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    /// The first record where the chain breaks, and how.
    broken: Option<(i64, String)>,
    records: i64,
    head: &'a str,
    q: &'a AuditFilter,
    /// The filters as a query (URL-encoded; the template escapes it).
    export: String,
    rows: &'a [audit::AuditRecord],
    next: Option<String>,
    next_label: &'a str,
}

/// `GET /console/audit/export`: every matching record as JSON lines, oldest
/// first (read page by page).
pub async fn export(State(s): State<Arc<AppState>>, u: User, Query(q): Query<AuditFilter>) -> Page {
    let filter = q.parsed(&u)?;
    let mut paging = service::listing::Paging {
        limit: service::listing::MAX_LIMIT,
        cursor: None,
    };
    let mut records = Vec::new();
    loop {
        let list = service::listing::audit(&s.store, u.caller(), &filter, &paging)
            .map_err(|e| service_fail(&u, e.into()))?;
        records.extend(list.items);
        match list.next {
            Some(next) => paging.cursor = Some(next),
            None => break,
        }
    }
    let text: String = records
        .iter()
        .rev()
        .map(|r| format!("{}\n", serde_json::to_string(r).unwrap_or_default()))
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.jsonl\"",
            ),
        ],
        text,
    )
        .into_response())
}

/// `GET /console/facts`: the tenant's mission facts and the recent business
/// events, with the mandates each one ended.
pub async fn facts(State(s): State<Arc<AppState>>, u: User) -> Page {
    let tenant = u.caller().tenant.clone();
    let facts = service::events::facts(&s, &tenant).map_err(|e| service_fail(&u, e))?;
    let events = service::events::recent(&s, &tenant, 100).map_err(|e| service_fail(&u, e))?;
    let events = events
        .iter()
        .map(|e| EventRow {
            id: e.id.clone(),
            type_: e.type_.clone(),
            subject: e.subject.clone().unwrap_or_default(),
            when: mandate_core::timestamp::UnixTime::from_secs(e.occurred_ms.div_euclid(1000))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            changed: e
                .changed
                .iter()
                .map(|(m, kind)| format!("{m} ({kind})"))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    Ok(respond(&FactsPage {
        title: "Facts and events",
        me: me(&u),
        version: facts.1,
        facts: serde_json::to_string_pretty(&facts.0).unwrap_or_default(),
        events,
    }))
}

#[derive(Debug)]
struct EventRow {
    id: String,
    type_: String,
    subject: String,
    when: String,
    changed: String,
}

#[derive(Debug, Template)]
#[template(path = "console/facts.html")]
struct FactsPage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    version: i64,
    facts: String,
    events: Vec<EventRow>,
}

#[derive(Debug, Deserialize)]
pub struct ScopeForm {
    csrf: String,
    details: String,
    /// Set on the fresh-approval page: the hash of what it showed.
    #[serde(default)]
    approve: String,
}

/// What a scope change adds, shown before a fresh approval: its hash is
/// the evidence recorded with the amendment.
#[derive(Debug, Template)]
#[template(path = "console/widening.html")]
struct Widening<'a> {
    id: &'a str,
    added: &'a [mandate_core::attenuation::Violation],
    details: &'a str,
}

#[derive(Debug, Template)]
#[template(path = "console/approve-widening.html")]
struct ApproveWideningPage<'a> {
    title: &'a str,
    me: Option<Me<'a>>,
    /// Rendered by the widening template.
    fragment: &'a str,
    id: &'a str,
    csrf: &'a str,
    shown: &'a str,
    details: &'a str,
}

/// `POST /console/mandates/{id}/scope`: a narrower (or equal) scope is
/// amended at once; a wider one first shows exactly what it adds and needs a
/// fresh approval of that page.
pub async fn scope(
    State(s): State<Arc<AppState>>,
    u: User,
    Path(id): Path<String>,
    Form(f): Form<ScopeForm>,
) -> Page {
    u.check_csrf(&f.csrf)?;
    let tenant = u.caller().tenant.clone();
    let m = s
        .with_registry(|r| r.get(&tenant, &id).cloned())
        .map_err(|e| api_fail(&u, &e))?
        .filter(|m| sees(&u, &m.principal))
        .ok_or_else(|| fail(Some(&u), StatusCode::NOT_FOUND, "mandate not found"))?;
    let details: Vec<mandate_core::model::AuthorizationDetail> =
        mandate_core::json::from_slice_strict(f.details.as_bytes())
            .map_err(|e| fail(Some(&u), StatusCode::BAD_REQUEST, &format!("scope: {e}")))?;
    let added =
        mandate_core::attenuation::details_within(&m.claims.authorization_details, &details);
    let pretty = serde_json::to_string_pretty(&details).unwrap_or_default();
    let fragment = Widening {
        id: &id,
        added: &added,
        details: &pretty,
    }
    .render()
    .map_err(|e| render_fail(&u, &e))?;
    let shown = digest(&fragment);
    if !added.is_empty()
        && !bool::from(subtle::ConstantTimeEq::ct_eq(
            f.approve.as_bytes(),
            shown.as_bytes(),
        ))
    {
        return Ok(respond(&ApproveWideningPage {
            title: "Approve a wider scope",
            me: me(&u),
            fragment: &fragment,
            id: &id,
            csrf: &u.session.csrf,
            shown: &shown,
            details: &f.details,
        }));
    }
    let a = service::lifecycle::Amendment {
        authorization_details: Some(details),
        reason: Some(
            if added.is_empty() {
                "scope narrowed in the console"
            } else {
                "scope widened with a fresh approval"
            }
            .to_owned(),
        ),
        // The page approved is evidence, in the amendment's own commit.
        widening_shown: (!added.is_empty()).then(|| shown.clone()),
        ..service::lifecycle::Amendment::default()
    };
    let answer = service::lifecycle::amend(&s, u.caller(), &id, a)
        .await
        .map_err(|e| service_fail(&u, e))?;
    let new_id = answer.mandate_id.to_string();
    Ok(Redirect::to(&format!("/console/mandates/{new_id}")).into_response())
}
