//! Any bytes as a base64url segment: the SIMD decoder every JWS, key and
//! proof goes through never panics, accepts exactly what the `base64`
//! crate's strict engine accepts (no padding, no other alphabet, no stray
//! bits) with the same bytes, and what it accepts encodes back to the input.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as REFERENCE;
use libfuzzer_sys::fuzz_target;
use mandate_core::b64;

fuzz_target!(|data: &[u8]| {
    let ours = b64::decode(data).ok();
    assert_eq!(ours, REFERENCE.decode(data).ok(), "the decoders differ");
    if let Some(bytes) = ours {
        assert_eq!(
            b64::encode(&bytes).as_bytes(),
            data,
            "one encoding per byte string"
        );
    }
});
