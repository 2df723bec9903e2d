//! Any bytes as untrusted JSON: the strict reader (duplicates, depth, exact
//! numbers) never panics, answers as the full serde walk does (its one-pass
//! shortcut included), and what it accepts nests at most `MAX_DEPTH` deep
//! and every number in it reads back as the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::json::{MAX_DEPTH, check_no_duplicates, check_thoroughly};
use mandate_core::number::check_exact_numbers;

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let checked = check_no_duplicates(data);
    assert_eq!(
        checked,
        check_thoroughly(data),
        "the shortcut and the walk differ"
    );
    if checked.is_err() {
        return;
    }
    // Accepted: the scanner agrees, and the document is what it says.
    assert!(check_exact_numbers(data).is_ok());
    let v: serde_json::Value = serde_json::from_slice(data).expect("accepted JSON parses");
    assert!(depth(&v) <= MAX_DEPTH);
    let again = serde_json::to_vec(&v).expect("serializes");
    let back: serde_json::Value = serde_json::from_slice(&again).expect("reparses");
    assert_eq!(v, back, "a number changed on the way through");
});
