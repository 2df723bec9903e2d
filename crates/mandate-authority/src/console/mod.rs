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

/// Console sessions, in memory (signing in again after a restart). At most
/// `max` live at once (the oldest is dropped for a new one), and at most
/// [`SIGN_INS_PER_MINUTE`] started per minute: signing in in a loop neither
/// grows memory without bound nor crowds out everyone else for long.
#[derive(Debug)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
    max: usize,
    window: Mutex<(Instant, usize)>,
}

/// Most console sign-ins started per minute.
pub const SIGN_INS_PER_MINUTE: usize = 120;

impl Default for Sessions {
    fn default() -> Self {
        Self::new(10_000)
    }
}

fn random_token() -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Sessions, at most `max` at once.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            max: max.max(1),
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// How many sessions are live.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether no session is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a session; returns its id, or `None` when too many sign-ins
    /// were started in the last minute.
    pub fn start(&self, caller: Caller) -> Option<String> {
        {
            let mut w = self.window.lock().ok()?;
            if w.0.elapsed() >= Duration::from_secs(60) {
                *w = (Instant::now(), 0);
            }
            if w.1 >= SIGN_INS_PER_MINUTE {
                return None;
            }
            w.1 += 1;
        }
        let id = random_token();
        if let Ok(mut s) = self.inner.lock() {
            s.retain(|_, v| v.expires > Instant::now());
            while s.len() >= self.max {
                let Some(oldest) = s
                    .iter()
                    .min_by_key(|(_, v)| v.expires)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                s.remove(&oldest);
            }
            s.insert(
                id.clone(),
                Session {
                    caller,
                    csrf: random_token(),
                    expires: Instant::now() + SESSION_TTL,
                },
            );
        }
        Some(id)
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
            Err(html::notice(
                StatusCode::FORBIDDEN,
                "Refused",
                None,
                "This form was not sent from the console (CSRF check failed).",
                false,
            ))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::Role;

    fn caller(n: usize) -> Caller {
        Caller {
            sub: format!("u{n}"),
            iss: "mandate-local".into(),
            role: Role::Principal,
            tenant: "t".into(),
        }
    }

    #[test]
    fn sessions_are_bounded_and_sign_ins_rate_limited() {
        let s = Sessions::new(10);
        let mut first = None;
        for n in 0..SIGN_INS_PER_MINUTE {
            let id = s.start(caller(n)).unwrap();
            first.get_or_insert(id);
            assert!(s.len() <= 10);
        }
        // The oldest session made room for the newer ones.
        assert!(s.get(&first.unwrap()).is_none());
        // One more sign-in this minute is refused.
        assert!(s.start(caller(0)).is_none());
    }
}
