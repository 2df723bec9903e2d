//! Signing and verifying a root: the verifier, never the token, decides how.

use mandate_core::keys::{Algorithm, KeySet, SigningKey};
use mandate_core::prelude::*;
use serde_json::json;

use crate::support::*;

fn header(alg: &str, kid: &str) -> serde_json::Value {
    json!({"alg": alg, "typ": "mandate+jwt", "kid": kid})
}

fn payload() -> Vec<u8> {
    serde_json::to_vec(&procurement_claims(1)).unwrap()
}

#[test]
fn a_root_signed_by_the_authority_verifies() {
    let chain = verifier().verify(&root(1)).unwrap();
    assert_eq!(chain.leaf().id().as_str(), "mnd-logistics-sourcing-7f2a");
    assert_eq!(chain.mandates().len(), 1);
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let jws = root(1);
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let forged = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1])
            .unwrap(),
    )
    .unwrap()
    .replace("\"search\"", "\"purge\"");
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, forged);
    assert_eq!(
        codes(verifier().verify(&parts.join("."))),
        ["signature_invalid"]
    );
}

#[test]
fn alg_none_is_refused() {
    let jws = format!(
        "{}.",
        sign_raw(
            &authority(),
            &json!({"alg": "none", "typ": "mandate+jwt"}),
            &payload()
        )
        .rsplit_once('.')
        .unwrap()
        .0
    );
    assert_eq!(codes(verifier().verify(&jws)), ["alg_none"]);
}

#[test]
fn hmac_is_refused_even_with_the_public_key_as_secret() {
    let kid = authority().kid().to_owned();
    let jws = sign_raw(&authority(), &header("HS256", &kid), &payload());
    assert_eq!(codes(verifier().verify(&jws)), ["alg_not_allowed"]);
}

#[test]
fn an_algorithm_that_does_not_match_the_key_is_refused() {
    // ES256 is allowed, but the authority's key is Ed25519: the key decides.
    let kid = authority().kid().to_owned();
    let jws = sign_raw(&authority(), &header("ES256", &kid), &payload());
    let v = verifier().with_algorithms([Algorithm::EdDSA, Algorithm::ES256]);
    assert_eq!(codes(v.verify(&jws)), ["alg_key_mismatch"]);
}

#[test]
fn an_unknown_kid_is_refused_and_a_missing_one_too() {
    let jws = sign_raw(
        &intruder_key(),
        &header("EdDSA", intruder_key().kid()),
        &payload(),
    );
    assert_eq!(codes(verifier().verify(&jws)), ["unknown_kid"]);
    let jws = sign_raw(
        &authority(),
        &json!({"alg": "EdDSA", "typ": "mandate+jwt"}),
        &payload(),
    );
    assert_eq!(codes(verifier().verify(&jws)), ["kid_missing"]);
}

#[test]
fn a_kid_naming_a_trusted_key_does_not_help_an_intruder() {
    let jws = sign_raw(
        &intruder_key(),
        &header("EdDSA", authority().kid()),
        &payload(),
    );
    assert_eq!(codes(verifier().verify(&jws)), ["signature_invalid"]);
}

#[test]
fn a_wrong_typ_is_refused() {
    let kid = authority().kid().to_owned();
    let jws = sign_raw(
        &authority(),
        &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        &payload(),
    );
    assert_eq!(codes(verifier().verify(&jws)), ["typ_invalid"]);
}

#[test]
fn header_parameters_that_choose_a_key_are_refused() {
    for p in ["jwk", "jku", "x5u", "x5c"] {
        let mut h = header("EdDSA", authority().kid());
        h[p] = json!(intruder_key().public_jwk());
        let jws = sign_raw(&authority(), &h, &payload());
        assert_eq!(
            codes(verifier().verify(&jws)),
            ["header_key_parameter"],
            "{p}"
        );
    }
}

#[test]
fn unknown_crit_extensions_are_refused() {
    let mut h = header("EdDSA", authority().kid());
    h["crit"] = json!(["urn:example:policy"]);
    h["urn:example:policy"] = json!(true);
    assert_eq!(
        codes(verifier().verify(&sign_raw(&authority(), &h, &payload()))),
        ["crit_unsupported"]
    );
}

