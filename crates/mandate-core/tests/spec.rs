//! The specification of the Execution Mandate core, as tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::too_many_arguments,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "spec/support.rs"]
mod support;

#[path = "spec/signing.rs"]
mod signing;

#[path = "spec/delegation.rs"]
mod delegation;

#[path = "spec/decision.rs"]
mod decision;

#[path = "spec/scenarios.rs"]
mod scenarios;

#[path = "spec/properties.rs"]
mod properties;

#[path = "spec/vectors.rs"]
mod vectors;

#[path = "spec/possession.rs"]
mod possession;
