//! The decision: allow only when every rule holds; every reason that
//! applies otherwise.

use std::sync::Arc;

use mandate_core::hash::sha256_b64;
use mandate_core::prelude::*;
use mandate_core::state::MandateState;
use serde_json::json;

use crate::support::*;

fn chain() -> Arc<VerifiedChain> {
    verifier().verify(&root(1)).unwrap()
}

fn with(f: impl FnOnce(&mut EvaluationRequest)) -> EvaluationRequest {
    let mut r = search();
    f(&mut r);
    r
}

fn reasons(r: &EvaluationRequest) -> Vec<String> {
    decide_as_leaf(&chain(), r, None, &active_facts(), during()).reasons
}

#[test]
fn allows_an_action_within_scope() {
    let d = decide_as_leaf(&chain(), &search(), None, &active_facts(), during());
    assert!(d.allow, "{:?}", d.reasons);
    assert_eq!(d.chain[0].as_str(), "mnd-logistics-sourcing-7f2a");
}

#[test]
fn denies_an_action_outside_scope() {
    assert_eq!(
        reasons(&with(|r| r.action.name = "delete_vendor".into())),
        ["action_not_permitted"]
    );
}

#[test]
fn denies_a_location_outside_scope() {
    assert_eq!(
        reasons(&with(
            |r| r.resource.id = "https://erp.example.com/payments".into()
        )),
        ["location_not_permitted"]
    );
    assert_eq!(
        reasons(&with(|r| r.resource.id = "not a url".into())),
        ["location_not_permitted"]
    );
}

#[test]
fn denies_another_resource_type() {
    assert_eq!(
        reasons(&with(|r| r.resource.type_ = "erp_payments".into())),
        ["resource_type_not_permitted"]
    );
}

#[test]
fn denies_a_resource_without_the_required_attributes() {
    assert_eq!(
        reasons(&with(|r| {
            r.resource
                .properties
                .insert("region".into(), json!("europe"));
        })),
        ["resource_not_permitted"]
    );
    assert_eq!(
        reasons(&with(|r| {
            r.resource.properties.remove("category");
        })),
        ["resource_not_permitted"]
    );
}

#[test]
fn denies_inputs_outside_a_constraint_and_missing_inputs() {
    assert_eq!(
        reasons(&with(|r| {
            r.resource
                .properties
                .insert("spend_tier".into(), json!("unlimited"));
        })),
        ["constraint_not_satisfied:spend_tier"]
    );
    assert_eq!(
        reasons(&with(|r| {
            r.resource.properties.remove("contract_template");
        })),
        ["constraint_not_satisfied:contract_template"]
    );
}

#[test]
fn reports_every_reason_that_applies() {
    let r = with(|r| {
        r.action.name = "delete_vendor".into();
        r.resource.id = "https://erp.example.com".into();
    });
    let d = decide_as_leaf(
        &chain(),
        &r,
        None,
        &state_with_status("cancelled"),
        t("2025-11-01T00:00:00Z"),
    );
    assert_eq!(
        d.reasons,
        [
            "expired",
            "location_not_permitted",
            "action_not_permitted",
            "condition_failed:program-active"
        ]
    );
}

#[test]
fn allows_before_hard_expiry_and_denies_from_it() {
    let s = active_facts();
    assert!(decide_as_leaf(&chain(), &search(), None, &s, t("2025-10-15T16:59:59Z")).allow);
    assert_eq!(
        decide_as_leaf(&chain(), &search(), None, &s, t("2025-10-15T17:00:00Z")).reasons,
        ["expired"]
    );
    assert_eq!(
        decide_as_leaf(&chain(), &search(), None, &s, t("2025-09-30T00:00:00Z")).reasons,
        ["not_yet_valid"]
    );
}

#[test]
fn denies_in_every_non_active_state_and_unknown_states() {
    for (state, code) in [
        (MandateState::Revoked, "revoked"),
        (MandateState::Suspended, "suspended"),
        (MandateState::Completed, "completed"),
        (MandateState::Expired, "expired"),
        (MandateState::Superseded, "superseded"),
        (MandateState::Pending, "pending"),
        (MandateState::from_name("archived"), "state_unknown"),
    ] {
        let mut s = active_facts();
        s.set_state(
            MandateId::new("mnd-logistics-sourcing-7f2a").unwrap(),
            state,
        );
        assert_eq!(
            decide_as_leaf(&chain(), &search(), None, &s, during()).reasons,
            [code]
        );
    }
}

