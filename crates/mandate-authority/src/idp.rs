//! Tokens from identity providers: the keys of a JWKS as the provider
//! publishes it (RSA, P-256, Ed25519; other types and uses skipped), a JWT
//! verified with jsonwebtoken against them, and the claims mapped to a
//! [`Caller`] (which claim holds the role and the tenant, and which
//! provider groups mean which role).
//!
//! The algorithm is chosen by the key, never by the token: a key admits the
//! algorithms of its family (narrowed by its `alg` when it names one), and
//! a token whose `alg` is not among them is refused before any signature is
//! checked. Headers that would choose a key (`jwk`, `jku`, `x5u`, `x5c`)
//! and `crit` are refused.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm as Alg, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, Role};

/// The smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_BYTES: usize = 256;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// One verification key.
#[derive(Clone)]
struct Entry {
    kid: Option<String>,
    key: DecodingKey,
    algs: Vec<Alg>,
}

/// The verification keys of one issuer.
#[derive(Clone, Default)]
pub struct IssuerKeys {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.kid, &e.algs)))
            .finish()
    }
}

/// The algorithms a key of this JWK's type verifies, narrowed by its `alg`.
fn algorithms(jwk: &Jwk) -> Result<Vec<Alg>, String> {
    let family: Vec<Alg> = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                p.n.trim_end_matches('='),
            )
            .map_err(|_| "RSA `n` is not base64url".to_owned())?;
            let bytes = n.iter().skip_while(|b| **b == 0).count();
            if bytes < MIN_RSA_BYTES {
                return Err(format!("RSA key of {} bits (at least 2048)", bytes * 8));
            }
            vec![
                Alg::RS256,
                Alg::RS384,
                Alg::RS512,
                Alg::PS256,
                Alg::PS384,
                Alg::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => vec![Alg::ES256],
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Alg::EdDSA]
        }
        AlgorithmParameters::EllipticCurve(_) | AlgorithmParameters::OctetKeyPair(_) => {
            return Err("curve not supported (P-256 and Ed25519 are)".into());
        }
        // A shared secret in a public key set, or a type not known here.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric key (kty oct)".into()),
        _ => return Err("key type not supported".into()),
    };
    match &jwk.common.key_algorithm {
        None => Ok(family),
        Some(a) => {
            let named = match a {
                KeyAlgorithm::RS256 => Alg::RS256,
                KeyAlgorithm::RS384 => Alg::RS384,
                KeyAlgorithm::RS512 => Alg::RS512,
                KeyAlgorithm::PS256 => Alg::PS256,
                KeyAlgorithm::PS384 => Alg::PS384,
                KeyAlgorithm::PS512 => Alg::PS512,
                KeyAlgorithm::ES256 => Alg::ES256,
                KeyAlgorithm::EdDSA => Alg::EdDSA,
                other => return Err(format!("alg {other:?} not supported")),
            };
            if family.contains(&named) {
                Ok(vec![named])
            } else {
                Err(format!("alg {named:?} does not fit the key's type"))
            }
        }
    }
}

impl IssuerKeys {
    /// The signature keys of a JWKS; the others (encryption keys, types or
    /// curves not verified here, RSA under 2048 bits) are skipped as
    /// RFC 7517 §5 says, each named in the second value. A set left with
    /// no key is an error.
    ///
    /// # Errors
    /// Not a JWKS, or no usable key.
    pub fn from_jwks(jwks: &Value) -> Result<(Self, Vec<String>), String> {
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("keys: missing or not an array")?;
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let name = k
                .get("kid")
                .and_then(Value::as_str)
                .map_or_else(|| format!("keys[{i}]"), |kid| format!("keys[{i}] ({kid})"));
            let jwk: Jwk = match serde_json::from_value(k.clone()) {
                Ok(j) => j,
                Err(e) => {
                    skipped.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                skipped.push(format!("{name}: not a signature key"));
                continue;
            }
            let algs = match algorithms(&jwk) {
                Ok(a) => a,
                Err(e) => {
                    skipped.push(format!("{name}: {e}"));
                    continue;
                }
            };
            match DecodingKey::from_jwk(&jwk) {
                Ok(key) => entries.push(Entry {
                    kid: jwk.common.key_id.clone(),
                    key,
                    algs,
                }),
                Err(e) => skipped.push(format!("{name}: {e}")),
            }
        }
        if entries.is_empty() {
            return Err("no signature key this authority can verify with (RS256/PS256 with RSA ≥ 2048 bits, ES256, EdDSA)".into());
        }
        Ok((Self { entries }, skipped))
    }

