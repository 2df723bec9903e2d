//! Token binding: a mandate governs one access token, so a valid mandate
//! presented with an unrelated token is denied.
//!
//! The binding holds when either
//! - a mandate of the chain carries `token_binding.access_token_sha256` equal
//!   to the base64url SHA-256 of the presented token (compared in constant
//!   time), or
//! - the token is a JWT whose `mandate_id` claim names a mandate of the chain.
//!
//! The token's own signature and expiry are the resource server's (or the
//! gateway's) to check; this module only ties the two together. When no token
//! is presented, a leaf that names its token by hash denies with
//! `token_missing`.

use subtle::ConstantTimeEq;

use crate::chain::VerifiedChain;
use crate::hash::{b64_decode_32, sha256};
use crate::jws::unverified_payload;

/// The claim an access token carries to name its mandate.
pub const MANDATE_ID_CLAIM: &str = "mandate_id";

/// The reason code when the binding does not hold, or `None` when it does.
#[must_use]
pub fn check(chain: &VerifiedChain, token: Option<&str>) -> Option<&'static str> {
    let Some(token) = token else {
        return chain
            .leaf()
            .claims()
            .token_binding
            .as_ref()
            .map(|_| "token_missing");
    };
    let digest = sha256(token.as_bytes());
    let mut by_hash = subtle::Choice::from(0);
    for m in chain.mandates() {
        if let Some(b) = &m.claims().token_binding
            && let Some(expected) = b64_decode_32(&b.access_token_sha256)
        {
            by_hash |= expected.ct_eq(&digest);
        }
    }
    if bool::from(by_hash) {
        return None;
    }
    if let Ok(claims) = unverified_payload(token)
        && let Some(named) = claims.get(MANDATE_ID_CLAIM).and_then(|v| v.as_str())
        && chain.mandates().iter().any(|m| m.id().as_str() == named)
    {
        return None;
    }
    Some("token_binding_mismatch")
}