#[test]
fn duplicate_member_names_in_the_payload_are_refused() {
    let text = String::from_utf8(payload()).unwrap();
    let dup = text.replacen("{", r#"{"mandate_id":"mnd-other","#, 1);
    let jws = sign_raw(
        &authority(),
        &header("EdDSA", authority().kid()),
        dup.as_bytes(),
    );
    assert_eq!(codes(verifier().verify(&jws)), ["duplicate_member"]);
}

#[test]
fn a_root_from_another_issuer_is_refused_when_an_issuer_is_required() {
    let v = verifier().with_issuer("https://mandate.example.com");
    assert!(v.verify(&root(1)).is_ok());
    let v = verifier().with_issuer("https://other.example.com");
    assert_eq!(codes(v.verify(&root(1))), ["issuer_untrusted"]);
}

#[test]
fn es256_roots_verify_when_allowed_and_only_then() {
    let key = SigningKey::from_seed(Algorithm::ES256, [9; 32]);
    let jws = issue_root(&key, &procurement_claims(1)).unwrap();
    let mut keys = KeySet::new();
    keys.insert(key.verifying_key().unwrap());
    assert_eq!(
        codes(Verifier::new(keys.clone()).verify(&jws)),
        ["alg_not_allowed"]
    );
    let v = Verifier::new(keys).with_algorithms([Algorithm::ES256]);
    assert!(v.verify(&jws).is_ok());
}

#[test]
fn a_root_that_claims_ancestors_is_refused() {
    let mut c = procurement_claims(1);
    c.delegation_chain.push(
        serde_json::from_value(json!({
            "mandate_id": "mnd-x", "holder": "urn:agent:x", "jws_sha256": "A".repeat(43)
        }))
        .unwrap(),
    );
    assert!(issue_root(&authority(), &c).is_err());
    let jws = sign_raw(
        &authority(),
        &header("EdDSA", authority().kid()),
        &serde_json::to_vec(&c).unwrap(),
    );
    assert_eq!(codes(verifier().verify(&jws)), ["chain_link_mismatch"]);
}

#[test]
fn validation_names_every_problem_with_its_path() {
    let mut c = procurement_claims(1);
    c.iat = t("2025-10-20T00:00:00Z");
    c.jti = "other".into();
    c.authorization_details[0].actions.clear();
    c.conditions[0].expression = "procurement.status ==".into();
    let err = issue_root(&authority(), &c).unwrap_err().to_string();
    for expected in [
        "jti: must equal mandate_id",
        "lifecycle.hard_expiry: must be after iat",
        "authorization_details[0].actions: must not be empty",
        "conditions[0].expression: expression does not parse",
    ] {
        assert!(err.contains(expected), "{expected} missing from {err}");
    }
}

#[test]
fn an_action_listed_twice_is_named_in_a_short_list_and_in_a_long_one() {
    // Short lists are compared pairwise, long ones through a set: both name
    // the second occurrence, and a list without repeats passes either way.
    for len in [2_usize, 16, 17, 200] {
        let mut c = procurement_claims(1);
        let mut actions: Vec<String> = (0..len - 1).map(|i| format!("act-{i}")).collect();
        c.authorization_details[0].actions = actions.clone();
        assert!(
            issue_root(&authority(), &c).is_ok(),
            "{len} distinct actions"
        );
        actions.push(format!("act-{}", len / 2 - 1));
        c.authorization_details[0].actions = actions;
        let err = issue_root(&authority(), &c).unwrap_err().to_string();
        let expected = format!(
            "authorization_details[0].actions[{}]: `act-{}` is listed twice",
            len - 1,
            len / 2 - 1
        );
        assert!(
            err.contains(&expected),
            "{len}: {expected} missing from {err}"
        );
    }
}

#[test]
fn unknown_top_level_members_are_kept_signed_and_ignored() {
    let mut c = procurement_claims(1);
    c.extensions.insert("x_ticket".into(), json!("OPS-42"));
    let jws = issue_root(&authority(), &c).unwrap();
    let chain = verifier().verify(&jws).unwrap();
    assert_eq!(
        chain.leaf().claims().extensions["x_ticket"],
        json!("OPS-42")
    );
    assert!(decide_as_leaf(&chain, &search(), None, &active_facts(), during()).allow);
}

#[test]
fn unknown_members_inside_security_objects_are_refused() {
    let text = PROCUREMENT.replace("\"max_additional_hops\"", "\"max_aditional_hops\"");
    let err = mandate_core::json::from_slice_strict::<MandateClaims>(text.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("max_aditional_hops"), "{err}");
    let text = PROCUREMENT.replace("\"suspend_and_notify\"", "\"log_only\"");
    let err = mandate_core::json::from_slice_strict::<MandateClaims>(text.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("log_only"), "{err}");
}

#[test]
fn the_procurement_mandate_round_trips_field_for_field() {
    let c: MandateClaims = serde_json::from_str(PROCUREMENT).unwrap();
    let again: MandateClaims = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(c, again);
    assert_eq!(c.lifecycle.terminal_events.len(), 2);
    assert_eq!(
        c.authorization_details[0].constraints["spend_tier"],
        json!("pre-approved")
    );
}
