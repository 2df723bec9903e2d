//! A warm decision allocates nothing: deciding on a verified chain, or on a
//! presented string the verifier has seen, touches no allocator when it
//! allows (a deny may allocate its reason codes). Counted by
//! allocation-counter's global allocator, in the span under test only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "spec/support.rs"]
mod support;

use mandate_core::prelude::*;
use serde_json::json;
use support::*;

/// How many allocations `f` made, and what it returned.
fn allocations<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let mut out = None;
    let info = allocation_counter::measure(|| out = Some(f()));
    (info.count_total, out.unwrap())
}

/// A three-hop chain under the procurement mandate with a condition at
/// every hop (one over the facts, one over the action), the request it
/// allows as its leaf's holder sends it, and the state it is decided in.
fn three_hops() -> (Verifier, String, EvaluationRequest, StateSnapshot) {
    let leaf_key = intruder_key();
    let spec =
        |holder: &SigningKey, hops: u8, expiry: &str, condition: (&str, &str)| -> ChildSpec {
            serde_json::from_value(json!({
                "agent": {"id": format!("urn:agent:hop{hops}"), "instance": "inst-1",
                    "cnf": {"jwk": holder.public_jwk()}},
                "authorization_details": [{
                    "type": "vendor_portal",
                    "locations": ["https://vendor-portal.example.com/search"],
                    "resource": {"category": "logistics", "region": "north-america"},
                    "actions": ["search", "view_profile"],
                    "constraints": {"contract_template": "standard-logistics-v3",
                        "spend_tier": "pre-approved"}
                }],
                "conditions": [{"id": condition.0, "expression": condition.1,
                    "evaluation": "per_action", "on_failure": "deny"}],
                "lifecycle": {"hard_expiry": expiry},
                "delegation": {"permitted": hops > 0, "max_additional_hops": hops,
                    "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
            }))
            .unwrap()
        };
    let child = child_of(
        &root(2),
        &agent_key(),
        &spec(
            &sub_agent_key(),
            1,
            "2025-10-10T00:00:00Z",
            ("budget-left", "procurement.budget.remaining > 0"),
        ),
        "mnd-alloc-child",
    )
    .unwrap();
    let leaf = child_of(
        &child,
        &sub_agent_key(),
        &spec(
            &leaf_key,
            0,
            "2025-10-05T00:00:00Z",
            ("no-deletes", "action.name != 'delete'"),
        ),
        "mnd-alloc-grandchild",
    )
    .unwrap();
    let mut state = StateSnapshot::new();
    state.set_facts(
        Facts::from_json(json!({"procurement": {
            "contingency_program": {"status": "active"},
            "budget": {"remaining": 125_000}
        }}))
        .unwrap(),
    );
    (
        verifier(),
        leaf,
        search().with_agent_instance("inst-1"),
        state,
    )
}

#[test]
fn deciding_on_a_verified_chain_allocates_nothing() {
    let (verifier, presented, request, state) = three_hops();
    let chain = verifier.verify(&presented).unwrap();
    assert_eq!(chain.conditions().len(), 3, "a condition at every hop");
    // The first decision may fill caches; the ones after it are the warm path.
    assert!(decide(&chain, &request, None, &state, during()).allow);
    let (n, d) = allocations(|| decide(&chain, &request, None, &state, during()));
    assert!(d.allow, "{:?}", d.reasons);
    assert_eq!(n, 0, "allocations in a warm decision on a held chain");
}

#[test]
fn deciding_on_a_presented_string_the_verifier_has_seen_allocates_nothing() {
    let (verifier, presented, request, state) = three_hops();
    assert!(decide_presented(&verifier, &presented, &request, None, &state, during()).allow);
    let (n, d) =
        allocations(|| decide_presented(&verifier, &presented, &request, None, &state, during()));
    assert!(d.allow, "{:?}", d.reasons);
    assert_eq!(n, 0, "allocations in a warm decision on a presented string");
}

#[test]
fn the_counter_counts() {
    // Without this, a counter that never counts would pass the tests above.
    let (n, v) = allocations(|| vec![1_u8; 3]);
    assert_eq!((n, v.len()), (1, 3));
}
