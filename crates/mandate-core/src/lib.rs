//! # mandate-core
//!
//! The Execution Mandate: a signed, inspectable record, like a power of
//! attorney, bounded by purpose, scope, time and conditions. This crate is
//! pure (no I/O, no clock, no randomness of its own): time and randomness
//! come in as parameters, so every decision is reproducible.
//!
//! - [`model`]: the mandate's claims; [`validate`]: the rules beyond shape.
//! - [`keys`], [`jws`]: JWK keys and the compact JWS codec.
//! - [`chain`]: issue a root, derive a child offline, verify a chain.
//! - [`attenuation`], [`location`], [`constraint`]: what "within the parent" means.
//! - [`binding`]: tying a mandate to its access token; [`pop`]: proving
//!   possession of the holder key on every use (DPoP).
//! - [`condition`]: CEL conditions; [`state`]: the state snapshot.
//! - [`decision`]: the decision itself.
//!
//! ```
//! use mandate_core::prelude::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let authority = SigningKey::from_seed(Algorithm::EdDSA, [1; 32]);
//! let claims: MandateClaims = serde_json::from_str(include_str!("../../../testdata/procurement-mandate.json"))?;
//! let jws = issue_root(&authority, &claims)?;
//!
//! let mut keys = KeySet::new();
//! keys.insert(authority.verifying_key()?);
//! let verifier = Verifier::new(keys);
//! let chain = verifier.verify(&jws)?;
//!
//! let request = EvaluationRequest::new("search", "vendor_portal", "https://vendor-portal.example.com/search",
//!     serde_json::from_value(serde_json::json!({
//!         "category": "logistics", "region": "north-america",
//!         "contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}))?)
//!     .with_agent_instance("inst-7f2a-b8c4");
//! let mut state = StateSnapshot::new();
//! state.set_facts(Facts::from_json(serde_json::json!(
//!     {"procurement": {"contingency_program": {"status": "active"}}}))?);
//! let now = UnixTime::parse_rfc3339("2025-10-02T09:00:00Z")?;
//! assert!(decide(&chain, &request, None, &state, now).allow);
//!
//! let later = UnixTime::parse_rfc3339("2025-10-16T00:00:00Z")?;
//! assert_eq!(decide(&chain, &request, None, &state, later).reasons, ["expired"]);
//! # Ok(()) }
//! ```

pub mod attenuation;
pub mod b64;
pub mod batch;
pub mod binding;
pub mod cache;
pub mod chain;
pub mod condition;
pub mod constraint;
pub mod decision;
pub mod hash;
pub mod id;
pub mod json;
pub mod jws;
pub mod keys;
pub mod location;
pub mod model;
pub mod number;
pub mod pop;
pub mod request;
pub mod state;
pub mod timestamp;
pub mod validate;

/// The names most callers need.
pub mod prelude {
    pub use crate::chain::{
        CHAIN_SEPARATOR, ChainError, ChildLifecycle, ChildSpec, IssueError, Parent, VerifiedChain,
        Verifier, derive_child, issue_root, parse_unverified,
    };
    pub use crate::condition::Facts;
    pub use crate::decision::{Decision, Obligation, decide, decide_presented};
    pub use crate::id::{AgentId, ConditionId, MandateId};
    pub use crate::keys::{
        Algorithm, Jwks, KeySet, PrivateJwk, PublicJwk, SigningKey, VerifyingKey,
    };
    pub use crate::model::MandateClaims;
    pub use crate::request::EvaluationRequest;
    pub use crate::state::{MandateState, StateDocument, StateSnapshot};
    pub use crate::timestamp::UnixTime;
}