#[test]
fn a_condition_that_turns_false_denies_with_its_on_failure() {
    let d = decide_as_leaf(
        &chain(),
        &search(),
        None,
        &state_with_status("cancelled"),
        during(),
    );
    assert_eq!(d.reasons, ["condition_failed:program-active"]);
    assert_eq!(
        serde_json::to_value(&d.obligations).unwrap(),
        json!([
            {"type": "suspend_mandate", "mandate_id": "mnd-logistics-sourcing-7f2a", "condition": "program-active"},
            {"type": "notify_principal", "mandate_id": "mnd-logistics-sourcing-7f2a",
             "principal": "vp-supply-chain@example.com", "condition": "program-active"}
        ])
    );
}

#[test]
fn a_mandate_that_already_ended_is_not_also_asked_to_be_suspended() {
    let mut state = state_with_status("cancelled");
    state.set_state(
        mandate_core::id::MandateId::new("mnd-logistics-sourcing-7f2a").unwrap(),
        MandateState::Completed,
    );
    let d = decide_as_leaf(&chain(), &search(), None, &state, during());
    assert_eq!(d.reasons, ["completed", "condition_failed:program-active"]);
    assert_eq!(
        serde_json::to_value(&d.obligations).unwrap(),
        json!([{"type": "notify_principal", "mandate_id": "mnd-logistics-sourcing-7f2a",
             "principal": "vp-supply-chain@example.com", "condition": "program-active"}])
    );
}

#[test]
fn a_condition_that_cannot_be_evaluated_denies() {
    // No facts at all: `procurement` is undeclared.
    let d = decide_as_leaf(&chain(), &search(), None, &StateSnapshot::new(), during());
    assert_eq!(d.reasons, ["condition_error:program-active"]);
    // A non-boolean result.
    let mut c = procurement_claims(1);
    c.conditions[0].expression = "procurement.contingency_program.status".into();
    let chain = verifier()
        .verify(&issue_root(&authority(), &c).unwrap())
        .unwrap();
    assert_eq!(
        decide_as_leaf(&chain, &search(), None, &active_facts(), during()).reasons,
        ["condition_error:program-active"]
    );
}

#[test]
fn conditions_read_the_action_resource_context_and_mandate() {
    let mut c = procurement_claims(1);
    c.conditions.push(serde_json::from_value(json!({
        "id": "small-orders", "evaluation": "per_action", "on_failure": "deny",
        "expression": "action.name != 'initiate_onboarding' || (has(context.order_total) && context.order_total <= 5000 && mandate.principal.sub.endsWith('@example.com') && resource.type == 'vendor_portal')"
    })).unwrap());
    let chain = verifier()
        .verify(&issue_root(&authority(), &c).unwrap())
        .unwrap();
    let onboard = |total: i64| {
        with(|r| {
            r.action.name = "initiate_onboarding".into();
            r.context.insert("order_total".into(), json!(total));
        })
    };
    assert!(decide_as_leaf(&chain, &onboard(4000), None, &active_facts(), during()).allow);
    assert_eq!(
        decide_as_leaf(&chain, &onboard(9000), None, &active_facts(), during()).reasons,
        ["condition_failed:small-orders"]
    );
    assert!(decide_as_leaf(&chain, &search(), None, &active_facts(), during()).allow);
}

#[test]
fn a_token_bound_by_hash_is_accepted_and_an_unrelated_one_denied() {
    let token = "ya29.a0AfB_the-agents-access-token";
    let mut c = procurement_claims(1);
    c.token_binding = Some(
        serde_json::from_value(json!({"access_token_sha256": sha256_b64(token.as_bytes())}))
            .unwrap(),
    );
    let chain = verifier()
        .verify(&issue_root(&authority(), &c).unwrap())
        .unwrap();
    let s = active_facts();
    assert!(decide_as_leaf(&chain, &search(), Some(token), &s, during()).allow);
    assert_eq!(
        decide_as_leaf(&chain, &search(), Some("another-token"), &s, during()).reasons,
        ["token_binding_mismatch"]
    );
    assert_eq!(
        decide_as_leaf(&chain, &search(), None, &s, during()).reasons,
        ["token_missing"]
    );
}

