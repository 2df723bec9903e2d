//! Mandate-bound access tokens: OAuth 2.0 token exchange (RFC 8693) of a
//! mandate for a short-lived, DPoP-bound JWT access token (RFC 9068, RFC
//! 9449), its introspection (RFC 7662) for resource servers that cannot
//! consume signals, and the authorization server metadata (RFC 8414).
//!
//! The exchange is authenticated by possession: the caller presents the
//! mandate (chain) as `subject_token` and a DPoP proof signed with the key
//! its leaf binds. The token is refused (`invalid_grant`) unless every
//! mandate of the chain is registered here and in force; it may narrow
//! (`resource`, `authorization_details`) and never widen; it ends no later
//! than the chain and within [`MAX_TOKEN_SECS`]. Introspection answers
//! `active: false` as soon as any mandate of the chain ends.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_core::attenuation::details_within;
use mandate_core::chain::{CHAIN_SEPARATOR, VerifiedChain};
use mandate_core::decision::not_in_force;
use mandate_core::jws;
use mandate_core::keys::Algorithm;
use mandate_core::location::{Location, any_covers};
use mandate_core::model::{AuthorizationDetail, MandateClaims};
use mandate_core::pop::{self, ProofTarget};
use mandate_core::timestamp::UnixTime;
use serde_json::{Value, json};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::http::requests::new_id;
use crate::state::AppState;

/// The grant type of a token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` for a single mandate (a JWT).
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// `subject_token_type` for a delegated chain (`root~child~…`): this
/// project's own type, since no registered type names a JWS chain.
pub const CHAIN_TYPE: &str = "urn:mandate:params:oauth:token-type:mandate-chain";
/// The issued token's type.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The longest an access token lives, in seconds.
pub const MAX_TOKEN_SECS: i64 = 300;
/// The `typ` of an issued access token (RFC 9068).
pub const AT_TYP: &str = "at+jwt";

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn metadata(State(s): State<Arc<AppState>>) -> Json<Value> {
    let base = s.issuer.trim_end_matches('/');
    Json(json!({
        "issuer": s.issuer,
        "token_endpoint": format!("{base}/oauth/token"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": [TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "dpop_signing_alg_values_supported": pop::DPOP_ALGORITHMS.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "authorization_details_types_supported": ["*"],
        "response_types_supported": [],
    }))
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let mut res = (
        status,
        Json(super::wire::OAuthError {
            error: error.to_owned(),
            error_description: description.into(),
        }),
    )
        .into_response();
    no_store(&mut res);
    res
}

fn no_store(res: &mut Response) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn invalid_request(description: impl Into<String>) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: impl Into<String>) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// Reads an `application/x-www-form-urlencoded` body: each parameter at most
/// once (RFC 6749 §3.2), names and values as text.
///
/// # Errors
/// The parameter given twice.
pub fn form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("{k}: given more than once"));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn now() -> Result<UnixTime, ApiError> {
    UnixTime::from_secs(crate::auth::now_secs()).map_err(ApiError::internal)
}

/// Every mandate of the chain, as the authority knows it (registered), with
/// the tenant they belong to; or why not.
fn registered(
    s: &AppState,
    chain: &VerifiedChain,
) -> Result<(String, Vec<Arc<MandateClaims>>), String> {
    s.with_registry(|r| {
        let root = chain.root().id().as_str();
        let Some(tenant) = r.tenant_of(root).map(str::to_owned) else {
            return Err(format!("mandate {root} was not issued by this authority"));
        };
        let mut claims = Vec::new();
        for m in chain.mandates() {
            match r.get(&tenant, m.id().as_str()) {
                Some(rec) => claims.push(Arc::clone(&rec.claims)),
                None => {
                    return Err(format!(
                        "mandate {} is not registered with the authority (register a child before exchanging it)",
                        m.id()
                    ));
                }
            }
        }
        Ok((tenant, claims))
    })
    .map_err(|e| e.detail)
    .and_then(|r| r)
}

/// `POST /oauth/token`: a mandate (with a DPoP proof by its holder key) for
/// a DPoP-bound access token.
pub async fn token(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut res = match exchange(&s, &headers, &body).await {
        Ok(r) | Err(r) => r,
    };
    // With nonces on, every answer says which nonce the next proof names.
    if s.config.dpop_nonce
        && let Ok(now) = now()
        && let Ok(v) = HeaderValue::from_str(&s.nonces.current(now))
    {
        res.headers_mut().insert("dpop-nonce", v);
    }
    res
}

