//! Any bytes as a caller token and as an identity provider's JWKS: reading
//! the keys and verifying the token never panic, and a token that is not
//! signed by a key of the set is never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_authority::idp::{ClaimMap, IssuerKeys};

fuzz_target!(|data: &[u8]| {
    // First line: a JWKS; the rest: the token.
    let text = String::from_utf8_lossy(data);
    let (jwks, token) = text.split_once('\n').unwrap_or((&text, ""));
    let keys = serde_json::from_str::<serde_json::Value>(jwks)
        .ok()
        .and_then(|v| IssuerKeys::from_jwks(&v).ok())
        .map(|(k, _)| k)
        .unwrap_or_default();
    if let Ok(claims) = keys.verify(token, "https://idp.example", "mandate", &["jwt", "at+jwt"]) {
        // Only a set with a key could have verified it.
        assert!(!keys.is_empty());
        let _ = ClaimMap::default().caller("https://idp.example", &claims);
    }
});