#[test]
fn a_token_naming_the_mandate_is_accepted_and_one_naming_another_denied() {
    let token_for = |id: &str| {
        sign_raw(
            &intruder_key(),
            &json!({"alg": "EdDSA", "typ": "at+jwt"}),
            json!({"sub": "agent", "mandate_id": id})
                .to_string()
                .as_bytes(),
        )
    };
    let s = active_facts();
    assert!(
        decide_as_leaf(
            &chain(),
            &search(),
            Some(&token_for("mnd-logistics-sourcing-7f2a")),
            &s,
            during()
        )
        .allow
    );
    assert_eq!(
        decide_as_leaf(
            &chain(),
            &search(),
            Some(&token_for("mnd-other")),
            &s,
            during()
        )
        .reasons,
        ["token_binding_mismatch"]
    );
    assert_eq!(
        decide_as_leaf(&chain(), &search(), Some("opaque-token"), &s, during()).reasons,
        ["token_binding_mismatch"]
    );
}

#[test]
fn another_agent_instance_is_denied() {
    let r = with(|r| {
        r.context
            .insert("agent_instance".into(), json!("inst-someone-else"));
    });
    assert_eq!(reasons(&r), ["agent_instance_mismatch"]);
    let r = with(|r| {
        r.context
            .insert("agent_instance".into(), json!("inst-7f2a-b8c4"));
    });
    assert!(reasons(&r).is_empty());
}

#[test]
fn revoking_an_ancestor_ends_every_descendant() {
    let child = verifier()
        .verify(&child_of(&root(1), &agent_key(), &search_only_spec(0), "mnd-child").unwrap())
        .unwrap();
    let mut s = active_facts();
    assert!(decide_as_leaf(&child, &search(), None, &s, during()).allow);
    s.set_state(
        MandateId::new("mnd-logistics-sourcing-7f2a").unwrap(),
        MandateState::Revoked,
    );
    assert_eq!(
        decide_as_leaf(&child, &search(), None, &s, during()).reasons,
        ["revoked"]
    );
}

#[test]
fn the_second_decision_on_the_same_chain_reuses_the_verified_chain() {
    let v = verifier();
    let jws = root(1);
    let first = v.verify(&jws).unwrap();
    let second = v.verify(&jws).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
}

#[test]
fn a_chain_that_does_not_verify_denies_with_its_reason() {
    let d = decide_presented(
        &verifier(),
        "e30.e30.e30",
        &search(),
        None,
        &active_facts(),
        during(),
    );
    assert!(!d.allow);
    assert_eq!(d.reasons, ["malformed"]);
    assert!(d.chain.is_empty());
}

#[test]
fn a_cached_chain_is_not_reused_for_a_tampered_copy_in_the_same_cache_slot() {
    let v = verifier();
    let jws = root(1);
    v.verify(&jws).unwrap();
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let payload = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1])
            .unwrap(),
    )
    .unwrap();
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        payload.replace("\"search\"", "\"delete\""),
    );
    let tampered = parts.join(".");
    // Same length and same end as the cached string: the same cache slot.
    assert_eq!(tampered.len(), jws.len());
    assert_eq!(tampered[tampered.len() - 128..], jws[jws.len() - 128..]);
    assert_ne!(tampered, jws);
    assert_eq!(codes(v.verify(&tampered)), ["signature_invalid"]);
}

#[test]
fn a_request_that_does_not_say_which_agent_acts_is_denied() {
    let d = decide(&chain(), &search(), None, &active_facts(), during());
    assert!(!d.allow);
    assert_eq!(d.reasons, ["agent_instance_missing"]);
}

