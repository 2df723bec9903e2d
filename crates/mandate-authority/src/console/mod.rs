//! The console: where a principal grants, watches and ends mandates.
//! Server-rendered HTML, no JavaScript, no build step. Sessions are
//! `HttpOnly`, `SameSite=Lax` cookies (`Secure` when the authority's issuer
//! URL is https); every state-changing form carries a per-session CSRF token.
//! Only principals and admins may sign in; a principal sees only the
//! mandates they granted, an admin their tenant's.

#![allow(
    clippy::result_large_err,
    reason = "handlers return their error pages as responses, as axum handlers do"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::auth::{Caller, Role};
use crate::state::AppState;

pub mod html;
pub mod oidc;
mod pages;

/// How long a console session lives.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const COOKIE: &str = "mandate_session";

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub caller: Caller,
    /// The CSRF token every form must return.
    pub csrf: String,
    expires: Instant,
}

/// Console sessions, in memory (signing in again after a restart).
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Starts a session; returns its id.
    pub fn start(&self, caller: Caller) -> String {
        let id = random_token();
        if let Ok(mut s) = self.inner.lock() {
            s.retain(|_, v| v.expires > Instant::now());
            s.insert(
                id.clone(),
                Session {
                    caller,
                    csrf: random_token(),
                    expires: Instant::now() + SESSION_TTL,
                },
            );
        }
        id
    }

    /// The live session with this id.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<Session> {
        let s = self.inner.lock().ok()?;
        s.get(id).filter(|v| v.expires > Instant::now()).cloned()
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        if let Ok(mut s) = self.inner.lock() {
            s.remove(id);
        }
    }
}

fn session_id(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_owned)
        })
}

/// The session cookie header value.
#[must_use]
pub fn cookie(s: &AppState, id: &str, max_age: u64) -> String {
    let secure = if s.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// A console page's signed-in user (a principal or an admin).
#[derive(Debug, Clone)]
pub struct User {
    /// The session id.
    pub sid: String,
    /// The session.
    pub session: Session,
}

impl User {
    /// The caller.
    #[must_use]
    pub fn caller(&self) -> &Caller {
        &self.session.caller
    }

    /// Checks a form's CSRF token.
    ///
    /// # Errors
    /// 403 when it does not match.
    pub fn check_csrf(&self, token: &str) -> Result<(), Response> {
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            token.as_bytes(),
            self.session.csrf.as_bytes(),
        )) && !token.is_empty()
        {
            Ok(())
        } else {
            Err((StatusCode::FORBIDDEN, axum::response::Html(html::page("Refused", None, "<p class=\"notice\">This form was not sent from the console (CSRF check failed).</p>"))).into_response())
        }
    }
}

impl FromRequestParts<Arc<AppState>> for User {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let Some(sid) = session_id(parts) else {
            return Err(Redirect::to("/console/login").into_response());
        };
        let Some(session) = state.sessions.get(&sid) else {
            return Err(Redirect::to("/console/login").into_response());
        };
        if !matches!(session.caller.role, Role::Principal | Role::Admin) {
            return Err(StatusCode::FORBIDDEN.into_response());
        }
        Ok(User { sid, session })
    }
}

/// The console's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/requests") }),
        )
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/login/pick", post(pages::pick))
        .route("/console/oidc", get(oidc::start))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/logout", post(pages::logout))
        .route("/console/requests", get(pages::requests))
        .route("/console/requests/{id}", get(pages::consent))
        .route("/console/requests/{id}/approve", post(pages::approve))
        .route("/console/requests/{id}/deny", post(pages::deny))
        .route("/console/mandates", get(pages::mandates))
        .route("/console/mandates/{id}", get(pages::mandate))
        .route("/console/mandates/{id}/confirm", get(pages::confirm))
        .route("/console/mandates/{id}/act", post(pages::act))
        .route("/console/mandates/{id}/scope", post(pages::scope))
        .route("/console/audit", get(pages::audit))
        .route("/console/audit/export", get(pages::export))
        .route("/console/facts", get(pages::facts))
}
