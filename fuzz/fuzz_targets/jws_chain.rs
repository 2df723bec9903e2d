//! Any string presented as a mandate chain: verification must never panic,
//! and must never accept a chain the fixed authority did not sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::keys::{Algorithm, KeySet, SigningKey};
use mandate_core::prelude::*;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let authority = SigningKey::from_seed(Algorithm::EdDSA, [1; 32]);
    let mut keys = KeySet::new();
    if let Ok(k) = authority.verifying_key() {
        keys.insert(k);
    }
    let verifier = Verifier::new(keys).with_algorithms([Algorithm::EdDSA, Algorithm::ES256]);
    // Random bytes cannot carry a valid Ed25519 signature by this key.
    assert!(verifier.verify(text).is_err());
    let _ = parse_unverified(text);
});
