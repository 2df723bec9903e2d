//! What reading a mandate's claims costs in JSON, against a binary encoding
//! of the same claims, and against what no encoding can avoid: the answer
//! to "would a binary claims format bring the cold chain near its signature
//! floor?" (BENCHMARKS.md, twelfth round). Each mode reads the leaf claims
//! of the benchmark's three-hop chain (~2 KB of JSON) N times:
//!
//! `claims_formats MODE N`, MODE one of
//! - `json`: the strict read a verifier does (`json::from_slice_strict`);
//! - `json_typed`: serde_json into the typed claims, no strict checks;
//! - `json_syntax`: serde_json's validating skip only (no value built);
//! - `cbor`: the same claims as CBOR (minicbor-serde) into the same types;
//! - `clone`: copying the typed claims (their ~90 allocations), and dropping them.
//!
//! For instruction counts: `valgrind --tool=callgrind --callgrind-out-file=/dev/null
//! target/release/examples/claims_formats json 2000` (subtract a run with N = 0).

use mandate_bench::mandate_fixture;
use mandate_core::chain::parse_unverified;
use mandate_core::model::MandateClaims;
use std::hint::black_box;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "json".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let m = mandate_fixture();
    let chain = parse_unverified(&m.three_hop)?;
    let claims = chain.last().ok_or("empty chain")?.claims.clone();
    let json = serde_json::to_vec(&claims)?;
    let cbor = minicbor_serde::to_vec(&claims)?;
    let started = Instant::now();
    for _ in 0..n {
        match mode.as_str() {
            "json" => drop(black_box(mandate_core::json::from_slice_strict::<
                MandateClaims,
            >(black_box(&json))?)),
            "json_typed" => drop(black_box(serde_json::from_slice::<MandateClaims>(
                black_box(&json),
            )?)),
            "json_syntax" => drop(black_box(serde_json::from_slice::<serde::de::IgnoredAny>(
                black_box(&json),
            )?)),
            "cbor" => drop(black_box(minicbor_serde::from_slice::<MandateClaims>(
                black_box(&cbor),
            )?)),
            "clone" => drop(black_box(black_box(&claims).clone())),
            other => return Err(format!("unknown mode `{other}`").into()),
        }
    }
    let each = started.elapsed().as_secs_f64() * 1e9 / n.max(1) as f64;
    println!(
        "{mode}: {n} reads, {each:.0} ns each (JSON {} bytes, CBOR {} bytes)",
        json.len(),
        cbor.len()
    );
    Ok(())
}
