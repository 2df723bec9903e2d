//! The cold chain against its floor, taking turns: on a shared machine whose
//! speed drifts between (and during) criterion's benchmarks, the ratio of
//! two measurements made seconds apart moves by a quarter. Here each round
//! times `batch` cold verifications and `batch` floor checks back to back
//! (which one goes first alternates), and the median of the rounds' ratios
//! is what is reported:
//! `cargo run --release -p mandate-bench --example paired_cold -- 31 400`
//! (rounds, operations of each kind a round).
//!
//! Cold: the fixture's three-hop chain from its wire string, verified from
//! the root (`Verifier::verify_uncached`) and decided. Floor: the same three
//! signatures batch-verified by ed25519-dalek, nothing else (what
//! `cold_3hop/floor/ed25519_verify_batch_3` measures). The leaf below its
//! verified parent chain (`Verifier::verify_unstored`) is timed against the
//! leaf's one `verify_strict` the same way.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "benchmark fixtures over fixed inputs"
)]

#[path = "../benches/support/floor.rs"]
mod floor;

use std::hint::black_box;
use std::time::Instant;

use mandate_bench::mandate_fixture;
use mandate_core::prelude::*;

fn time(batch: usize, mut f: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    let mut ok = 0_usize;
    for _ in 0..batch {
        ok += usize::from(f());
    }
    assert_eq!(ok, batch, "every operation timed must succeed");
    start.elapsed().as_secs_f64() * 1e6 / f64::from(u32::try_from(batch).unwrap_or(u32::MAX))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Rounds of `a` and `b` taking turns: the median of `a`'s times, of `b`'s,
/// and of the rounds' ratios `a / b`.
fn paired(
    rounds: usize,
    batch: usize,
    mut a: impl FnMut() -> bool,
    mut b: impl FnMut() -> bool,
) -> (f64, f64, f64) {
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = time(batch, &mut a);
            (x, time(batch, &mut b))
        } else {
            let y = time(batch, &mut b);
            (time(batch, &mut a), y)
        };
        ta.push(x);
        tb.push(y);
        ratios.push(x / y);
    }
    (median(ta), median(tb), median(ratios))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(31);
    let batch: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(400);
    let m = mandate_fixture();
    let (messages, signatures, keys) = floor::signature_floor(&m.three_hop);

    let cold = || {
        m.verifier
            .verify_uncached(black_box(&m.three_hop))
            .is_ok_and(|chain| decide(&chain, &m.request, None, &m.state, m.now).allow)
    };
    let batch_floor = || floor::verify_floor(&messages, &signatures, &keys);
    let (c, f, r) = paired(rounds, batch, cold, batch_floor);
    println!(
        "cold chain {c:.1} us, floor (3 signatures batched) {f:.1} us: {r:.2}x the floor \
         (median of {rounds} paired rounds of {batch})"
    );

    let below_verifier = Verifier::new(m.keys.clone());
    let parent = m.three_hop.rsplit_once('~').map_or("", |(p, _)| p);
    assert!(
        below_verifier.verify(parent).is_ok(),
        "the parent chain verifies"
    );
    let below = || {
        below_verifier
            .verify_unstored(black_box(&m.three_hop))
            .is_ok_and(|chain| decide(&chain, &m.request, None, &m.state, m.now).allow)
    };
    let (message, signature, key) = (
        messages.last().cloned().unwrap_or_default(),
        signatures.last().copied(),
        keys.last().copied(),
    );
    let (Some(signature), Some(key)) = (signature, key) else {
        panic!("the fixture's chain has a leaf");
    };
    let leaf_floor = || key.verify_strict(&message, &signature).is_ok();
    let (c, f, r) = paired(rounds, batch, below, leaf_floor);
    println!(
        "new leaf below a verified parent chain {c:.1} us, its floor (one verify_strict) \
         {f:.1} us: {r:.2}x (median of {rounds} paired rounds of {batch})"
    );
    let (c, _, r) = paired(rounds, batch, cold, batch_floor);
    println!("cold chain again {c:.1} us: {r:.2}x the floor");
}
