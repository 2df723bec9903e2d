//! Who is calling: bearer JWTs from trusted issuers (the local one by
//! default), each naming a role and a tenant.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use mandate_core::keys::SigningKey;
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

/// One trusted issuer: its keys (replaced when its JWKS is fetched again),
/// the audience its caller tokens must name, and how its claims name a role
/// and a tenant.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// The verification keys.
    pub keys: crate::idp::IssuerKeys,
    /// The `aud` caller tokens must contain.
    pub audience: String,
    /// Role and tenant claims.
    pub claims: crate::idp::ClaimMap,
}

/// Trusted issuers, and the bearer tokens verified under their keys now.
#[derive(Debug, Default)]
pub struct Issuers {
    all: std::sync::RwLock<HashMap<String, Trusted>>,
    verified: std::sync::RwLock<mandate_core::cache::Generations<[u8; 32], Verified>>,
    /// Counts the times the kept tokens were forgotten (keys replaced, an
    /// issuer trusted again): a token verified under the keys before is not
    /// kept, even when its check finished after they changed.
    generation: std::sync::atomic::AtomicU64,
}

/// A bearer token whose signature, issuer, audience and claims were checked,
/// kept by the SHA-256 of the token: a caller sends the same token with
/// every request, and verifying its signature each time would double the
/// signature work of a decision. Only the time checks depend on when the
/// token is used, so they run again on every use.
#[derive(Debug, Clone)]
struct Verified {
    caller: Caller,
    /// Usable from this second (`nbf` and `iat` less the leeway)…
    from: i64,
    /// …to this one (`exp` plus the leeway).
    until: i64,
}

/// Most verified bearer tokens kept, in two generations: one used within
/// the last generation stays, whatever other tokens are presented.
const VERIFIED_TOKENS: usize = 10_000;

impl Issuers {
    /// Trusts `iss` (replacing what it had). Tokens verified before are
    /// verified again.
    pub fn trust(&self, iss: &str, t: Trusted) {
        if let Ok(mut k) = self.all.write() {
            k.insert(iss.to_owned(), t);
        }
        self.forget_verified();
    }

    /// Replaces the keys of a trusted issuer (a JWKS fetched again). Tokens
    /// verified before are verified again: one signed by a key now gone no
    /// longer passes.
    pub fn replace_keys(&self, iss: &str, keys: crate::idp::IssuerKeys) {
        if let Ok(mut k) = self.all.write()
            && let Some(t) = k.get_mut(iss)
        {
            t.keys = keys;
        }
        self.forget_verified();
    }

    /// The caller of a token verified before under the keys trusted now,
    /// if `now` is inside its lifetime.
    fn cached(&self, digest: &[u8; 32], now: i64) -> Option<Caller> {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        // The entry itself is copied only to carry it into the current
        // generation; a use in the current one copies just the caller.
        let (caller, carried) = {
            let verified = self.verified.read().ok()?;
            let (v, previous) = verified.find(|map| map.get(digest))?;
            if !(v.from..=v.until).contains(&now) {
                return None;
            }
            (v.caller.clone(), previous.then(|| v.clone()))
        };
        if let Some(v) = carried {
            self.remember(*digest, v, generation);
        }
        Some(caller)
    }

    /// Keeps a verified token, unless the kept tokens were forgotten since
    /// `generation` was read (it was checked under the keys before).
    fn remember(&self, digest: [u8; 32], v: Verified, generation: u64) {
        if let Ok(mut verified) = self.verified.write()
            && self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation
        {
            verified.insert(digest, v, VERIFIED_TOKENS);
        }
    }

