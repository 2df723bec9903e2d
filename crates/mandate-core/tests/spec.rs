//! The specification of the Execution Mandate core, as tests.

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
