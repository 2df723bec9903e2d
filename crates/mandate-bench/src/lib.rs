//! Benchmarks only: see `benches/decision.rs` and `BENCHMARKS.md`.
