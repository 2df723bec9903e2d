//! Offline delegation: a child is within its parent in every dimension, is
//! signed by the key its parent binds, and names its ancestors by hash.

use mandate_core::chain::ChildSpec;
use mandate_core::prelude::*;
use serde_json::json;

use crate::support::*;

#[test]
fn a_narrowed_child_verifies_offline_back_to_the_root() {
    let chain = child_of(&root(1), &agent_key(), &search_only_spec(0), "mnd-child").unwrap();
    let v = verifier().verify(&chain).unwrap();
    let ids: Vec<String> = v.ids().iter().map(ToString::to_string).collect();
    assert_eq!(ids, ["mnd-logistics-sourcing-7f2a", "mnd-child"]);
    let leaf = v.leaf().claims();
    assert_eq!(
        leaf.purpose,
        v.root().claims().purpose,
        "purpose is inherited unchanged"
    );
    assert_eq!(
        leaf.conditions,
        v.root().claims().conditions,
        "conditions are inherited"
    );
    assert_eq!(
        Some(leaf.delegation_chain[0].jws_sha256.as_str()),
        v.root().jws_sha256(),
        "the child links to its parent by the SHA-256 of the parent's JWS"
    );
    assert_eq!(
        v.leaf().jws_sha256(),
        None,
        "nothing in the chain links to the leaf, so its JWS is not hashed"
    );
}

#[test]
fn a_three_hop_chain_verifies() {
    let (_, grandchild) = three_hops();
    assert_eq!(verifier().verify(&grandchild).unwrap().mandates().len(), 3);
}

#[test]
fn a_child_must_be_signed_with_the_key_the_parent_binds() {
    let err = child_of(&root(1), &intruder_key(), &search_only_spec(0), "mnd-child").unwrap_err();
    assert_eq!(err.codes(), ["holder_key_mismatch"]);
    let forged = forge_child(&root(1), &intruder_key(), &search_only_spec(0), |_| {});
    assert_eq!(codes(verifier().verify(&forged)), ["signature_invalid"]);
}

#[test]
fn a_child_cannot_be_spliced_onto_another_parent() {
    let child = child_of(&root(1), &agent_key(), &search_only_spec(0), "mnd-child").unwrap();
    let child_jws = child.rsplit_once('~').unwrap().1;
    // Another root for the same agent and key, differing only in its id.
    let mut other = procurement_claims(1);
    other.mandate_id = MandateId::new("mnd-other").unwrap();
    other.jti = "mnd-other".into();
    let other_root = issue_root(&authority(), &other).unwrap();
    assert_eq!(
        codes(verifier().verify(&format!("{other_root}~{child_jws}"))),
        ["chain_link_mismatch"]
    );
}

/// A child of a root that may delegate once more, and the spec of a
/// grandchild below it (no holder key of its own, an earlier expiry).
fn child_and_grandchild_spec() -> (String, ChildSpec) {
    let child = child_of(&root(2), &agent_key(), &search_only_spec(1), "mnd-child").unwrap();
    let mut spec = search_only_spec(0);
    spec.agent.cnf = None;
    spec.lifecycle = lifecycle("2025-10-05T00:00:00Z");
    (child, spec)
}

#[test]
fn every_field_of_a_childs_link_to_its_parent_is_checked() {
    // A grandchild's chain: its links name the root and the child.
    let (child, spec) = child_and_grandchild_spec();
    let honest = forge_child(&child, &sub_agent_key(), &spec, |_| {});
    assert_eq!(
        codes(verifier().verify(&honest)),
        Vec::<String>::new(),
        "the unedited forgery is the honest child"
    );
    type Edit = fn(&mut MandateClaims);
    let edits: [(&str, Edit); 7] = [
        ("the parent's id", |c| {
            c.delegation_chain[1].mandate_id = MandateId::new("mnd-other").unwrap();
        }),
        ("the parent's holder", |c| {
            c.delegation_chain[1].holder = AgentId::new("urn:agent:other/agent@1").unwrap();
        }),
        ("the parent's hash", |c| {
            c.delegation_chain[1].jws_sha256 = "A".repeat(43);
        }),
        ("the grandparent's holder", |c| {
            c.delegation_chain[0].holder = AgentId::new("urn:agent:other/agent@1").unwrap();
        }),
        ("a link dropped", |c| {
            c.delegation_chain.remove(0);
        }),
        ("a link repeated", |c| {
            let last = c.delegation_chain[1].clone();
            c.delegation_chain.push(last);
        }),
        ("no links", |c| c.delegation_chain.clear()),
    ];
    for (what, edit) in edits {
        let forged = forge_child(&child, &sub_agent_key(), &spec, edit);
        assert_eq!(
            codes(verifier().verify(&forged)),
            ["chain_link_mismatch"],
            "{what}"
        );
    }
}

