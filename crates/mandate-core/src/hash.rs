//! SHA-256 in the JOSE style (base64url, no padding).

use sha2::{Digest, Sha256};

/// SHA-256 of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of `data`, base64url without padding (43 characters).
#[must_use]
pub fn sha256_b64(data: &[u8]) -> String {
    crate::b64::encode(sha256(data))
}

/// Decodes a base64url string of exactly 32 bytes.
#[must_use]
pub fn b64_decode_32(s: &str) -> Option<[u8; 32]> {
    crate::b64::decode(s).ok()?.try_into().ok()
}
