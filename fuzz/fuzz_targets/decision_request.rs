//! Any bytes as an AuthZEN request and state snapshot against a valid chain:
//! the decision never panics, and it never allows a request that names
//! another resource type or location.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::chain::issue_root;
use mandate_core::json::from_slice_strict;
use mandate_core::keys::{Algorithm, KeySet, SigningKey};
use mandate_core::model::MandateClaims;
use mandate_core::prelude::*;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = from_slice_strict::<EvaluationRequest>(data) else {
        return;
    };
    let authority = SigningKey::from_seed(Algorithm::EdDSA, [1; 32]);
    let claims: MandateClaims =
        serde_json::from_str(include_str!("../../testdata/procurement-mandate.json"))
            .expect("claims");
    let jws = issue_root(&authority, &claims).expect("issues");
    let mut keys = KeySet::new();
    keys.insert(authority.verifying_key().expect("key"));
    let chain = Verifier::new(keys).verify(&jws).expect("verifies");
    let now = UnixTime::parse_rfc3339("2025-10-02T09:00:00Z").expect("time");
    let mut state = StateSnapshot::new();
    state.set_facts(
        Facts::from_json(
            serde_json::json!({"procurement": {"contingency_program": {"status": "active"}}}),
        )
        .expect("facts"),
    );
    let d = decide(&chain, &request, None, &state, now);
    if d.allow {
        assert_eq!(request.resource.type_, "vendor_portal");
        assert!(
            request
                .resource
                .id
                .to_ascii_lowercase()
                .starts_with("https://vendor-portal.example.com")
        );
    }
});