#[test]
fn a_subject_that_is_not_the_leafs_agent_is_denied() {
    let r = with(|r| {
        r.subject = Some(json!({"type": "agent", "id": "urn:agent:someone-else"}));
    });
    assert_eq!(reasons(&r), ["agent_mismatch"]);
    let r = with(|r| {
        r.subject =
            Some(json!({"type": "agent", "id": "urn:agent:procurement/vendor-sourcing@3.2"}));
    });
    assert!(reasons(&r).is_empty());
}

#[test]
fn an_ancestor_cut_from_a_longer_chain_does_not_act_for_its_sub_agent() {
    // The sub-agent holds root~child; it presents `root` alone, saying who it is.
    let root_jws = root(1);
    let child = child_of(&root_jws, &agent_key(), &search_only_spec(0), "mnd-c").unwrap();
    let sub_agent = search().with_agent_instance("inst-search-01");
    let full = verifier().verify(&child).unwrap();
    assert!(decide(&full, &sub_agent, None, &active_facts(), during()).allow);
    let cut = verifier().verify(&root_jws).unwrap();
    let d = decide(&cut, &sub_agent, None, &active_facts(), during());
    assert!(!d.allow);
    assert_eq!(d.reasons, ["agent_instance_mismatch"]);
    // Saying nothing about who acts is no way around it.
    let d = decide(&cut, &search(), None, &active_facts(), during());
    assert_eq!(d.reasons, ["agent_instance_missing"]);
}

#[test]
fn a_mandate_issued_in_the_future_is_not_yet_valid() {
    let mut claims = procurement_claims(1);
    let issued = t("2025-10-02T10:00:00Z");
    claims.iat = issued;
    let jws = mandate_core::chain::issue_root(&authority(), &claims).unwrap();
    let c = verifier().verify(&jws).unwrap();
    let an_hour_before = t("2025-10-02T09:00:00Z");
    let d = decide_as_leaf(&c, &search(), None, &active_facts(), an_hour_before);
    assert_eq!(d.reasons, ["not_yet_valid"]);
    // Within the documented leeway for clock skew.
    let skewed = t("2025-10-02T09:59:30Z");
    assert!(decide_as_leaf(&c, &search(), None, &active_facts(), skewed).allow);
}

#[test]
fn an_amount_just_above_the_cap_is_not_rounded_into_it() {
    let text = r#"{"action":{"name":"search"},"resource":{"type":"vendor_portal","id":"https://vendor-portal.example.com/search","properties":{"amount":500.00000000000001}}}"#;
    let err =
        mandate_core::json::from_slice_strict::<EvaluationRequest>(text.as_bytes()).unwrap_err();
    assert_eq!(err.path, "resource.properties.amount");
}

/// An agent allowed to delegate can derive fresh children by the thousand
/// and present each once: the chains other agents use must stay verified
/// (no signature work again for them), and the cache must stay bounded.
#[test]
fn a_chain_in_use_stays_verified_while_new_chains_are_presented_around_it() {
    let v = verifier().with_cache_capacity(8);
    let in_use = root(1);
    let first = v.verify(&in_use).unwrap();
    for i in 0..40 {
        let mut claims = procurement_claims(1);
        claims.mandate_id = MandateId::new(format!("mnd-flood-{i}")).unwrap();
        claims.jti = claims.mandate_id.to_string();
        let fresh = mandate_core::chain::issue_root(&authority(), &claims).unwrap();
        v.verify(&fresh).unwrap();
        if i % 3 == 0 {
            assert!(
                Arc::ptr_eq(&first, &v.verify(&in_use).unwrap()),
                "after {} new chains, the chain in use was verified again",
                i + 1
            );
        }
    }
    // A chain nobody used for a generation is gone: verified again, a new
    // verified chain.
    let unused = v.verify(&root(2)).unwrap();
    for i in 0..8 {
        let mut claims = procurement_claims(1);
        claims.mandate_id = MandateId::new(format!("mnd-later-{i}")).unwrap();
        claims.jti = claims.mandate_id.to_string();
        v.verify(&mandate_core::chain::issue_root(&authority(), &claims).unwrap())
            .unwrap();
    }
    assert!(!Arc::ptr_eq(&unused, &v.verify(&root(2)).unwrap()));
}
