//! The authority's operations as plain functions over the store: no HTTP
//! types, typed refusals ([`mandate_store::Refusal`]: conflict, not found,
//! forbidden, malformed, invalid). The JSON API (`routes`) and the console
//! are adapters over them.
//!
//! Moved here so far: listing with cursor pagination ([`listing`]). The
//! lifecycle operations still live in `routes` (see issue 12's note).

pub mod listing;
