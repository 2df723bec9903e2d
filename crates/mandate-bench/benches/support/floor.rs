//! The cold chain's floor: its three signatures, batch-verified by
//! ed25519-dalek and nothing else. Shared by `benches/decision.rs` and
//! `examples/paired_cold.rs` (each includes it by `#[path]`), so that both measure the same.

/// The signing inputs, signatures and signers' keys of a three-hop chain
/// issued by the fixture's keys (seeds 1, 2 and 3).
pub fn signature_floor(
    chain: &str,
) -> (
    Vec<Vec<u8>>,
    Vec<ed25519_dalek::Signature>,
    Vec<ed25519_dalek::VerifyingKey>,
) {
    use base64::Engine as _;
    let mut messages = Vec::new();
    let mut signatures = Vec::new();
    for part in chain.split('~') {
        let (input, sig) = part.rsplit_once('.').unwrap();
        messages.push(input.as_bytes().to_vec());
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        signatures.push(ed25519_dalek::Signature::from_slice(&sig).unwrap());
    }
    let keys = [[1u8; 32], [2; 32], [3; 32]]
        .iter()
        .map(|seed| ed25519_dalek::SigningKey::from_bytes(seed).verifying_key())
        .collect();
    (messages, signatures, keys)
}

/// The floor itself: one batch check of what [`signature_floor`] returned.
pub fn verify_floor(
    messages: &[Vec<u8>],
    signatures: &[ed25519_dalek::Signature],
    keys: &[ed25519_dalek::VerifyingKey],
) -> bool {
    let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    ed25519_dalek::verify_batch(&messages, signatures, keys).is_ok()
}