    /// The keys of a set of this project's keys (the local issuer's).
    ///
    /// # Errors
    /// A key jsonwebtoken cannot read.
    pub fn from_keyset(keys: &mandate_core::keys::KeySet) -> Result<Self, String> {
        let jwks = serde_json::to_value(keys.to_jwks()).map_err(|e| e.to_string())?;
        Self::from_jwks(&jwks).map(|(k, _)| k)
    }

    /// How many keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a key has this `kid`.
    #[must_use]
    pub fn has(&self, kid: &str) -> bool {
        self.entries.iter().any(|e| e.kid.as_deref() == Some(kid))
    }

    /// Verifies `token` (a compact JWS) with the key its `kid` names: the
    /// algorithm among the key's, `typ` absent, `JWT` or `at+jwt` (`accept_typ`
    /// lists them), `iss` equal to `iss`, `aud` (string or array) containing
    /// `audience`, `exp` and `nbf` with [`LEEWAY_SECS`]. The claims.
    ///
    /// # Errors
    /// What failed, for the log and the 401.
    pub fn verify(
        &self,
        token: &str,
        iss: &str,
        audience: &str,
        accept_typ: &[&str],
    ) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        if header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return Err("header names its own key (jwk, jku, x5u or x5c)".into());
        }
        if header.crit.is_some() {
            return Err("header has `crit`".into());
        }
        if let Some(t) = &header.typ {
            let t = t.to_ascii_lowercase();
            let t = t.strip_prefix("application/").unwrap_or(&t);
            if !accept_typ.iter().any(|a| a.eq_ignore_ascii_case(t)) {
                return Err(format!("typ `{t}` not accepted"));
            }
        }
        let kid = header.kid.as_deref().ok_or("kid missing")?;
        let entry = self
            .entries
            .iter()
            .find(|e| e.kid.as_deref() == Some(kid))
            .ok_or("unknown kid")?;
        if !entry.algs.contains(&header.alg) {
            return Err(format!("alg {:?} is not the key's", header.alg));
        }
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_audience(&[audience]);
        v.set_issuer(&[iss]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Value>(token, &entry.key, &v).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired".to_owned(),
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => "not yet valid".to_owned(),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => "wrong audience".to_owned(),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "signature does not verify".to_owned()
                }
                _ => e.to_string(),
            })?;
        // Issued in the future (beyond the leeway): a clock that cannot be
        // trusted, or a token made ahead of its time.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if data
            .claims
            .get("iat")
            .and_then(Value::as_u64)
            .is_some_and(|iat| iat > now + LEEWAY_SECS)
        {
            return Err("issued in the future".into());
        }
        Ok(data.claims)
    }
}

/// How an issuer's claims name a caller's role and tenant.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClaimMap {
    /// The claim holding the role, or the groups mapped to one (a string
    /// or an array of strings): `role`, `roles`, `groups`, … A dotted path
    /// reads into objects (`realm_access.roles` for Keycloak).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The claim holding the tenant (`tenant`, `tid`, `org_id`, …).
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Every token of this issuer is of this tenant (the claim is then not read).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Provider values (groups, app roles) and the Mandate role each means.
    /// Empty: the claim must hold a role's own name.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
}

fn default_role_claim() -> String {
    "role".into()
}
fn default_tenant_claim() -> String {
    "tenant".into()
}

impl Default for ClaimMap {
    fn default() -> Self {
        Self {
            role_claim: default_role_claim(),
            tenant_claim: default_tenant_claim(),
            tenant: None,
            roles: BTreeMap::new(),
        }
    }
}

fn path<'a>(claims: &'a Value, dotted: &str) -> Option<&'a Value> {
    // A claim whose name has dots (a namespaced Auth0 claim, a URL) wins
    // over a path into objects.
    if let Some(v) = claims.get(dotted) {
        return Some(v);
    }
    dotted.split('.').try_fold(claims, |v, k| v.get(k))
}

