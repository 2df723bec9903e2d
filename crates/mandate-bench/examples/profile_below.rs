//! Verifies and decides a three-hop chain in a loop, with a verifier that
//! has already verified the chain's first two hops (the parent acted with
//! them), so only the leaf is new each time: for a profiler or callgrind,
//! `valgrind --tool=callgrind target/release/examples/profile_below 200`.

use mandate_bench::mandate_fixture;
use mandate_core::prelude::*;

fn main() {
    let m = mandate_fixture();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let verifier = Verifier::new(m.keys.clone());
    let Some((parent, _)) = m.three_hop.rsplit_once('~') else {
        return;
    };
    if verifier.verify(parent).is_err() {
        eprintln!("the parent chain does not verify");
        std::process::exit(1);
    }
    let mut allowed = 0usize;
    for _ in 0..n {
        if let Ok(chain) = verifier.verify_unstored(std::hint::black_box(&m.three_hop)) {
            allowed += usize::from(decide(&chain, &m.request, None, &m.state, m.now).allow);
        }
    }
    println!("{allowed} of {n} allowed");
}