async fn exchange(s: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, Response> {
    let f = form(body).map_err(invalid_request)?;
    match param(&f, "grant_type") {
        Some(TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type: `{other}` is not supported (use {TOKEN_EXCHANGE})"),
            ));
        }
        None => return Err(invalid_request("grant_type: missing")),
    }
    let subject =
        param(&f, "subject_token").ok_or_else(|| invalid_request("subject_token: missing"))?;
    match param(&f, "subject_token_type") {
        Some(JWT_TYPE) if subject.contains(CHAIN_SEPARATOR) => {
            return Err(invalid_request(format!(
                "subject_token_type: a delegated chain is `{CHAIN_TYPE}`, not a single JWT"
            )));
        }
        Some(JWT_TYPE | CHAIN_TYPE) => {}
        Some(other) => {
            return Err(invalid_request(format!(
                "subject_token_type: `{other}` is not supported ({JWT_TYPE} or {CHAIN_TYPE})"
            )));
        }
        None => return Err(invalid_request("subject_token_type: missing")),
    }
    if let Some(t) = param(&f, "requested_token_type")
        && t != ACCESS_TOKEN_TYPE
    {
        return Err(invalid_request(format!(
            "requested_token_type: only {ACCESS_TOKEN_TYPE} is issued"
        )));
    }
    for unsupported in ["actor_token", "actor_token_type", "scope"] {
        if param(&f, unsupported).is_some() {
            return Err(invalid_request(format!(
                "{unsupported}: not supported (narrow with resource or authorization_details)"
            )));
        }
    }
    let now = now().map_err(|e| oauth_error(e.status, "server_error", e.detail))?;
    let chain = s
        .verifier
        .verify(subject)
        .map_err(|e| invalid_grant(format!("subject_token: {e}")))?;

    // Possession: a DPoP proof for this very request, by the leaf's key.
    let proofs: Vec<&HeaderValue> = headers.get_all("dpop").iter().collect();
    let proof = match proofs.as_slice() {
        [one] => one.to_str().ok(),
        [] => None,
        _ => Some(""),
    };
    let htu = format!("{}/oauth/token", s.issuer.trim_end_matches('/'));
    let possession = pop::Possession::Proof {
        proof,
        target: ProofTarget {
            htm: "POST",
            htu: &htu,
            access_token: None,
            nonce: s.config.dpop_nonce.then_some(&s.nonces),
        },
        // The tokens issued here are DPoP-bound (`cnf.jkt`); a
        // certificate-bound mandate is refused just below, so no token
        // is ever bound to less than its mandate.
        certificate: None,
    };
    if chain
        .leaf()
        .claims()
        .agent
        .cnf
        .as_ref()
        .is_some_and(|c| c.x5t_s256.is_some())
    {
        return Err(invalid_grant(
            "subject_token: a certificate-bound mandate (agent.cnf.x5t#S256) is not exchanged: \
             the token would be DPoP-bound, a weaker binding than the mandate's; present the \
             mandate itself over mutual TLS",
        ));
    }
    if let Some(e) = pop::check(&chain, &possession, &s.replay, now) {
        if e == pop::PopError::NonceRequired {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "use_dpop_nonce",
                "Authorization server requires nonce in DPoP proof",
            ));
        }
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            format!("{}: {e}", e.code()),
        ));
    }
    let leaf = chain.leaf().claims();
    if leaf.lifecycle.one_time {
        return Err(invalid_grant(
            "subject_token: a one-time mandate is used once at an enforcement point, not exchanged",
        ));
    }
    let (tenant, known) = registered(s, &chain).map_err(invalid_grant)?;
    let snapshot = s
        .with_registry(|r| r.snapshot(&tenant))
        .map_err(|e| oauth_error(e.status, "server_error", e.detail))?;
    let ended = not_in_force(known.iter().map(AsRef::as_ref), &snapshot, now);
    if !ended.is_empty() {
        return Err(invalid_grant(format!(
            "subject_token: the mandate is not in force ({})",
            ended.join(", ")
        )));
    }

    // Narrowing: never wider than the leaf.
    let mut details: Vec<AuthorizationDetail> = leaf.authorization_details.clone();
    if let Some(raw) = param(&f, "authorization_details") {
        let asked: Vec<AuthorizationDetail> = serde_json::from_str(raw)
            .map_err(|e| invalid_request(format!("authorization_details: {e}")))?;
        if asked.is_empty() {
            return Err(invalid_request("authorization_details: empty"));
        }
        let over = details_within(&leaf.authorization_details, &asked);
        if !over.is_empty() {
            let codes: Vec<String> = over.iter().map(|v| v.code()).collect();
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_authorization_details",
                format!(
                    "authorization_details: wider than the mandate ({})",
                    codes.join(", ")
                ),
            ));
        }
        details = asked;
    }
    let audience: Vec<String> = match param(&f, "resource") {
        Some(resource) => {
            let at = Location::parse_request(resource).map_err(|e| {
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    format!("resource: {e}"),
                )
            })?;
            if !details.iter().any(|d| any_covers(&d.locations, &at)) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    format!("resource: `{resource}` is outside the mandate's locations"),
                ));
            }
            vec![resource.to_owned()]
        }
        None => {
            let mut all: Vec<String> = details
                .iter()
                .flat_map(|d| d.locations.iter().cloned())
                .collect();
            all.dedup();
            all
        }
    };

    // Ends no later than any mandate of the chain, and within minutes.
    let chain_end = known
        .iter()
        .map(|c| c.exp.min(c.lifecycle.hard_expiry).secs())
        .min()
        .unwrap_or(now.secs());
    let exp = chain_end.min(now.secs().saturating_add(MAX_TOKEN_SECS));
    let jkt = chain
        .holder_key()
        .map(|k| k.to_jwk().thumbprint())
        .unwrap_or_default();
    let jti = new_id("at");
    let claims = json!({
        "iss": s.issuer,
        "sub": leaf.agent.id,
        "client_id": leaf.agent.instance,
        "aud": audience,
        "iat": now.secs(),
        "exp": exp,
        "jti": jti,
        "mandate_id": leaf.mandate_id,
        "mandate_chain": chain.ids(),
        "cnf": {"jkt": jkt},
        "authorization_details": details,
    });
    // Durable before it is handed out: the audit log says which mandate
    // this token speaks for and until when.
    let (t, mid, record) = (
        tenant.clone(),
        leaf.mandate_id.to_string(),
        json!({"jti": jti, "exp": exp, "aud": audience, "agent": leaf.agent.id, "jkt": jkt}),
    );
    crate::service::decisions::note(s, t, "token_issued", Some(mid), record)
        .await
        .map_err(|e| {
            let e = ApiError::from(e);
            oauth_error(e.status, "server_error", e.detail)
        })?;
    let token = jws::sign(&s.authority(), AT_TYP, claims.to_string().as_bytes());
    let mut res = Json(super::wire::TokenAnswer {
        access_token: token,
        issued_token_type: ACCESS_TOKEN_TYPE.to_owned(),
        token_type: "DPoP".to_owned(),
        expires_in: exp - now.secs(),
    })
    .into_response();
    no_store(&mut res);
    Ok(res)
}

