//! Any text as a DPoP proof, for any method and URL: verifying never panics,
//! and a proof accepted is one the holder key really signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::keys::{Algorithm, SigningKey};
use mandate_core::pop::{ProofTarget, ReplayCache, verify_proof};
use mandate_core::timestamp::UnixTime;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(proof), htu, htm) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let holder = SigningKey::from_seed(Algorithm::EdDSA, [3; 32]);
    let Ok(key) = holder.verifying_key() else {
        return;
    };
    let target = ProofTarget {
        htm: htm.unwrap_or("GET"),
        htu: htu.unwrap_or("https://gw.example.com/x"),
        access_token: None,
        nonce: None,
    };
    let now = UnixTime::from_secs(1_800_000_000).unwrap_or(UnixTime::EPOCH);
    if let Ok(p) = verify_proof(&key, proof, &target, now) {
        // Only a signature by the holder key gets here (the fuzzer cannot
        // forge Ed25519), and the proof is then good exactly once.
        let cache = ReplayCache::new(4);
        assert!(cache.admit(&p, now).is_ok());
        assert!(cache.admit(&p, now).is_err());
    }
});