    fn forget_verified(&self) {
        if let Ok(mut v) = self.verified.write() {
            v.clear();
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A trusted issuer.
    #[must_use]
    pub fn get(&self, iss: &str) -> Option<Trusted> {
        self.all.read().ok()?.get(iss).cloned()
    }

    /// Verifies a bearer token: the issuer it names is trusted, the key its
    /// `kid` names signed it with one of the key's algorithms, `typ` is
    /// absent, `JWT` or `at+jwt`, `aud` contains the issuer's audience,
    /// `exp`/`nbf` hold (60 s leeway), and its claims name a role and a
    /// tenant.
    ///
    /// # Errors
    /// 401 with what failed.
    pub fn verify(&self, token: &str, now: i64) -> Result<Caller, ApiError> {
        let digest = mandate_core::hash::sha256(token.as_bytes());
        if let Some(caller) = self.cached(&digest, now) {
            return Ok(caller);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let unauth = |m: &str| ApiError::unauthenticated(format!("token: {m}"));
        // The issuer is read before the signature is checked only to pick
        // the keys; everything it says is checked against them.
        let iss = mandate_core::jws::unverified_payload(token)
            .ok()
            .and_then(|c| c.get("iss").and_then(|v| v.as_str()).map(str::to_owned))
            .ok_or_else(|| unauth("not a JWT with an `iss`"))?;
        let t = self.get(&iss).ok_or_else(|| unauth("untrusted issuer"))?;
        let claims = t
            .keys
            .verify(token, &iss, &t.audience, &["jwt", "at+jwt"])
            .map_err(|e| unauth(&e))?;
        let caller = t.claims.caller(&iss, &claims).map_err(|e| unauth(&e))?;
        if let Some(window) = usable(&claims) {
            self.remember(
                digest,
                Verified {
                    caller: caller.clone(),
                    from: window.0,
                    until: window.1,
                },
                generation,
            );
        }
        Ok(caller)
    }
}

/// The seconds a verified token may be used in, as the full check counts
/// them (`exp`, `nbf` and `iat` with the leeway); `None` (not kept) when a
/// time claim is not a whole number of seconds.
fn usable(claims: &serde_json::Value) -> Option<(i64, i64)> {
    let leeway = i64::try_from(crate::idp::LEEWAY_SECS).ok()?;
    let whole = |name: &str| -> Option<Option<i64>> {
        match claims.get(name) {
            None => Some(None),
            Some(v) => v.as_i64().map(Some),
        }
    };
    let until = whole("exp")??.checked_add(leeway)?;
    let from = match (whole("nbf")?, whole("iat")?) {
        (None, None) => i64::MIN,
        (a, b) => a.max(b)?.checked_sub(leeway)?,
    };
    Some((from, until))
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

#[cfg(test)]
mod tests {
    use mandate_core::keys::{Algorithm, KeySet};

    use super::*;

    fn trusted(key: &SigningKey) -> Trusted {
        let mut keys = KeySet::new();
        keys.insert(key.verifying_key().unwrap());
        Trusted {
            keys: crate::idp::IssuerKeys::from_keyset(&keys).unwrap(),
            audience: AUDIENCE.to_owned(),
            claims: crate::idp::ClaimMap::default(),
        }
    }

    #[test]
    fn a_verified_token_is_reused_only_inside_its_lifetime_and_under_the_same_keys() {
        let key = SigningKey::from_seed(Algorithm::EdDSA, [7; 32]);
        let issuers = Issuers::default();
        issuers.trust(LOCAL_ISSUER, trusted(&key));
        let now = now_secs();
        let token = mint(&key, "gateway-1", Role::Enforcer, "acme", now, 600);
        let digest = mandate_core::hash::sha256(token.as_bytes());
        assert!(issuers.cached(&digest, now).is_none(), "unverified");
        assert_eq!(issuers.verify(&token, now).unwrap().sub, "gateway-1");
        assert_eq!(issuers.cached(&digest, now).unwrap().role, Role::Enforcer);
        // The same window as the full check: `iat` and `exp`, 60 s leeway.
        assert!(issuers.cached(&digest, now + 660).is_some());
        assert!(issuers.cached(&digest, now + 661).is_none(), "expired");
        assert!(issuers.cached(&digest, now - 60).is_some());
        assert!(issuers.cached(&digest, now - 61).is_none(), "issued later");
        // Keys replaced: the token is verified again, and refused.
        let other = SigningKey::from_seed(Algorithm::EdDSA, [8; 32]);
        issuers.replace_keys(LOCAL_ISSUER, trusted(&other).keys);
        assert!(issuers.cached(&digest, now).is_none());
        let err = issuers.verify(&token, now).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::UNAUTHORIZED, "{err:?}");
        // A token whose check began under the old keys and ended after
        // they were replaced is not kept.
        let token = mint(&other, "gateway-2", Role::Enforcer, "acme", now, 600);
        let digest = mandate_core::hash::sha256(token.as_bytes());
        let before = issuers.generation.load(std::sync::atomic::Ordering::SeqCst);
        let checked = issuers.verify(&token, now).unwrap();
        issuers.forget_verified();
        issuers.remember(
            digest,
            Verified {
                caller: checked,
                from: now - 60,
                until: now + 660,
            },
            before,
        );
        assert!(
            issuers.cached(&digest, now).is_none(),
            "kept across a key change"
        );
        // A token never verified is not answered from the cache by digest
        // of another.
        let forged = format!("{token}x");
        assert!(issuers.verify(&forged, now).is_err());
    }
}
