//! The authority's other untrusted inputs: caller tokens, GitHub webhook
//! deliveries (signature and payload), mandate requests, OAuth forms, events and
//! shipments of decisions. None may panic; a token or signature made of
//! fuzz bytes never verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_authority::auth::Issuers;
use mandate_authority::http::events::github_signature_ok;
use mandate_authority::http::requests::MandateRequest;
use mandate_authority::service::events::{Event, github_event};
use mandate_core::json::from_slice_strict;
use mandate_core::keys::{Algorithm, KeySet, SigningKey};

fuzz_target!(|data: &[u8]| {
    let issuers = Issuers::default();
    let mut keys = KeySet::new();
    if let Ok(k) = SigningKey::from_seed(Algorithm::EdDSA, [3; 32]).verifying_key() {
        keys.insert(k);
    }
    if let Ok(k) = mandate_authority::idp::IssuerKeys::from_keyset(&keys) {
        issuers.trust(
            "mandate-local",
            mandate_authority::auth::Trusted {
                keys: k,
                audience: "mandate".into(),
                claims: mandate_authority::idp::ClaimMap::default(),
            },
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(issuers.verify(text, 1_700_000_000).is_err());
        assert!(!github_signature_ok(
            b"a-webhook-secret-of-some-length",
            data,
            Some(text)
        ));
    }
    if let Ok(payload) = from_slice_strict::<serde_json::Value>(data) {
        let _ = github_event("pull_request", &payload);
    }
    let _ = from_slice_strict::<MandateRequest>(data);
    // The token endpoint's and introspection's form bodies.
    if let Ok(pairs) = mandate_authority::http::oauth::form(data) {
        let mut names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        assert!(
            names.windows(2).all(|w| w[0] != w[1]),
            "a parameter given twice is refused"
        );
    }
    let _ = from_slice_strict::<Event>(data);
    if let Ok(shipment) = mandate_authority::http::authzen::parse_shipment(data) {
        assert!(!shipment.source.is_empty() && shipment.records.len() <= 10_000);
    }
});
