//! Runs the warm decisions in a loop, for a profiler or an instruction
//! count: `valgrind --tool=callgrind target/release/examples/profile_warm 2000`
//! (`held` decides on a verified chain the caller holds, `presented` finds
//! the chain from its string in the verifier's cache first).

use mandate_bench::mandate_fixture;
use mandate_core::prelude::*;

fn main() -> Result<(), ChainError> {
    let m = mandate_fixture();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let presented = args.next().as_deref() == Some("presented");
    let chain = m.verifier.verify(&m.three_hop)?;
    let mut allowed = 0usize;
    for _ in 0..n {
        let d = if presented {
            decide_presented(
                &m.verifier,
                std::hint::black_box(&m.three_hop),
                &m.request,
                None,
                &m.state,
                m.now,
            )
        } else {
            decide(
                std::hint::black_box(&chain),
                &m.request,
                None,
                &m.state,
                m.now,
            )
        };
        allowed += usize::from(d.allow);
    }
    println!("{allowed} of {n} allowed");
    Ok(())
}
