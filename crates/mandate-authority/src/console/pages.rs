//! The console's pages.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use mandate_core::model::MandateClaims;
use mandate_store::audit;
use serde::Deserialize;
use serde_json::{Value, json};

use super::html::{csrf_field, esc, escv, page};
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

fn html(s: String) -> Response {
    let mut r = Html(s).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    r
}

fn fail(u: Option<&User>, status: StatusCode, message: &str) -> Response {
    let user = u.map(|u| {
        (
            u.caller().sub.as_str(),
            u.caller().role.as_str(),
            u.session.csrf.as_str(),
        )
    });
    let mut r = html(page(
        "Not possible",
        user,
        &format!(r#"<p class="notice">{}</p>"#, esc(message)),
    ));
    *r.status_mut() = status;
    r
}

fn api_fail(u: &User, e: &ApiError) -> Response {
    fail(Some(u), e.status, &e.detail)
}

/// A service error as a page: its status and detail (a 500 says no more).
fn service_fail(u: &User, e: service::Error) -> Response {
    api_fail(u, &ApiError::from(e))
}

/// A link to the next page of a list: `path` with the filters and the
/// cursor URL-encoded as a query, then HTML-escaped for the attribute.
fn next_link(path: &str, filters: &[(&str, &str)], next: Option<&str>, label: &str) -> String {
    let Some(cursor) = next else {
        return String::new();
    };
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in filters {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.append_pair("cursor", cursor);
    format!(
        r#"<p class="pager"><a rel="next" href="{}?{}">{}</a></p>"#,
        esc(path),
        esc(&q.finish()),
        esc(label)
    )
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

fn me(u: &User) -> Option<(&str, &str, &str)> {
    Some((
        u.caller().sub.as_str(),
        u.caller().role.as_str(),
        u.session.csrf.as_str(),
    ))
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `GET /console/login`: an identity provider, the local identities the
/// operator configured, or a pasted token.
pub async fn login_form(State(s): State<Arc<AppState>>) -> Response {
    let mut body = String::new();
    if s.config.console_oidc.is_some() {
        body.push_str(r#"<p><a href="/console/oidc">Sign in with your organisation's identity provider</a></p>"#);
    }
    if s.config.local_issuer && !s.config.console_identity.is_empty() {
        body.push_str(r#"<form method="post" action="/console/login/pick"><fieldset><legend>Sign in as a local identity</legend>"#);
        for (i, c) in s.config.console_identity.iter().enumerate() {
            let _ = write!(
                body,
                r#"<p><button type="submit" name="identity" value="{i}">{} ({}, tenant {})</button></p>"#,
                esc(&c.sub),
                esc(&c.role),
                esc(&c.tenant)
            );
        }
        body.push_str("</fieldset></form>");
    }
    body.push_str(
        r#"<p>Or paste a token for a principal or an administrator. With the embedded issuer:
<code>mandate token --sub you@example.com --role principal</code>.</p>
<form method="post" action="/console/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" required size="60">
<p><button type="submit">Sign in</button></p></form>"#,
    );
    html(page("Sign in", None, &body))
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
    let mut body = String::from(
        "<table><caption>Pending requests, newest first</caption><tr><th>Request</th><th>Agent</th><th>Objective</th><th>Principal</th></tr>",
    );
    for r in &list.items {
        let _ = write!(
            body,
            r#"<tr><td><a href="/console/requests/{}">Review</a></td><td>{} <small>({})</small></td><td>{}</td><td>{}</td></tr>"#,
            esc(&r.id),
            escv(at(&r.body, "/agent/id")),
            esc(&r.agent),
            escv(at(&r.body, "/purpose/objective")),
            esc(&r.principal)
        );
    }
    body.push_str("</table>");
    if list.items.is_empty() && q.cursor.is_empty() {
        body = "<p>No request is waiting for you.</p>".into();
    }
    body.push_str(&next_link(
        "/console/requests",
        &[("limit", q.limit.trim())],
        list.next.as_deref(),
        "Older requests →",
    ));
    Ok(html(page("Requests", me(&u), &body)))
}

fn digest(shown: &str) -> String {
    hex::encode(mandate_core::hash::sha256(shown.as_bytes()))
}

/// A JSON list as escaped, comma-separated text.
fn inline(v: &Value) -> String {
    v.as_array().map_or_else(
        || escv(v),
        |a| a.iter().map(escv).collect::<Vec<_>>().join(", "),
    )
}

/// The consent fragment: everything the principal is asked to grant, in
/// words. Its SHA-256 is the consent evidence recorded with the approval.
fn consent_fragment(req: &Value, agent_sub: &str) -> String {
    let heading = format!("{} asks to act for you", escv(at(req, "/agent/id")));
    grant_fragment(req, agent_sub, "consent", &heading)
}

/// What a mandate grants, in words: the consent fragment's content under
/// another heading (the mandate page shows what the consent screen showed).
fn grant_fragment(req: &Value, agent_sub: &str, section_id: &str, heading_html: &str) -> String {
    let mut f = String::new();
    let _ = write!(
        f,
        r#"<section id="{section_id}"><h2>{heading_html}</h2><p>Agent <strong>{}</strong>, instance <code>{}</code> (signed in as {}).</p>
<h3>Why</h3><p><strong>Objective:</strong> {}</p><p><strong>Business context:</strong> {}</p>
<h3>What it may do</h3><table><tr><th>Resource type</th><th>Where</th><th>Actions</th><th>Resource must be</th><th>Constraints</th></tr>"#,
        escv(at(req, "/agent/id")),
        escv(at(req, "/agent/instance")),
        esc(agent_sub),
        escv(at(req, "/purpose/objective")),
        escv(at(req, "/purpose/business_context"))
    );
    for d in at(req, "/authorization_details")
        .as_array()
        .into_iter()
        .flatten()
    {
        let list = |v: &Value| {
            v.as_array()
                .map(|a| a.iter().map(escv).collect::<Vec<_>>().join("<br>"))
                .unwrap_or_default()
        };
        let map = |v: &Value| {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{} = {}", esc(k), escv(v)))
                        .collect::<Vec<_>>()
                        .join("<br>")
                })
                .unwrap_or_default()
        };
        let _ = write!(
            f,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escv(at(d, "/type")),
            list(at(d, "/locations")),
            list(at(d, "/actions")),
            map(at(d, "/resource")),
            map(at(d, "/constraints"))
        );
    }
    f.push_str("</table><h3>What must stay true</h3>");
    let conditions = at(req, "/conditions")
        .as_array()
        .cloned()
        .unwrap_or_default();
    if conditions.is_empty() {
        f.push_str("<p>No conditions.</p>");
    } else {
        f.push_str("<table><tr><th>Condition</th><th>Expression</th><th>If it fails</th></tr>");
        for c in &conditions {
            let then = match at(c, "/on_failure").as_str() {
                Some("suspend_and_notify") => "the mandate is suspended and you are notified",
                Some("revoke") => "the mandate is revoked",
                _ => "the action is denied",
            };
            let _ = write!(
                f,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                escv(at(c, "/id")),
                escv(at(c, "/expression")),
                then
            );
        }
        f.push_str("</table>");
    }
    let _ = write!(
        f,
        "<h3>When it ends</h3><p>At the latest <strong>{}</strong>",
        escv(at(req, "/lifecycle/hard_expiry"))
    );
    let events = at(req, "/lifecycle/terminal_events")
        .as_array()
        .cloned()
        .unwrap_or_default();
    if events.is_empty() {
        f.push_str(".</p>");
    } else {
        f.push_str(", or as soon as any of these happens:</p><ul>");
        for e in &events {
            let (ty, subject) = match e {
                Value::String(t) => (esc(t), String::new()),
                other => (
                    escv(at(other, "/type")),
                    other
                        .get("subject")
                        .map(|s| format!(" about <code>{}</code>", escv(s)))
                        .unwrap_or_default(),
                ),
            };
            let _ = write!(f, "<li><code>{ty}</code>{subject}</li>");
        }
        f.push_str("</ul>");
    }
    let d = at(req, "/delegation");
    if at(d, "/permitted") == true && at(d, "/max_additional_hops").as_u64().unwrap_or(0) > 0 {
        let _ = write!(
            f,
            "<h3>Delegation</h3><p>It may hand narrower mandates to sub-agents, up to {} more hop(s) ({}).</p>",
            escv(at(d, "/max_additional_hops")),
            escv(at(d, "/attenuation"))
        );
    } else {
        f.push_str("<h3>Delegation</h3><p>It may not delegate.</p>");
    }
    match req.get("discovery").filter(|v| !v.is_null()) {
        Some(disc) => {
            let _ = write!(
                f,
                "<h3>Discovery</h3><p>It may ask for one-time use of newly found tools of type {} at {} for {}, each usable once for at most {} seconds.</p>",
                inline(at(disc, "/types")),
                inline(at(disc, "/locations")),
                inline(at(disc, "/actions")),
                escv(at(disc, "/max_lifetime_secs"))
            );
        }
        None => f.push_str("<h3>Discovery</h3><p>It may not ask for tools beyond these.</p>"),
    }
    f.push_str("</section>");
    f
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
    let fragment = consent_fragment(&req, &agent);
    let shown = digest(&fragment);
    let mut body = fragment;
    if state == "pending" {
        let _ = write!(
            body,
            r#"<form method="post" action="/console/requests/{id}/approve">{csrf}<input type="hidden" name="shown" value="{shown}"><p><button type="submit">Approve and sign the mandate</button></p></form>
<form method="post" action="/console/requests/{id}/deny">{csrf}<label for="reason">Reason for denying</label><input id="reason" name="reason" size="50"><p><button type="submit" class="danger">Deny</button></p></form>
<p><small>Consent evidence: SHA-256 of this page's request section <code>{shown}</code></small></p>"#,
            id = esc(&id),
            csrf = csrf_field(&u.session.csrf),
            shown = esc(&shown)
        );
    } else {
        let _ = write!(
            body,
            r#"<p class="notice">This request is {}.</p>"#,
            esc(&state)
        );
    }
    Ok(html(page("Consent", me(&u), &body)))
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
    let shown = digest(&consent_fragment(&req, &agent));
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
    let mut body = format!(
        r#"<form method="get" action="/console/mandates"><label>State <select name="state"><option value="">any</option>{}</select></label>
<label>Agent <input name="agent" value="{}"></label><label>Principal <input name="principal" value="{}"></label><button type="submit">Filter</button></form>
<table><caption>{} mandate(s) on this page, newest first</caption><tr><th>Mandate</th><th>State</th><th>Agent</th><th>Principal</th><th>Objective</th></tr>"#,
        [
            "active",
            "suspended",
            "revoked",
            "expired",
            "completed",
            "superseded"
        ]
        .iter()
        .map(|st| format!(
            r#"<option{}>{st}</option>"#,
            if q.state == *st { " selected" } else { "" }
        ))
        .collect::<String>(),
        esc(&q.agent),
        esc(&q.principal),
        list.items.len()
    );
    for m in &list.items {
        let _ = write!(
            body,
            r#"<tr><td><a href="/console/mandates/{0}">{0}</a></td><td class="state">{1}</td><td>{2}</td><td>{3}</td><td>{4}</td></tr>"#,
            esc(&m.mandate_id),
            esc(&m.state),
            esc(&m.agent),
            esc(&m.principal),
            esc(&m.objective)
        );
    }
    body.push_str("</table>");
    body.push_str(&next_link(
        "/console/mandates",
        &[
            ("state", &q.state),
            ("agent", &q.agent),
            ("principal", &q.principal),
            ("limit", q.limit.trim()),
        ],
        list.next.as_deref(),
        "Older mandates →",
    ));
    Ok(html(page("Mandates", me(&u), &body)))
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
    let mut body = format!(
        r#"<p>State: <span class="state">{}</span> · agent <strong>{}</strong> ({}) · granted by {} · grant <code>{}</code></p>"#,
        esc(st),
        esc(c.agent.id.as_str()),
        esc(&c.agent.instance),
        esc(&m.principal),
        esc(&c.principal.grant_ref),
    );
    // How it ended, when it did: the record that ended it, who, and why.
    let ended = service::listing::how_it_ended(&s.store, &id).ok().flatten();
    if let Some(e) = &ended {
        let _ = write!(
            body,
            r#"<p id="ended">Ended: <strong>{}</strong>{}{}</p>"#,
            esc(&e.kind),
            e.body
                .get("by")
                .filter(|v| !v.is_null())
                .map(|v| format!(" by {}", escv(v)))
                .unwrap_or_default(),
            e.body
                .get("reason")
                .filter(|v| !v.is_null())
                .map(|v| format!(" — reason: {}", escv(v)))
                .unwrap_or_default(),
        );
    }
    // Everything the consent screen showed: purpose, scope with resource
    // and constraints, conditions, ending events, delegation, discovery.
    let granted = serde_json::to_value(c).unwrap_or(Value::Null);
    body.push_str(&grant_fragment(
        &granted,
        &m.agent_sub,
        "granted",
        "What was granted",
    ));
    let (sup, sup_by) = service::lifecycle::revisions(&s, u.caller(), &id).unwrap_or((None, None));
    if let Some(of) = sup {
        let _ = write!(
            body,
            r#"<p>Revision of <a href="/console/mandates/{0}">{0}</a>.</p>"#,
            esc(&of)
        );
    }
    if let Some(by) = sup_by {
        let _ = write!(
            body,
            r#"<p>Superseded by <a href="/console/mandates/{0}">{0}</a>.</p>"#,
            esc(&by)
        );
    }
    let tree = descendants(&s, &tenant, &id);
    body.push_str("<h2>Delegation tree</h2>");
    if tree.is_empty() {
        body.push_str("<p>No child mandates or one-time grants.</p>");
    } else {
        body.push_str("<ul>");
        for (k, kst, depth) in &tree {
            let _ = write!(
                body,
                r#"<li style="margin-left:{}rem"><a href="/console/mandates/{1}">{1}</a> — {2}</li>"#,
                depth.saturating_sub(1) * 2,
                esc(k),
                esc(kst)
            );
        }
        body.push_str("</ul>");
    }
    if !crate::store::is_terminal(m.state) {
        let _ = write!(
            body,
            r#"<h2>Govern</h2><p>{}<a href="/console/mandates/{id}/confirm?op=revoke">Revoke…</a></p>
<form method="get" action="/console/mandates/{id}/confirm"><input type="hidden" name="op" value="amend"><label for="hard_expiry">New hard expiry (RFC 3339)</label><input id="hard_expiry" name="hard_expiry" value="{exp}"> <button type="submit">Amend the expiry…</button></form>
<form method="post" action="/console/mandates/{id}/scope">{csrf}<label for="details">Scope (authorization details, JSON); you confirm the change on the next page, and a wider scope needs your fresh approval</label><textarea id="details" name="details" rows="10" cols="80">{scope}</textarea><p><button type="submit">Change the scope…</button></p></form>"#,
            if m.state == mandate_core::state::MandateState::Suspended {
                format!(
                    r#"<a href="/console/mandates/{}/confirm?op=resume">Resume…</a> · "#,
                    esc(&id)
                )
            } else {
                format!(
                    r#"<a href="/console/mandates/{}/confirm?op=suspend">Suspend…</a> · "#,
                    esc(&id)
                )
            },
            id = esc(&id),
            csrf = csrf_field(&u.session.csrf),
            exp = esc(&c.lifecycle.hard_expiry.to_rfc3339()),
            scope =
                esc(&serde_json::to_string_pretty(&c.authorization_details).unwrap_or_default())
        );
    }
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
    body.push_str(r#"<h2>Timeline</h2>"#);
    body.push_str(&next_link(
        &format!("/console/mandates/{id}"),
        &[("limit", pq.limit.trim())],
        list.next.as_deref(),
        "← Earlier records",
    ));
    body.push_str(
        r#"<table><tr><th>#</th><th>When</th><th>What</th><th>Mandate</th><th>Details</th></tr>"#,
    );
    for r in &records {
        let after_end = r.kind == "decision"
            && end
                .as_ref()
                .is_some_and(|e| audit::decided_at(r) >= e.at_ms && r.seq != e.seq);
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
        let when =
            mandate_core::timestamp::UnixTime::from_secs(audit::decided_at(r).div_euclid(1000))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
        let detail = match r.kind.as_str() {
            // At the authority: the action on the resource; at a gateway
            // (shipped): the HTTP request it judged, and which gateway.
            "decision" => match r.body.get("action").filter(|v| !v.is_null()) {
                Some(action) => format!(
                    "{} {}",
                    escv(action),
                    escv(at(r.body.get("resource").unwrap_or(&Value::Null), "/id"))
                ),
                None => format!(
                    "{} {}{}",
                    escv(at(&r.body, "/method")),
                    escv(at(&r.body, "/path")),
                    r.body
                        .get("gateway")
                        .filter(|v| !v.is_null())
                        .map(|g| format!(" at gateway {}", escv(g)))
                        .unwrap_or_default()
                ),
            },
            "event" => format!(
                "{} {}",
                escv(at(&r.body, "/type")),
                escv(at(&r.body, "/subject"))
            ),
            _ => r
                .body
                .get("by")
                .or_else(|| r.body.get("reason"))
                .filter(|v| !v.is_null())
                .map(escv)
                .unwrap_or_default(),
        };
        let _ = write!(
            body,
            r#"<tr class="{}"><td>{}</td><td>{}</td><td class="{class}">{}{}</td><td>{}</td><td>{}</td></tr>"#,
            if after_end { "after-end" } else { "" },
            r.reference(),
            esc(&when),
            esc(&what),
            if after_end {
                " <strong>(after end)</strong>"
            } else {
                ""
            },
            esc(r.mandate_id.as_deref().unwrap_or("")),
            detail
        );
    }
    body.push_str("</table>");
    Ok(html(page(&format!("Mandate {id}"), me(&u), &body)))
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
    let mut body = format!("<p>{}</p><ul>", esc(&effect));
    for (k, st, _) in &tree {
        let _ = write!(body, "<li>{} ({})</li>", esc(k), esc(st));
    }
    let _ = write!(
        body,
        r#"</ul><form method="post" action="/console/mandates/{id}/act">{csrf}<input type="hidden" name="op" value="{op}"><input type="hidden" name="hard_expiry" value="{exp}"><label for="reason">Reason</label><input id="reason" name="reason" size="50"><p><button type="submit" class="danger">Confirm: {op}</button> <a href="/console/mandates/{id}">Cancel</a></p></form>"#,
        id = esc(&id),
        csrf = csrf_field(&u.session.csrf),
        op = esc(&q.op),
        exp = esc(&q.hard_expiry)
    );
    Ok(html(page(&format!("{} {id}?", q.op), me(&u), &body)))
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
    let verdict = match &report.first_problem {
        None => format!(
            r#"<p class="ok">Audit chain intact: {} records, head <code>{}</code>.</p>"#,
            report.records,
            esc(&report.head_hash)
        ),
        Some((seq, what)) => format!(
            r#"<p class="notice">Audit chain BROKEN at record {seq}: {}</p>"#,
            esc(what)
        ),
    };
    let mut export = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in q.pairs().into_iter().skip(1) {
        if !v.is_empty() {
            export.append_pair(k, v);
        }
    }
    let mut body = format!(
        r#"{verdict}<form method="get" action="/console/audit"><label>Mandate <input name="mandate" value="{}"></label><label>Agent <input name="agent" value="{}"></label>
<label>Outcome <select name="outcome"><option value="">any</option><option{}>allow</option><option{}>deny</option></select></label>
<label>From (RFC 3339) <input name="from" value="{}"></label><label>To <input name="to" value="{}"></label><button type="submit">Search</button></form>
<p><a href="/console/audit/export?{}">Export every matching record as JSON lines</a></p><table><caption>{} record(s) on this page, newest first</caption><tr><th>#</th><th>Kind</th><th>Mandate</th><th>Details</th></tr>"#,
        esc(&q.mandate),
        esc(&q.agent),
        if q.outcome == "allow" {
            " selected"
        } else {
            ""
        },
        if q.outcome == "deny" { " selected" } else { "" },
        esc(&q.from),
        esc(&q.to),
        esc(&export.finish()),
        list.items.len()
    );
    for r in &list.items {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            r.reference(),
            esc(&r.kind),
            esc(r.mandate_id.as_deref().unwrap_or("")),
            esc(&r.body.to_string())
        );
    }
    body.push_str("</table>");
    body.push_str(&next_link(
        "/console/audit",
        &q.pairs(),
        list.next.as_deref(),
        "Older records →",
    ));
    Ok(html(page("Audit", me(&u), &body)))
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
    let mut body = format!(
        "<h2>Mission facts (version {})</h2><pre>{}</pre><h2>Recent business events</h2><table><tr><th>Event</th><th>Type</th><th>Subject</th><th>Occurred</th><th>Ended or suspended</th></tr>",
        facts.1,
        esc(&serde_json::to_string_pretty(&facts.0).unwrap_or_default())
    );
    for e in &events {
        let hit: Vec<String> = e
            .changed
            .iter()
            .map(|(m, kind)| format!("{m} ({kind})"))
            .collect();
        let when = mandate_core::timestamp::UnixTime::from_secs(e.occurred_ms.div_euclid(1000))
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.id),
            esc(&e.type_),
            esc(e.subject.as_deref().unwrap_or("")),
            esc(&when),
            esc(&hit.join(", "))
        );
    }
    body.push_str("</table>");
    Ok(html(page("Facts and events", me(&u), &body)))
}

#[derive(Debug, Deserialize)]
pub struct ScopeForm {
    csrf: String,
    details: String,
    /// Set on the fresh-approval page: the hash of what it showed.
    #[serde(default)]
    approve: String,
}

fn widening_fragment(
    id: &str,
    added: &[mandate_core::attenuation::Violation],
    details: &str,
) -> String {
    let mut f = if added.is_empty() {
        format!(
            r#"<section id="widening"><p>This change narrows mandate <code>{}</code>.</p><ul>"#,
            esc(id)
        )
    } else {
        format!(
            r#"<section id="widening"><p>This change gives mandate <code>{}</code> more authority than you granted. Approve it only if the agent should have it:</p><ul>"#,
            esc(id)
        )
    };
    for v in added {
        let _ = write!(
            f,
            "<li><code>{}</code>: {}</li>",
            esc(&v.path),
            esc(&v.message)
        );
    }
    let _ = write!(
        f,
        "</ul><h2>The new scope</h2><pre>{}</pre></section>",
        esc(details)
    );
    f
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
    let fragment = widening_fragment(&id, &added, &pretty);
    let shown = digest(&fragment);
    if !added.is_empty()
        && !bool::from(subtle::ConstantTimeEq::ct_eq(
            f.approve.as_bytes(),
            shown.as_bytes(),
        ))
    {
        let body = format!(
            r#"{fragment}<form method="post" action="/console/mandates/{id}/scope">{csrf}<input type="hidden" name="approve" value="{shown}"><textarea name="details" hidden>{details}</textarea><p><button type="submit" class="danger">Approve the wider scope</button> <a href="/console/mandates/{id}">Cancel</a></p></form>"#,
            id = esc(&id),
            csrf = csrf_field(&u.session.csrf),
            shown = esc(&shown),
            details = esc(&f.details)
        );
        return Ok(html(page("Approve a wider scope", me(&u), &body)));
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
