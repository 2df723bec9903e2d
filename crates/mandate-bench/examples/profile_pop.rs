//! The decision an enforcement point takes for each request that carries a
//! DPoP proof: the presented chain found in the verifier's cache, the proof
//! checked (decoded, one `verify_strict`, claims, replay cache), the
//! decision. Proofs are made before the measured loop, so an instruction
//! count takes only the loop:
//! `valgrind --tool=callgrind --toggle-collect='profile_pop::measured' target/release/examples/profile_pop 200`
//! (the total divided by 200 is one decision's instructions).

use mandate_bench::mandate_fixture;
use mandate_core::keys::{Algorithm, SigningKey};
use mandate_core::pop::{self, Possession, ProofTarget, ReplayCache};
use mandate_core::prelude::*;

const URL: &str = "https://gw.example.com/search";

#[inline(never)]
fn measured(m: &mandate_bench::MandateFixture, proofs: &[String], cache: &ReplayCache) -> usize {
    let target = ProofTarget {
        htm: "POST",
        htu: URL,
        access_token: None,
        nonce: None,
    };
    let mut allowed = 0usize;
    for proof in proofs {
        let Ok(chain) = m.verifier.verify(std::hint::black_box(&m.three_hop)) else {
            continue;
        };
        let possession = Possession::Proof {
            proof: Some(proof),
            target,
            certificate: None,
        };
        let failure = pop::check(&chain, &possession, cache, m.now);
        let mut d = decide(&chain, &m.request, None, &m.state, m.now);
        if let Some(e) = failure {
            d.deny_also(e.code());
        }
        allowed += usize::from(d.allow);
    }
    allowed
}

fn main() {
    let m = mandate_fixture();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let leaf = SigningKey::from_seed(Algorithm::EdDSA, [4; 32]);
    let proofs: Vec<String> = (0..n)
        .map(|i| pop::make_proof(&leaf, "POST", URL, None, &format!("j{i}"), m.now))
        .collect();
    let cache = ReplayCache::new(50_000_000);
    // The chain is in the verifier's cache before the loop, as at a busy
    // enforcement point.
    let _ = m.verifier.verify(&m.three_hop);
    let allowed = measured(&m, &proofs, &cache);
    println!("{allowed} of {n} allowed");
}