impl ClaimMap {
    /// The caller these claims name.
    ///
    /// # Errors
    /// A claim missing or of the wrong shape; no value that maps to a
    /// role; values that map to roles that do not go together.
    pub fn caller(&self, iss: &str, claims: &Value) -> Result<Caller, String> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("sub: missing")?;
        let tenant = match &self.tenant {
            Some(t) => t.clone(),
            None => path(claims, &self.tenant_claim)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("{}: missing (the tenant)", self.tenant_claim))?
                .to_owned(),
        };
        let values: Vec<&str> = match path(claims, &self.role_claim) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{}: missing (the role)", self.role_claim)),
        };
        let mut roles: Vec<Role> = values
            .iter()
            .filter_map(|v| {
                if self.roles.is_empty() {
                    serde_json::from_value(Value::String((*v).to_owned())).ok()
                } else {
                    self.roles.get(*v).copied()
                }
            })
            .collect();
        roles.sort_by_key(|r| r.as_str());
        roles.dedup();
        let role = match roles.as_slice() {
            [] => {
                return Err(format!(
                    "{}: no value names a Mandate role{}",
                    self.role_claim,
                    if self.roles.is_empty() {
                        ""
                    } else {
                        " in this issuer's `roles` table"
                    }
                ));
            }
            [one] => *one,
            // An admin can do what a principal can: the wider one holds.
            [Role::Admin, Role::Principal] => Role::Admin,
            more => {
                let names: Vec<&str> = more.iter().map(|r| r.as_str()).collect();
                return Err(format!(
                    "{}: maps to several roles ({}); an identity holds one",
                    self.role_claim,
                    names.join(", ")
                ));
            }
        };
        Ok(Caller {
            sub: sub.to_owned(),
            iss: iss.to_owned(),
            role,
            tenant,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_map_to_one_role_and_mixed_roles_are_refused() {
        let m = ClaimMap {
            role_claim: "groups".into(),
            tenant_claim: "tid".into(),
            tenant: None,
            roles: [
                ("mandate-admins".to_owned(), Role::Admin),
                ("approvers".to_owned(), Role::Principal),
                ("bots".to_owned(), Role::Agent),
            ]
            .into(),
        };
        let c = m
            .caller(
                "i",
                &json!({"sub": "u", "tid": "acme", "groups": ["everyone", "approvers"]}),
            )
            .unwrap();
        assert_eq!((c.role, c.tenant.as_str()), (Role::Principal, "acme"));
        let c = m
            .caller(
                "i",
                &json!({"sub": "u", "tid": "acme", "groups": ["approvers", "mandate-admins"]}),
            )
            .unwrap();
        assert_eq!(c.role, Role::Admin);
        let e = m
            .caller(
                "i",
                &json!({"sub": "u", "tid": "acme", "groups": ["bots", "approvers"]}),
            )
            .unwrap_err();
        assert!(e.contains("several roles"), "{e}");
        let e = m
            .caller(
                "i",
                &json!({"sub": "u", "tid": "acme", "groups": ["everyone"]}),
            )
            .unwrap_err();
        assert!(e.contains("no value names a Mandate role"), "{e}");
        // A role name is not a role when a table is configured.
        let e = m
            .caller(
                "i",
                &json!({"sub": "u", "tid": "acme", "groups": ["admin"]}),
            )
            .unwrap_err();
        assert!(e.contains("roles"), "{e}");
        let e = m
            .caller("i", &json!({"sub": "u", "groups": ["bots"]}))
            .unwrap_err();
        assert!(e.starts_with("tid: missing"), "{e}");
    }

    #[test]
    fn nested_and_namespaced_claims_are_read() {
        let m = ClaimMap {
            role_claim: "realm_access.roles".into(),
            tenant_claim: "https://mandate.example/tenant".into(),
            ..ClaimMap::default()
        };
        let c = m
            .caller(
                "i",
                &json!({"sub": "u", "https://mandate.example/tenant": "acme", "realm_access": {"roles": ["offline_access", "enforcer"]}}),
            )
            .unwrap();
        assert_eq!((c.role, c.tenant.as_str()), (Role::Enforcer, "acme"));
    }

    #[test]
    fn unusable_keys_are_skipped_and_named() {
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "a", "y": "b"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ok", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "lies", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ]});
        let (keys, skipped) = IssuerKeys::from_jwks(&jwks).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.has("ok"));
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(
            skipped
                .iter()
                .any(|s| s.contains("small") && s.contains("2048"))
        );
        assert!(
            skipped
                .iter()
                .any(|s| s.contains("hmac") && s.contains("symmetric"))
        );
        assert!(
            skipped
                .iter()
                .any(|s| s.contains("lies") && s.contains("does not fit"))
        );
        let e =
            IssuerKeys::from_jwks(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).unwrap_err();
        assert!(e.contains("no signature key"), "{e}");
    }
}
