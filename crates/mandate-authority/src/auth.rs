//! Who is calling: bearer JWTs from trusted issuers (the local one by
//! default), each naming a role and a tenant.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use mandate_core::keys::{Algorithm, KeySet, SigningKey};
use serde::{Deserialize, Serialize};

use crate::config::{AUDIENCE, LOCAL_ISSUER};
use crate::error::ApiError;
use crate::state::AppState;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Approves requests addressed to them; governs mandates they granted.
    Principal,
    /// Governs every mandate of the tenant; sets mission facts.
    Admin,
    /// Requests mandates, reads its own, asks for discovery, registers children.
    Agent,
    /// Posts business events.
    EventSource,
    /// Asks for decisions, reads state, consumes one-time mandates.
    Enforcer,
}

impl Role {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Principal => "principal",
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::EventSource => "event_source",
            Role::Enforcer => "enforcer",
        }
    }
}

/// The claims of a caller token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience (`mandate`): one string, or a list that contains it.
    pub aud: Audience,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Not before (optional; 60 s leeway for clock skew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The caller's role.
    pub role: Role,
    /// The caller's tenant.
    pub tenant: String,
}

/// A token's `aud`: a string or a list of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names this audience.
    #[must_use]
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(all) => all.iter().any(|a| a == aud),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Subject at its issuer.
    pub sub: String,
    /// Its issuer.
    pub iss: String,
    /// Its role.
    pub role: Role,
    /// Its tenant.
    pub tenant: String,
}

/// Trusted issuers and their keys (replaced when a JWKS URL is fetched again).
#[derive(Debug, Default)]
pub struct Issuers {
    keys: std::sync::RwLock<HashMap<String, KeySet>>,
}

impl Issuers {
    /// Trusts `iss` with these keys (replacing any it had).
    pub fn trust(&self, iss: &str, keys: KeySet) {
        if let Ok(mut k) = self.keys.write() {
            k.insert(iss.to_owned(), keys);
        }
    }

    /// The key `kid` of a trusted issuer.
    #[must_use]
    pub fn key(&self, iss: &str, kid: &str) -> Option<mandate_core::keys::VerifyingKey> {
        self.keys.read().ok()?.get(iss)?.get(kid).cloned()
    }

    /// Verifies a bearer token: signature by a key of its (trusted) issuer,
    /// `aud`, `exp`, and a known role and a tenant.
    ///
    /// # Errors
    /// 401 with what failed.
    pub fn verify(&self, token: &str, now: i64) -> Result<Caller, ApiError> {
        let algs = [Algorithm::EdDSA, Algorithm::ES256].into();
        let d = mandate_core::jws::decode_access_token(token, &algs)
            .map_err(|e| ApiError::unauthenticated(format!("token: {e}")))?;
        let claims: TokenClaims = serde_json::from_slice(&d.payload)
            .map_err(|e| ApiError::unauthenticated(format!("token: {e}")))?;
        let kid = d
            .kid
            .as_deref()
            .ok_or_else(|| ApiError::unauthenticated("token: kid missing"))?;
        let key = {
            let all = self
                .keys
                .read()
                .map_err(|_| ApiError::internal("issuer keys lock poisoned"))?;
            let keys = all
                .get(&claims.iss)
                .ok_or_else(|| ApiError::unauthenticated("token: untrusted issuer"))?;
            keys.get(kid)
                .cloned()
                .ok_or_else(|| ApiError::unauthenticated("token: unknown kid"))?
        };
        if key.algorithm() != d.alg || !key.verify(d.signing_input.as_bytes(), &d.signature) {
            return Err(ApiError::unauthenticated(
                "token: signature does not verify",
            ));
        }
        if !claims.aud.contains(AUDIENCE) {
            return Err(ApiError::unauthenticated("token: wrong audience"));
        }
        if now >= claims.exp || claims.iat > now + 60 || claims.nbf.is_some_and(|n| n > now + 60) {
            return Err(ApiError::unauthenticated("token: expired or not yet valid"));
        }
        if claims.tenant.is_empty() || claims.sub.is_empty() {
            return Err(ApiError::unauthenticated(
                "token: sub and tenant are required",
            ));
        }
        Ok(Caller {
            sub: claims.sub,
            iss: claims.iss,
            role: claims.role,
            tenant: claims.tenant,
        })
    }
}

/// Mints a token from the local issuer (`mandate token`).
#[must_use]
pub fn mint(
    key: &SigningKey,
    sub: &str,
    role: Role,
    tenant: &str,
    now: i64,
    ttl_secs: i64,
) -> String {
    let claims = TokenClaims {
        iss: LOCAL_ISSUER.into(),
        sub: sub.into(),
        aud: Audience::One(AUDIENCE.into()),
        nbf: None,
        iat: now,
        exp: now + ttl_secs,
        role,
        tenant: tenant.into(),
    };
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    mandate_core::jws::sign(key, "JWT", &payload)
}

/// Seconds since the epoch.
#[must_use]
pub fn now_secs() -> i64 {
    now_ms().div_euclid(1000)
}

/// Milliseconds since the epoch.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthenticated("Authorization: a bearer token is required")
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthenticated("Authorization: must be `Bearer <token>`"))?;
        state.issuers.verify(token.trim(), now_secs())
    }
}

impl Caller {
    /// Requires one of these roles.
    ///
    /// # Errors
    /// 403.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role `{}` may not do this",
                self.role.as_str()
            )))
        }
    }
}
