//! Proof of possession at the AuthZEN endpoint: the enforcement point passes
//! the agent's DPoP proof (`context.dpop`) with the method and URL it was
//! sent for (`context.htm`, `context.htu`). A mandate alone is worth nothing.

use mandate_core::keys::{Algorithm, SigningKey};
use serde_json::{Value, json};

use crate::support::*;

const URL: &str = "https://gw.example.com/search";

fn now() -> mandate_core::timestamp::UnixTime {
    mandate_core::timestamp::UnixTime::from_secs(mandate_authority::auth::now_secs()).unwrap()
}

/// The search request as the enforcement point forwards it, with `proof`.
fn with_proof(mandate: &str, proof: Option<String>) -> Value {
    let mut req = search_request(mandate);
    req["context"]["htm"] = json!("POST");
    req["context"]["htu"] = json!(URL);
    if let Some(p) = proof {
        req["context"]["dpop"] = json!(p);
    }
    req
}

fn evaluate(s: &Server, c: &Cast, req: &Value) -> Value {
    let (st, d) = s.call(
        "POST",
        "/access/v1/evaluation",
        Some(&c.enforcer),
        Some(req),
    );
    assert_eq!(st, 200, "{d}");
    d
}

#[test]
fn a_mandate_is_used_only_with_a_fresh_proof_by_its_holder_key() {
    let s = Server::start("pop-authzen");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (_, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));

    // The mandate alone: a copied string is not enough.
    let d = evaluate(&s, &c, &with_proof(&mandate, None));
    assert_eq!(reasons(&d), ["pop_missing"]);

    // A proof by another key (the thief's own).
    let thief = SigningKey::from_seed(Algorithm::EdDSA, [9; 32]);
    let forged = mandate_core::pop::make_proof(&thief, "POST", URL, None, "t-1", now());
    assert_eq!(
        reasons(&evaluate(&s, &c, &with_proof(&mandate, Some(forged)))),
        ["pop_invalid"]
    );

    // A proof by the holder, but for another request.
    let elsewhere = proof("POST", "https://other.example.com/search", None);
    assert_eq!(
        reasons(&evaluate(&s, &c, &with_proof(&mandate, Some(elsewhere)))),
        ["pop_invalid"]
    );
    let other_method = proof("GET", URL, None);
    assert_eq!(
        reasons(&evaluate(&s, &c, &with_proof(&mandate, Some(other_method)))),
        ["pop_invalid"]
    );

    // An old proof.
    let old =
        mandate_core::pop::make_proof(&agent_key(), "POST", URL, None, "old-1", now().plus(-120));
    assert_eq!(
        reasons(&evaluate(&s, &c, &with_proof(&mandate, Some(old)))),
        ["pop_stale"]
    );

    // The holder's fresh proof: allowed, once.
    let good = proof("POST", URL, None);
    let d = evaluate(&s, &c, &with_proof(&mandate, Some(good.clone())));
    assert_eq!(d["decision"], true, "{d}");
    let d = evaluate(&s, &c, &with_proof(&mandate, Some(good)));
    assert_eq!(reasons(&d), ["pop_replayed"]);

    // After the mission's terminal event a fresh proof proves only possession.
    let (st, r) = s.call("POST", "/v1/events", Some(&c.events), Some(&json!({
        "id": "crm-pop-1", "type": "contingency_program.cancelled", "subject": "program:contingency-q4"
    })));
    assert_eq!(st, 202, "{r}");
    let d = evaluate(
        &s,
        &c,
        &with_proof(&mandate, Some(proof("POST", URL, None))),
    );
    assert_eq!(d["decision"], false);
    assert!(reasons(&d).contains(&"completed".to_owned()), "{d}");
    assert!(!reasons(&d).iter().any(|r| r.starts_with("pop_")), "{d}");
}

#[test]
fn a_proof_sent_with_an_access_token_must_name_that_token() {
    let s = Server::start("pop-ath");
    let c = Cast::new(&s);
    let (_, mandate) = grant(&s, &c, &pr_request("vp@acme.example", 7));
    let mut req = read_pr(&mandate, 7);
    req["context"]["htm"] = json!("GET");
    req["context"]["htu"] = json!("https://gw.example.com/repos/acme/app/pulls/7");
    let htu = "https://gw.example.com/repos/acme/app/pulls/7";
    req["context"]["dpop"] = json!(proof("GET", htu, None));
    assert_eq!(reasons(&evaluate(&s, &c, &req)), ["pop_invalid"]);
    req["context"]["dpop"] = json!(proof("GET", htu, Some("gho_another_token")));
    assert_eq!(reasons(&evaluate(&s, &c, &req)), ["pop_invalid"]);
    req["context"]["dpop"] = json!(proof("GET", htu, Some("gho_still_valid")));
    let d = evaluate(&s, &c, &req);
    assert_eq!(d["decision"], true, "{d}");
}

#[test]
fn a_request_for_a_mandate_without_a_holder_key_is_refused_when_proofs_are_required() {
    let s = Server::start("pop-no-cnf");
    let c = Cast::new(&s);
    let mut req = procurement_request("vp@acme.example");
    req["agent"].as_object_mut().unwrap().remove("cnf");
    let (st, e) = s.call("POST", "/v1/requests", Some(&c.agent), Some(&req));
    assert_eq!(st, 400, "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("agent.cnf.jwk"),
        "{e}"
    );
}

#[test]
fn bearer_mode_is_an_explicit_setting_and_then_the_mandate_alone_is_enough() {
    let dir = temp_dir("pop-bearer");
    let s = Server::start_configured(dir, |cfg| {
        cfg.proof_of_possession = mandate_core::pop::Mode::Bearer;
    });
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (_, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let d = evaluate(&s, &c, &with_proof(&mandate, None));
    assert_eq!(d["decision"], true, "{d}");
}
