//! Runs the cold three-hop decision in a loop, for a profiler:
//! `perf record -g target/release/examples/profile_cold 3000`.

use mandate_bench::mandate_fixture;
use mandate_core::prelude::*;

fn main() {
    let m = mandate_fixture();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut allowed = 0usize;
    for _ in 0..n {
        if let Ok(chain) = m
            .verifier
            .verify_uncached(std::hint::black_box(&m.three_hop))
        {
            allowed += usize::from(decide(&chain, &m.request, None, &m.state, m.now).allow);
        }
    }
    println!("{allowed} of {n} allowed");
}