#[test]
fn dropping_or_reordering_ancestors_is_detected() {
    let (child, spec) = child_and_grandchild_spec();
    let gc = child_of(&child, &sub_agent_key(), &spec, "mnd-gc").unwrap();
    let parts: Vec<&str> = gc.split('~').collect();
    assert_eq!(
        codes(verifier().verify(&format!("{}~{}", parts[0], parts[2]))),
        ["chain_link_mismatch"]
    );
    assert!(
        !codes(verifier().verify(&format!("{}~{}~{}", parts[1], parts[0], parts[2]))).is_empty()
    );
    // A child alone is not a root.
    assert!(!codes(verifier().verify(parts[1])).is_empty());
}

#[test]
fn a_parent_that_does_not_permit_delegation_has_no_children() {
    let child = child_of(&root(1), &agent_key(), &search_only_spec(0), "mnd-child").unwrap();
    let err = child_of(&child, &sub_agent_key(), &search_only_spec(0), "mnd-gc").unwrap_err();
    assert_eq!(err.codes()[0], "delegation_not_permitted");
    let forged = forge_child(&child, &sub_agent_key(), &search_only_spec(0), |c| {
        c.lifecycle.hard_expiry = t("2025-10-04T00:00:00Z");
        c.exp = c.lifecycle.hard_expiry;
    });
    assert_eq!(
        codes(verifier().verify(&forged)),
        ["delegation_not_permitted"]
    );
}

/// Each widening is refused by `derive_child` and, when forged past it, by
/// the verifier, naming the dimension.
#[test]
fn a_child_that_exceeds_its_parent_in_any_one_dimension_is_refused_naming_it() {
    type Edit = Box<dyn Fn(&mut MandateClaims)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "attenuation_violation:actions",
            Box::new(|c| {
                c.authorization_details[0]
                    .actions
                    .push("delete_vendor".into())
            }),
        ),
        (
            "attenuation_violation:locations",
            Box::new(|c| {
                c.authorization_details[0].locations = vec!["https://evil.example.com".into()]
            }),
        ),
        (
            "attenuation_violation:locations",
            Box::new(|c| {
                c.authorization_details[0].locations =
                    vec!["https://vendor-portal.example.com.evil.net/search".into()]
            }),
        ),
        (
            "attenuation_violation:resource",
            Box::new(|c| {
                c.authorization_details[0].resource.remove("region");
            }),
        ),
        (
            "attenuation_violation:resource",
            Box::new(|c| {
                c.authorization_details[0]
                    .resource
                    .insert("region".into(), json!("europe"));
            }),
        ),
        (
            "attenuation_violation:constraints",
            Box::new(|c| {
                c.authorization_details[0]
                    .constraints
                    .insert("spend_tier".into(), json!(["pre-approved", "unlimited"]));
            }),
        ),
        (
            "attenuation_violation:constraints",
            Box::new(|c| {
                c.authorization_details[0]
                    .constraints
                    .remove("contract_template");
            }),
        ),
        (
            "attenuation_violation:authorization_details",
            Box::new(|c| c.authorization_details[0].type_ = "erp_payments".into()),
        ),
        (
            "attenuation_violation:hard_expiry",
            Box::new(|c| {
                c.lifecycle.hard_expiry = t("2025-10-15T17:00:00Z");
                c.exp = c.lifecycle.hard_expiry;
            }),
        ),
        (
            "attenuation_violation:hard_expiry",
            Box::new(|c| {
                c.lifecycle.hard_expiry = t("2026-01-01T00:00:00Z");
                c.exp = c.lifecycle.hard_expiry;
            }),
        ),
        (
            "attenuation_violation:max_additional_hops",
            Box::new(|c| {
                c.delegation.permitted = true;
                c.delegation.max_additional_hops = 1;
            }),
        ),
        (
            "attenuation_violation:purpose",
            Box::new(|c| c.purpose.objective = "Anything at all".into()),
        ),
        (
            "attenuation_violation:principal",
            Box::new(|c| c.principal.sub = "ceo@example.com".into()),
        ),
        (
            "attenuation_violation:iss",
            Box::new(|c| c.iss = "https://evil.example.com".into()),
        ),
        (
            "attenuation_violation:conditions",
            Box::new(|c| c.conditions.clear()),
        ),
        (
            "attenuation_violation:conditions",
            Box::new(|c| c.conditions[0].expression = "true".into()),
        ),
        (
            "attenuation_violation:terminal_events",
            Box::new(|c| c.lifecycle.terminal_events.clear()),
        ),
        (
            "attenuation_violation:attenuation",
            Box::new(|c| {
                c.delegation.attenuation = mandate_core::model::Attenuation::SubsetOfParent
            }),
        ),
        (
            "attenuation_violation:iat",
            Box::new(|c| {
                c.iat = t("2025-09-01T00:00:00Z");
                c.nbf = c.iat;
            }),
        ),
    ];
    for (code, edit) in cases {
        let forged = forge_child(&root(1), &agent_key(), &search_only_spec(0), |c| edit(c));
        let got = codes(verifier().verify(&forged));
        assert!(got.contains(&code.to_owned()), "{code}: got {got:?}");
    }
}

