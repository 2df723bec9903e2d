//! Derives one child in a loop, for a profiler:
//! `valgrind --tool=callgrind target/release/examples/profile_attenuate 200`.

use mandate_bench::{mandate_fixture, spec};
use mandate_core::keys::{Algorithm, SigningKey};
use mandate_core::prelude::*;

fn main() {
    let m = mandate_fixture();
    let holder = SigningKey::from_seed(Algorithm::EdDSA, [9; 32]);
    let child = spec(
        &holder,
        0,
        "https://vendor-portal.example.com/search",
        "2025-10-10T00:00:00Z",
        None,
    );
    let id = MandateId::new("mnd-profile-att").unwrap_or_else(|_| unreachable!());
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut bytes = 0usize;
    for _ in 0..n {
        if let Ok(c) = derive_child(
            std::hint::black_box(&m.root),
            &m.agent,
            &child,
            id.clone(),
            m.now,
        ) {
            bytes += c.len();
        }
    }
    println!("{bytes} bytes derived");
}
