//! Any bytes as a mandate's claims: parsing and validation never panic, and
//! whatever parses re-serializes and parses again to the same claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::json::from_slice_strict;
use mandate_core::model::MandateClaims;
use mandate_core::validate::{CheckConditions, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = from_slice_strict::<MandateClaims>(data) else {
        return;
    };
    let _ = validate(&claims, CheckConditions::Compile);
    let again = serde_json::to_vec(&claims).expect("serializes");
    let back: MandateClaims = from_slice_strict(&again).expect("round-trips");
    assert_eq!(back, claims);
});