#[test]
fn a_parent_read_once_derives_the_same_children_under_the_same_rules() {
    let parent_chain = root(1);
    let parent = Parent::parse(&parent_chain).unwrap();
    let id = || MandateId::new("mnd-child").unwrap();
    let once = parent
        .derive(&agent_key(), &search_only_spec(0), id(), during())
        .unwrap();
    assert_eq!(
        once,
        child_of(
            &parent_chain,
            &agent_key(),
            &search_only_spec(0),
            "mnd-child"
        )
        .unwrap(),
        "the same child, byte for byte, as deriving from the string"
    );
    assert_eq!(verifier().verify(&once).unwrap().mandates().len(), 2);
    // The second child from the same reading is held to every rule again.
    let mut wider = search_only_spec(0);
    wider.authorization_details[0]
        .actions
        .push("delete_vendor".into());
    let err = parent
        .derive(&agent_key(), &wider, id(), during())
        .unwrap_err();
    assert_eq!(err.codes(), ["attenuation_violation:actions"]);
    let err = parent
        .derive(&intruder_key(), &search_only_spec(0), id(), during())
        .unwrap_err();
    assert_eq!(err.codes(), ["holder_key_mismatch"]);
}

#[test]
fn derive_child_refuses_a_widened_child_with_the_dimension() {
    let mut spec = search_only_spec(0);
    spec.authorization_details[0]
        .actions
        .push("delete_vendor".into());
    let err = child_of(&root(1), &agent_key(), &spec, "mnd-child").unwrap_err();
    assert_eq!(err.codes(), ["attenuation_violation:actions"]);
    assert!(
        err.to_string()
            .contains("`delete_vendor` is not in the parent's actions"),
        "{err}"
    );
}

#[test]
fn a_child_may_add_conditions_and_terminal_events_and_they_apply() {
    let mut spec = search_only_spec(0);
    spec.conditions.push(
        serde_json::from_value(json!({
            "id": "business-hours", "expression": "now.getHours() >= 8 && now.getHours() < 18",
            "evaluation": "per_action", "on_failure": "deny"
        }))
        .unwrap(),
    );
    let chain = verifier()
        .verify(&child_of(&root(1), &agent_key(), &spec, "mnd-child").unwrap())
        .unwrap();
    assert!(decide_as_leaf(&chain, &search(), None, &active_facts(), during()).allow);
    let night = t("2025-10-02T23:00:00Z");
    assert_eq!(
        decide_as_leaf(&chain, &search(), None, &active_facts(), night).reasons,
        ["condition_failed:business-hours"]
    );
}

