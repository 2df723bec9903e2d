//! Derives one child in a loop, for a profiler:
//! `valgrind --tool=callgrind target/release/examples/profile_attenuate 200`
//! (from the parent's string each time), or `... 200 read` (from a parent
//! read once with `Parent::parse`).

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
    let read = std::env::args().nth(2).as_deref() == Some("read");
    let parent = Parent::parse(&m.root).ok();
    let mut bytes = 0usize;
    for _ in 0..n {
        let derived = match (&parent, read) {
            (Some(p), true) => std::hint::black_box(p).derive(&m.agent, &child, id.clone(), m.now),
            _ => derive_child(
                std::hint::black_box(&m.root),
                &m.agent,
                &child,
                id.clone(),
                m.now,
            ),
        };
        if let Ok(c) = derived {
            bytes += c.len();
        }
    }
    println!("{bytes} bytes derived");
}
