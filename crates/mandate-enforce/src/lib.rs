//! # mandate-enforce
//!
//! Enforcement points. A [`replica::Replica`] keeps a local copy of mandate
//! state fed by the authority's Shared Signals stream (poll or push) and
//! denies `state_stale` when it cannot vouch for that copy; decisions are
//! local (no network per decision, except consuming a one-time mandate at the
//! authority, exactly once). The [`gateway`] puts that in front of upstream
//! resources as a reverse proxy and an nginx `auth_request` endpoint. The
//! [`sdk`] is the same for agent runtimes: check before every tool call,
//! delegate, discover, and stop when the mission ends.

pub mod client;
pub mod gateway;
pub mod mcp;
pub mod point;
pub mod replica;
pub mod sdk;
pub mod shipper;
pub mod upstream;