#[test]
fn a_child_condition_id_may_not_shadow_an_ancestors() {
    let mut spec = search_only_spec(0);
    spec.conditions.push(serde_json::from_value(json!({
        "id": "program-active", "expression": "true", "evaluation": "per_action", "on_failure": "deny"
    })).unwrap());
    let err = child_of(&root(1), &agent_key(), &spec, "mnd-child").unwrap_err();
    assert!(
        err.to_string().contains("`program-active` is used twice"),
        "{err}"
    );
}

fn with_discovery() -> String {
    let mut c = procurement_claims(1);
    c.discovery = Some(
        serde_json::from_value(json!({
            "types": ["sanctions_screening"], "locations": ["https://screening.example.net/v2"],
            "actions": ["screen_entity"], "max_lifetime_secs": 300
        }))
        .unwrap(),
    );
    issue_root(&authority(), &c).unwrap()
}

fn grant_spec(ty: &str, location: &str, expiry: &str) -> ChildSpec {
    serde_json::from_value(json!({
        "agent": {"id": "urn:agent:procurement/vendor-sourcing@3.2", "instance": "inst-7f2a-b8c4"},
        "authorization_details": [{"type": ty, "locations": [location], "actions": ["screen_entity"]}],
        "lifecycle": {"hard_expiry": expiry, "one_time": true},
        "delegation": {"permitted": false, "max_additional_hops": 0,
            "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })).unwrap()
}

#[test]
fn the_authority_grants_a_discovered_tool_within_the_principals_allowance() {
    let spec = grant_spec(
        "sanctions_screening",
        "https://screening.example.net/v2/screen",
        "2025-10-02T09:05:00Z",
    );
    let chain = mandate_core::chain::issue_discovery_grant(
        &with_discovery(),
        &authority(),
        &spec,
        MandateId::new("mnd-grant").unwrap(),
        during(),
    )
    .unwrap();
    let v = verifier().verify(&chain).unwrap();
    assert!(v.leaf().claims().lifecycle.one_time);
    let req = EvaluationRequest::new(
        "screen_entity",
        "sanctions_screening",
        "https://screening.example.net/v2/screen",
        Default::default(),
    );
    let d = decide_as_leaf(&v, &req, None, &active_facts(), during());
    assert!(d.allow, "{:?}", d.reasons);
}

#[test]
fn a_discovery_grant_outside_the_allowance_is_refused() {
    let grant = |ty: &str, loc: &str, exp: &str| {
        mandate_core::chain::issue_discovery_grant(
            &with_discovery(),
            &authority(),
            &grant_spec(ty, loc, exp),
            MandateId::new("mnd-grant").unwrap(),
            during(),
        )
        .unwrap_err()
        .codes()
    };
    assert_eq!(
        grant(
            "erp_payments",
            "https://screening.example.net/v2/screen",
            "2025-10-02T09:05:00Z"
        ),
        ["attenuation_violation:authorization_details"]
    );
    assert_eq!(
        grant(
            "sanctions_screening",
            "https://evil.example.net/v2",
            "2025-10-02T09:05:00Z"
        ),
        ["attenuation_violation:locations"]
    );
    assert_eq!(
        grant(
            "sanctions_screening",
            "https://screening.example.net/v2/screen",
            "2025-10-02T10:00:00Z"
        ),
        ["attenuation_violation:hard_expiry"]
    );
    // Without an allowance in the grant, nothing can be discovered.
    let err = mandate_core::chain::issue_discovery_grant(
        &root(1),
        &authority(),
        &grant_spec(
            "sanctions_screening",
            "https://screening.example.net/v2/screen",
            "2025-10-02T09:05:00Z",
        ),
        MandateId::new("mnd-grant").unwrap(),
        during(),
    )
    .unwrap_err();
    assert_eq!(err.codes(), ["attenuation_violation:discovery"]);
}

#[test]
fn an_agent_cannot_sign_its_own_discovery_grant() {
    // The holder signs a grant for the undeclared tool: judged as an ordinary
    // child, it exceeds the parent.
    let spec = grant_spec(
        "sanctions_screening",
        "https://screening.example.net/v2/screen",
        "2025-10-02T09:05:00Z",
    );
    let forged = forge_child(&with_discovery(), &agent_key(), &spec, |_| {});
    assert_eq!(
        codes(verifier().verify(&forged)),
        ["attenuation_violation:authorization_details"]
    );
    // Naming the authority's key in the header does not help.
    let forged = forge_child(&with_discovery(), &agent_key(), &spec, |_| {});
    let (head, rest) = forged.rsplit_once('~').unwrap();
    let jws: Vec<&str> = rest.split('.').collect();
    let header = json!({"alg": "EdDSA", "typ": "mandate+jwt", "kid": authority().kid()});
    let payload =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, jws[1]).unwrap();
    let resigned = format!("{head}~{}", sign_raw(&agent_key(), &header, &payload));
    assert_eq!(codes(verifier().verify(&resigned)), ["signature_invalid"]);
}

/// root~child~grandchild, where the child binds the sub-agent's key.
fn three_hops() -> (String, String) {
    let child = child_of(&root(2), &agent_key(), &search_only_spec(1), "mnd-child").unwrap();
    let mut spec = search_only_spec(0);
    spec.agent.id = AgentId::new("urn:agent:procurement/leaf@1").unwrap();
    spec.agent.cnf = None;
    spec.lifecycle = lifecycle("2025-10-05T00:00:00Z");
    let grandchild = child_of(&child, &sub_agent_key(), &spec, "mnd-grandchild").unwrap();
    (child, grandchild)
}

/// What a verifier that has seen nothing says of `presented`, and what one
/// that has verified `seen` first says: they must agree.
fn alone_and_below(seen: &str, presented: &str) -> (Vec<String>, Vec<String>) {
    let warm = verifier();
    warm.verify(seen).unwrap();
    (
        codes(verifier().verify(presented)),
        codes(warm.verify(presented)),
    )
}

#[test]
fn a_chain_below_one_already_verified_is_the_chain_verified_whole() {
    let (child, grandchild) = three_hops();
    let warm = verifier();
    warm.verify(&child).unwrap();
    let below = warm.verify(&grandchild).unwrap();
    let whole = verifier().verify_uncached(&grandchild).unwrap();
    assert_eq!(below.ids(), whole.ids());
    assert_eq!(below.mandates().len(), 3);
    for (b, w) in below.mandates().iter().zip(whole.mandates()) {
        assert_eq!(b.claims(), w.claims());
        assert_eq!(b.jws_sha256(), w.jws_sha256(), "{}", b.id());
    }
    // The child was the leaf of the chain seen first; below it, it is a
    // parent, linked by the hash of its JWS.
    assert!(below.mandates()[1].jws_sha256().is_some());
    assert_eq!(below.leaf().jws_sha256(), None);
    let origins = |c: &VerifiedChain| -> Vec<(String, usize)> {
        c.conditions()
            .iter()
            .map(|c| (c.condition.id.to_string(), c.origin))
            .collect()
    };
    assert_eq!(origins(&below), origins(&whole));
    assert_eq!(
        below.holder_key().map(|k| k.kid().to_owned()),
        whole.holder_key().map(|k| k.kid().to_owned())
    );
    let request = as_leaf_of(&below, &search());
    assert_eq!(
        decide(&below, &request, None, &active_facts(), during()),
        decide(&whole, &request, None, &active_facts(), during())
    );
}

#[test]
fn a_forged_leaf_below_a_verified_chain_is_refused_as_it_would_be_alone() {
    let (child, _) = three_hops();
    let mut spec = search_only_spec(0);
    spec.agent.cnf = None;
    spec.lifecycle = lifecycle("2025-10-05T00:00:00Z");
    // Signed by a key the child does not bind.
    let thief = forge_child(&child, &intruder_key(), &spec, |_| {});
    // Signed by the right key, but wider than its parent.
    let wider = forge_child(&child, &sub_agent_key(), &spec, |c| {
        c.authorization_details[0]
            .actions
            .push("initiate_onboarding".into());
    });
    // Signed by the right key, but naming another parent.
    let spliced = forge_child(&child, &sub_agent_key(), &spec, |c| {
        c.delegation_chain[1].jws_sha256 = "A".repeat(43);
    });
    // One signature byte of the leaf changed.
    // (Ten characters from the end: inside `S`, and never the last
    // character, whose spare bits strict base64url requires to be zero.)
    let mut flipped = forge_child(&child, &sub_agent_key(), &spec, |_| {}).into_bytes();
    let at = flipped.len() - 10;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (name, presented) in [
        ("thief", &thief),
        ("wider", &wider),
        ("spliced", &spliced),
        ("flipped", &flipped),
    ] {
        let (alone, below) = alone_and_below(&child, presented);
        assert!(!alone.is_empty(), "{name} must be refused");
        assert_eq!(below, alone, "{name}");
    }
}

#[test]
fn a_leaf_is_not_verified_below_a_chain_that_differs_from_the_one_verified() {
    let (child, grandchild) = three_hops();
    let (_, leaf) = grandchild.rsplit_once('~').unwrap();
    // The same leaf below another root with the same agent and key: the
    // verified chain is not a prefix of this one, whatever its leaf.
    let mut other = procurement_claims(2);
    other.mandate_id = MandateId::new("mnd-other").unwrap();
    other.jti = "mnd-other".into();
    let other_root = issue_root(&authority(), &other).unwrap();
    let (_, child_part) = child.split_once('~').unwrap();
    let (alone, below) = alone_and_below(&child, &format!("{other_root}~{child_part}~{leaf}"));
    assert_eq!(alone, ["chain_link_mismatch"]);
    assert_eq!(below, alone);
}

#[test]
fn a_chain_verified_under_keys_since_replaced_is_not_built_upon() {
    let (child, grandchild) = three_hops();
    let v = verifier();
    v.verify(&child).unwrap();
    // The authority's key is retired: what it signed no longer verifies,
    // even below a chain verified while it was trusted.
    let mut keys = mandate_core::keys::KeySet::new();
    keys.insert(intruder_key().verifying_key().unwrap());
    v.set_keys(keys);
    assert_eq!(codes(v.verify(&grandchild)), ["unknown_kid"]);
}

#[test]
fn a_verifier_counts_how_it_verified_each_chain() {
    use mandate_core::chain::VerifyCounts;
    let (child, grandchild) = three_hops();
    let v = verifier();
    v.verify(&child).unwrap();
    v.verify(&child).unwrap();
    v.verify(&grandchild).unwrap();
    v.verify(&grandchild).unwrap();
    assert!(v.verify("not a chain").is_err());
    assert_eq!(
        v.counts(),
        VerifyCounts {
            cached: 2,
            below_cached: 1,
            whole: 2
        }
    );
}

#[test]
fn sub_agents_chains_below_the_same_verified_chain_are_each_the_chain_verified_whole() {
    let (child, _) = three_hops();
    let warm = verifier();
    warm.verify(&child).unwrap();
    for (i, leaf_id) in [
        "urn:agent:procurement/leaf@1",
        "urn:agent:procurement/leaf@2",
    ]
    .into_iter()
    .enumerate()
    {
        let mut spec = search_only_spec(0);
        spec.agent.id = AgentId::new(leaf_id).unwrap();
        spec.agent.cnf = None;
        spec.lifecycle = lifecycle("2025-10-05T00:00:00Z");
        let chain = child_of(&child, &sub_agent_key(), &spec, &format!("mnd-gc-{i}")).unwrap();
        let below = warm.verify(&chain).unwrap();
        let whole = verifier().verify_uncached(&chain).unwrap();
        for (b, w) in below.mandates().iter().zip(whole.mandates()) {
            assert_eq!(b.jws_sha256(), w.jws_sha256(), "{leaf_id}: {}", b.id());
        }
    }
    assert_eq!(warm.counts().below_cached, 2);
}
