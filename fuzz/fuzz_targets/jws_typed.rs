//! Any bytes as a mandate JWS's payload: decoding and reading the claims in
//! one go (`jws::decode_typed`, what chain verification does) answers
//! exactly as `jws::decode`'s full checks followed by the strict typed read,
//! error for error, whether or not the signature segment is readable.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use libfuzzer_sys::fuzz_target;
use mandate_core::json::from_slice_strict;
use mandate_core::jws::{TypedError, decode, decode_typed};
use mandate_core::keys::Algorithm;
use mandate_core::model::{MANDATE_TYP, MandateClaims};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let header = br#"{"alg":"EdDSA","kid":"k","typ":"mandate+jwt"}"#;
    let signature = if mode & 1 == 0 {
        "A".repeat(86)
    } else {
        "!".into()
    };
    let jws = format!("{}.{}.{signature}", B64.encode(header), B64.encode(payload));
    let allowed = [Algorithm::EdDSA].into();
    let reference = decode(&jws, &allowed, MANDATE_TYP)
        .map_err(TypedError::Jws)
        .and_then(|d| from_slice_strict::<MandateClaims>(&d.payload).map_err(TypedError::Payload));
    let typed = decode_typed::<MandateClaims>(&jws, &allowed, MANDATE_TYP).map(|(_, c)| c);
    assert_eq!(typed, reference);
});
