//! Any key, signature and message (and a signature made by a known key,
//! altered by the input): `VerifyingKey::verify` answers what ed25519-dalek's
//! `verify_strict` answers, and a batch passes only when each of its
//! signatures passes alone. The first 32 bytes are a public key, the next 64
//! a signature, the rest the message; the fuzzer cannot forge, so the second
//! half of each run XORs the input's bytes into an honest signature instead.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::keys::{Algorithm, PublicJwk, SigningKey, VerifyingKey};

fn key_from_bytes(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    let jwk: PublicJwk = serde_json::from_value(serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "x": mandate_core::b64::encode(bytes)
    }))
    .ok()?;
    VerifyingKey::from_jwk(&jwk).ok()
}

fn strict(key: &[u8; 32], msg: &[u8], sig: &[u8]) -> bool {
    let (Ok(k), Ok(s)) = (
        ed25519_dalek::VerifyingKey::from_bytes(key),
        ed25519_dalek::Signature::from_slice(sig),
    ) else {
        return false;
    };
    k.verify_strict(msg, &s).is_ok()
}

fn check(key_bytes: &[u8; 32], key: &VerifyingKey, msg: &[u8], sig: &[u8]) {
    let ours = key.verify(msg, sig);
    assert_eq!(
        ours,
        strict(key_bytes, msg, sig),
        "single check disagrees with verify_strict"
    );
    let twice = [(key, msg, sig), (key, msg, sig)];
    if VerifyingKey::verify_batch(twice.into_iter()) {
        assert!(ours, "a batch passed a signature the strict check refuses");
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(key), Some(sig)) = (data.get(..32), data.get(32..96)) else {
        return;
    };
    let msg = data.get(96..).unwrap_or_default();
    let Ok(key_bytes) = <[u8; 32]>::try_from(key) else {
        return;
    };
    if let Some(k) = key_from_bytes(&key_bytes) {
        check(&key_bytes, &k, msg, sig);
    }
    // An honest signature, altered by the input's first 64 bytes.
    let signer = SigningKey::from_seed(Algorithm::EdDSA, [7; 32]);
    let Ok(public) = signer.verifying_key() else {
        return;
    };
    let Ok(public_bytes) =
        <[u8; 32]>::try_from(mandate_core::b64::decode(&public.jwk().x).unwrap_or_default())
    else {
        return;
    };
    let mut honest = signer.sign(msg);
    for (h, d) in honest.iter_mut().zip(data) {
        *h ^= d;
    }
    check(&public_bytes, &public, msg, &honest);
});
