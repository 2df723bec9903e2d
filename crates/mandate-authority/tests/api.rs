//! The authority over a real socket: every endpoint and role, the refusals,
//! the acceptance scenarios, a race and the audit log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "api/support.rs"]
mod support;

#[path = "api/grants.rs"]
mod grants;

#[path = "api/events.rs"]
mod events;

#[path = "api/audit.rs"]
mod audit;

#[path = "api/console.rs"]
mod console;

#[path = "api/insider.rs"]
mod insider;

#[path = "api/pop.rs"]
mod pop;

#[path = "api/peers.rs"]
mod peers;

#[path = "api/identity.rs"]
mod identity;

#[path = "api/listing.rs"]
mod listing;

#[path = "api/layering.rs"]
mod layering;