/// `POST /oauth/introspect` (enforcer; RFC 7662): whether an access token
/// this authority issued is active now. Inactive the moment any mandate of
/// its chain ends, is expired, or the token is not one of this tenant's.
pub async fn introspect(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Enforcer])?;
    let f = form(&body).map_err(ApiError::bad_request)?;
    let token = param(&f, "token").ok_or_else(|| ApiError::bad_request("token: missing"))?;
    let now = now()?;
    let inactive = || {
        let mut res = Json(json!({"active": false})).into_response();
        no_store(&mut res);
        Ok(res)
    };
    let Some(claims) = verify_access_token(&s, token) else {
        return inactive();
    };
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
    if now.secs() >= exp {
        return inactive();
    }
    let ids: Vec<String> = claims
        .get("mandate_chain")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let in_force = s.with_registry(|r| {
        let known: Option<Vec<Arc<MandateClaims>>> = ids
            .iter()
            .map(|id| r.get(&caller.tenant, id).map(|m| Arc::clone(&m.claims)))
            .collect();
        match known {
            Some(k) if !k.is_empty() => not_in_force(
                k.iter().map(AsRef::as_ref),
                &r.snapshot(&caller.tenant),
                now,
            )
            .is_empty(),
            _ => false,
        }
    })?;
    if !in_force {
        return inactive();
    }
    let mut out = claims;
    if let Some(o) = out.as_object_mut() {
        o.insert("active".into(), Value::Bool(true));
        o.insert("token_type".into(), json!("DPoP"));
    }
    let mut res = Json(out).into_response();
    no_store(&mut res);
    Ok(res)
}

/// The claims of an access token this authority signed (typ `at+jwt`, its
/// key, its issuer), or `None`.
fn verify_access_token(s: &AppState, token: &str) -> Option<Value> {
    let d = jws::decode(token, &[Algorithm::EdDSA, Algorithm::ES256].into(), AT_TYP).ok()?;
    let key = s.keys.key(d.kid.as_deref()?)?;
    if d.alg != key.algorithm() {
        return None;
    }
    if !key.verify(d.signing_input.as_bytes(), &d.signature) {
        return None;
    }
    let claims: Value = serde_json::from_slice(&d.payload).ok()?;
    (claims.get("iss").and_then(Value::as_str) == Some(s.issuer.as_str())).then_some(claims)
}
