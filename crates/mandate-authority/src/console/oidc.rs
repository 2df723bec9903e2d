//! Console sign-in with an enterprise IdP: OpenID Connect authorization
//! code flow with PKCE (S256), `state` and `nonce`. The ID token is verified
//! with the keys of the matching `trusted_issuer`: signature, `iss`, `aud`,
//! `exp`, `nonce`; the role and tenant come from configured claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, Role};
use crate::state::AppState;

/// How long a sign-in may take between the redirect and the callback.
const PENDING_TTL: Duration = Duration::from_secs(600);

struct Pending {
    verifier: String,
    nonce: String,
    expires: Instant,
    /// SHA-256 of the browser binding: the random value put in this
    /// browser's `mandate_oidc` cookie when the sign-in started. A callback
    /// from another browser (an attacker's `code` and `state` sent to a
    /// victim: login CSRF) does not carry it.
    binding: [u8; 32],
}

/// The cookie that binds a sign-in to the browser that started it.
const BINDING_COOKIE: &str = "mandate_oidc";

fn binding_cookie(s: &AppState, value: &str, max_age: u64) -> String {
    let secure = if s.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{BINDING_COOKIE}={value}; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    )
}

/// Sign-ins in flight, by `state`.
#[derive(Default)]
pub struct PendingLogins {
    inner: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for PendingLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLogins")
    }
}

fn random() -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    super::html::notice(status, "Sign-in failed", None, message, true)
}

/// `GET /console/oidc`: redirects to the IdP.
pub async fn start(State(s): State<Arc<AppState>>) -> Response {
    let Some(o) = &s.config.console_oidc else {
        return refuse(StatusCode::NOT_FOUND, "no identity provider is configured");
    };
    let (state, nonce, verifier, binding) = (random(), random(), random(), random());
    let challenge = B64.encode(mandate_core::hash::sha256(verifier.as_bytes()));
    if let Ok(mut p) = s.oidc.inner.lock() {
        p.retain(|_, v| v.expires > Instant::now());
        p.insert(
            state.clone(),
            Pending {
                verifier,
                nonce: nonce.clone(),
                expires: Instant::now() + PENDING_TTL,
                binding: mandate_core::hash::sha256(binding.as_bytes()),
            },
        );
    }
    let sep = if o.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope=openid&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
        o.authorization_endpoint,
        enc(&o.client_id),
        enc(&o.redirect_uri),
        enc(&state),
        enc(&nonce),
        enc(&challenge)
    );
    let mut r = Redirect::to(&url).into_response();
    if let Ok(v) =
        header::HeaderValue::from_str(&binding_cookie(&s, &binding, PENDING_TTL.as_secs()))
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The browser binding this request carries, if any.
fn presented_binding(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(BINDING_COOKIE)
                .and_then(|r| r.strip_prefix('='))
                .map(str::to_owned)
        })
}

/// The callback's query.
#[derive(Debug, Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn exchange(o: &crate::config::ConsoleOidc, code: &str, verifier: &str) -> Result<String, String> {
    let secret = match &o.client_secret_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("client secret: {e}"))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_owned()),
        ("redirect_uri", o.redirect_uri.clone()),
        ("client_id", o.client_id.clone()),
        ("code_verifier", verifier.to_owned()),
    ];
    if let Some(sec) = secret {
        form.push(("client_secret", sec));
    }
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let agent = crate::tls::agent(Duration::from_secs(10));
    let mut resp = agent
        .post(&o.token_endpoint)
        .content_type("application/x-www-form-urlencoded")
        .send(body)
        .map_err(|e| format!("token endpoint: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("token endpoint: {e}"))?;
    if status != 200 {
        return Err(format!("token endpoint answered {status}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("token endpoint: {e}"))?;
    v.get("id_token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "no id_token in the answer".into())
}

fn verify_id_token(
    s: &AppState,
    o: &crate::config::ConsoleOidc,
    token: &str,
    nonce: &str,
) -> Result<Caller, String> {
    let t = s
        .issuers
        .get(&o.issuer)
        .ok_or("id_token: the issuer is not a trusted_issuer")?;
    // An ID token's audience is this console's client id (OpenID Connect
    // Core §3.1.3.7); its algorithm is the key's, whatever the IdP's default
    // (RS256 for most).
    let c = t
        .keys
        .verify(token, &o.issuer, &o.client_id, &["jwt"])
        .map_err(|e| format!("id_token: {e}"))?;
    if !c.get("nonce").and_then(Value::as_str).is_some_and(|n| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            n.as_bytes(),
            nonce.as_bytes(),
        ))
    }) {
        return Err("id_token: nonce does not match".into());
    }
    let map = crate::idp::ClaimMap {
        role_claim: o.role_claim.clone(),
        tenant_claim: o.tenant_claim.clone(),
        ..t.claims
    };
    let caller = map
        .caller(&o.issuer, &c)
        .map_err(|e| format!("id_token: {e}"))?;
    if !matches!(caller.role, Role::Principal | Role::Admin) {
        return Err("only principals and administrators may use the console".into());
    }
    Ok(caller)
}

/// `GET /console/oidc/callback`: exchanges the code (with the PKCE
/// verifier), verifies the ID token, starts a session.
pub async fn callback(
    State(s): State<Arc<AppState>>,
    headers: header::HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(o) = s.config.console_oidc.clone() else {
        return refuse(StatusCode::NOT_FOUND, "no identity provider is configured");
    };
    if let Some(e) = q.error {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("the identity provider said: {e}"),
        );
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return refuse(StatusCode::BAD_REQUEST, "code and state are required");
    };
    let pending = s
        .oidc
        .inner
        .lock()
        .ok()
        .and_then(|mut p| p.remove(&state))
        .filter(|p| p.expires > Instant::now());
    let Some(pending) = pending else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unknown or expired sign-in (state)",
        );
    };
    // The sign-in must come back to the browser that started it.
    let presented = presented_binding(&headers)
        .map(|b| mandate_core::hash::sha256(b.as_bytes()))
        .unwrap_or([0; 32]);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &presented[..],
        &pending.binding[..],
    )) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this sign-in was not started in this browser; start it again here",
        );
    }
    let o2 = o.clone();
    let verifier = pending.verifier.clone();
    let token = match tokio::task::spawn_blocking(move || exchange(&o2, &code, &verifier)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return refuse(StatusCode::UNAUTHORIZED, &e),
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match verify_id_token(&s, &o, &token, &pending.nonce) {
        Ok(caller) => {
            let Some(sid) = s.sessions.start(caller) else {
                return refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many sign-ins; try again in a minute",
                );
            };
            let mut r = Redirect::to("/console/requests").into_response();
            if let Ok(v) = header::HeaderValue::from_str(&super::cookie(
                &s,
                &sid,
                super::SESSION_TTL.as_secs(),
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            // The binding has served: cleared.
            if let Ok(v) = header::HeaderValue::from_str(&binding_cookie(&s, "", 0)) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => refuse(StatusCode::UNAUTHORIZED, &e),
    }
}
