//! Shared fixtures for the benchmarks (`benches/decision.rs`) and the
//! profiling example; the peers (Cedar, Tenuo, Biscuit) are dev-dependencies
//! of this crate only and never reach the product's build.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "benchmark fixtures over fixed inputs"
)]

use mandate_core::chain::{ChildSpec, derive_child, issue_root};
use mandate_core::keys::{Algorithm, KeySet, SigningKey};
use mandate_core::model::{Confirmation, MandateClaims};
use mandate_core::prelude::*;
use serde_json::json;

const PROCUREMENT: &str = include_str!("../../../testdata/procurement-mandate.json");

/// The Mandate side of every benchmark: a three-hop chain under the
/// procurement mandate, with three conditions, and a request it allows.
#[derive(Debug)]
pub struct MandateFixture {
    pub verifier: Verifier,
    pub keys: KeySet,
    pub three_hop: String,
    pub state: StateSnapshot,
    pub request: EvaluationRequest,
    pub now: UnixTime,
    pub agent: SigningKey,
    pub root: String,
}

/// A child spec held by `holder`.
#[must_use]
pub fn spec(
    holder: &SigningKey,
    hops: u8,
    location: &str,
    expiry: &str,
    extra_condition: Option<(&str, &str)>,
) -> ChildSpec {
    let mut conditions = Vec::new();
    if let Some((id, expr)) = extra_condition {
        conditions.push(
            json!({"id": id, "expression": expr, "evaluation": "per_action", "on_failure": "deny"}),
        );
    }
    serde_json::from_value(json!({
        "agent": {"id": format!("urn:agent:hop{hops}"), "instance": "inst-1", "cnf": {"jwk": holder.public_jwk()}},
        "authorization_details": [{
            "type": "vendor_portal", "locations": [location],
            "resource": {"category": "logistics", "region": "north-america"},
            "actions": ["search", "view_profile"],
            "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}
        }],
        "conditions": conditions,
        "lifecycle": {"hard_expiry": expiry},
        "delegation": {"permitted": hops > 0, "max_additional_hops": hops,
            "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    }))
    .unwrap()
}

/// Builds the fixture.
#[must_use]
pub fn mandate_fixture() -> MandateFixture {
    let authority = SigningKey::from_seed(Algorithm::EdDSA, [1; 32]);
    let agent = SigningKey::from_seed(Algorithm::EdDSA, [2; 32]);
    let sub = SigningKey::from_seed(Algorithm::EdDSA, [3; 32]);
    let leaf = SigningKey::from_seed(Algorithm::EdDSA, [4; 32]);
    let mut claims: MandateClaims = serde_json::from_str(PROCUREMENT).unwrap();
    claims.agent.cnf = Some(Confirmation::key(agent.public_jwk()));
    claims.delegation.max_additional_hops = 2;
    let root = issue_root(&authority, &claims).unwrap();
    let now = UnixTime::parse_rfc3339("2025-10-02T09:00:00Z").unwrap();
    let id = |s: &str| MandateId::new(s).unwrap();
    let child = derive_child(
        &root,
        &agent,
        &spec(
            &sub,
            1,
            "https://vendor-portal.example.com/search",
            "2025-10-10T00:00:00Z",
            Some(("budget-left", "procurement.budget.remaining > 0")),
        ),
        id("mnd-bench-child"),
        now,
    )
    .unwrap();
    let three_hop = derive_child(
        &child,
        &sub,
        &spec(
            &leaf,
            0,
            "https://vendor-portal.example.com/search",
            "2025-10-05T00:00:00Z",
            Some(("no-deletes", "action.name != 'delete'")),
        ),
        id("mnd-bench-grandchild"),
        now,
    )
    .unwrap();
    let mut keys = KeySet::new();
    keys.insert(authority.verifying_key().unwrap());
    let mut state = StateSnapshot::new();
    state.set_facts(
        Facts::from_json(json!({"procurement": {"contingency_program": {"status": "active"}, "budget": {"remaining": 125000}}}))
            .unwrap(),
    );
    let request = EvaluationRequest::new(
        "search",
        "vendor_portal",
        "https://vendor-portal.example.com/search",
        serde_json::from_value(json!({
            "category": "logistics", "region": "north-america",
            "contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"
        }))
        .unwrap(),
    )
    // Sent by the leaf's holder, as every decision requires.
    .with_agent_instance("inst-1");
    MandateFixture {
        verifier: Verifier::new(keys.clone()),
        keys,
        three_hop,
        state,
        request,
        now,
        agent,
        root,
    }
}
