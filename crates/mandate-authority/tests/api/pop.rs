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

/// The cast, with the contingency program active and a procurement
/// mandate granted: (cast, mandate).
fn active_procurement_mandate(s: &Server) -> (Cast, String) {
    active_mandate(s, &procurement_request("vp@acme.example"))
}

/// The cast, with the contingency program active and `request` granted.
fn active_mandate(s: &Server, request: &Value) -> (Cast, String) {
    let c = Cast::new(s);
    set_facts(
        s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (_, mandate) = grant(s, &c, request);
    (c, mandate)
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
    let (c, mandate) = active_procurement_mandate(&s);

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
    let (c, mandate) = active_procurement_mandate(&s);
    let d = evaluate(&s, &c, &with_proof(&mandate, None));
    assert_eq!(d["decision"], true, "{d}");
}

// ---------------------------------------------------------------------------
// Token exchange (RFC 8693) and introspection (RFC 7662).

const TOKEN_URL: &str = "https://mandate.test/oauth/token";

fn form(pairs: &[(&str, &str)]) -> String {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        f.append_pair(k, v);
    }
    f.finish()
}

/// Exchanges `mandate` with a proof by `dpop` (the holder's when `None`).
fn exchange(
    s: &Server,
    mandate: &str,
    extra: &[(&str, &str)],
    dpop: Option<String>,
) -> (u16, Value) {
    let ty = if mandate.contains('~') {
        "urn:mandate:params:oauth:token-type:mandate-chain"
    } else {
        "urn:ietf:params:oauth:token-type:jwt"
    };
    let mut pairs = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", mandate),
        ("subject_token_type", ty),
    ];
    pairs.extend_from_slice(extra);
    let proof = dpop.unwrap_or_else(|| proof("POST", TOKEN_URL, None));
    s.raw(
        "POST",
        "/oauth/token",
        &[("DPoP".into(), proof)],
        &form(&pairs),
    )
}

fn introspect(s: &Server, c: &Cast, token: &str) -> Value {
    let (st, r) = s.raw(
        "POST",
        "/oauth/introspect",
        &[("Authorization".into(), format!("Bearer {}", c.enforcer))],
        &form(&[("token", token)]),
    );
    assert_eq!(st, 200, "{r}");
    r
}

fn payload(jwt: &str) -> Value {
    mandate_core::jws::unverified_payload(jwt).unwrap()
}

#[test]
fn the_metadata_lists_the_token_and_introspection_endpoints() {
    let s = Server::start("oauth-meta");
    let (st, m) = s.call("GET", "/.well-known/oauth-authorization-server", None, None);
    assert_eq!(st, 200);
    assert_eq!(m["issuer"], "https://mandate.test");
    assert_eq!(m["token_endpoint"], TOKEN_URL);
    assert_eq!(
        m["introspection_endpoint"],
        "https://mandate.test/oauth/introspect"
    );
    assert_eq!(
        m["grant_types_supported"],
        json!(["urn:ietf:params:oauth:grant-type:token-exchange"])
    );
    assert_eq!(
        m["dpop_signing_alg_values_supported"],
        json!(["EdDSA", "ES256"])
    );
}

#[test]
fn a_mandate_is_exchanged_for_a_short_dpop_bound_token_that_dies_with_the_mission() {
    let s = Server::start("oauth-exchange");
    let c = Cast::new(&s);
    let (id, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));

    // Without a proof, or with another key's: refused.
    let (st, e) = exchange(&s, &mandate, &[], Some(String::new()));
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{e}"
    );
    let thief = SigningKey::from_seed(Algorithm::EdDSA, [9; 32]);
    let forged = mandate_core::pop::make_proof(&thief, "POST", TOKEN_URL, None, "t", now());
    let (st, e) = exchange(&s, &mandate, &[], Some(forged));
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{e}"
    );

    let (st, t) = exchange(&s, &mandate, &[], None);
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(
        t["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let token = t["access_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    let claims = payload(token);
    assert_eq!(claims["mandate_id"], json!(id));
    assert_eq!(
        claims["cnf"]["jkt"],
        json!(agent_key().public_jwk().thumbprint())
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 300, "{claims}");
    assert_eq!(claims["authorization_details"][0]["type"], "vendor_portal");

    let active = introspect(&s, &c, token);
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["mandate_id"], json!(id));

    // Suspended: inactive at once, and no new token.
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/suspend"),
        Some(&c.principal),
        Some(&json!({})),
    );
    assert_eq!(st, 200);
    assert_eq!(introspect(&s, &c, token), json!({"active": false}));
    let (st, e) = exchange(&s, &mandate, &[], None);
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("suspended"),
        "{e}"
    );
    // Resumed: active again (its exp still bounds it).
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/resume"),
        Some(&c.principal),
        Some(&json!({})),
    );
    assert_eq!(st, 200);
    assert_eq!(introspect(&s, &c, token)["active"], true);
    // The mission's terminal event: inactive, and no new token.
    let (st, _) = s.call("POST", "/v1/events", Some(&c.events), Some(&json!({
        "id": "crm-oauth-1", "type": "contingency_program.cancelled", "subject": "program:contingency-q4"
    })));
    assert_eq!(st, 202);
    assert_eq!(introspect(&s, &c, token), json!({"active": false}));
    let (st, e) = exchange(&s, &mandate, &[], None);
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );

    // Another tenant's enforcer learns nothing about it.
    let other = s.token(
        "gateway-9",
        mandate_authority::auth::Role::Enforcer,
        "globex",
    );
    let (_, r) = s.raw(
        "POST",
        "/oauth/introspect",
        &[("Authorization".into(), format!("Bearer {other}"))],
        &form(&[("token", token)]),
    );
    assert_eq!(r, json!({"active": false}));
}

#[test]
fn a_token_exchange_may_narrow_but_never_widen_and_a_revoked_mandate_gets_nothing() {
    let s = Server::start("oauth-narrow");
    let c = Cast::new(&s);
    let (id, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let narrow = json!([{"type": "vendor_portal", "locations": ["https://vendor-portal.example.com/search"],
        "resource": {"category": "logistics", "region": "north-america"}, "actions": ["search"],
        "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}]).to_string();
    let (st, t) = exchange(
        &s,
        &mandate,
        &[
            ("authorization_details", &narrow),
            ("resource", "https://vendor-portal.example.com/search"),
        ],
        None,
    );
    assert_eq!(st, 200, "{t}");
    let claims = payload(t["access_token"].as_str().unwrap());
    assert_eq!(
        claims["authorization_details"][0]["actions"],
        json!(["search"])
    );
    assert_eq!(
        claims["aud"],
        json!(["https://vendor-portal.example.com/search"])
    );

    let wide = json!([{"type": "vendor_portal", "locations": ["https://vendor-portal.example.com"],
        "resource": {"category": "logistics", "region": "north-america"}, "actions": ["search", "delete_vendor"],
        "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}]).to_string();
    let (st, e) = exchange(&s, &mandate, &[("authorization_details", &wide)], None);
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_authorization_details")),
        "{e}"
    );
    let (st, e) = exchange(
        &s,
        &mandate,
        &[("resource", "https://bank.example.com/")],
        None,
    );
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_target")),
        "{e}"
    );

    // A parameter twice is malformed (RFC 6749 §3.2).
    let (st, e) = exchange(
        &s,
        &mandate,
        &[
            ("resource", "https://vendor-portal.example.com/search"),
            ("resource", "https://vendor-portal.example.com/search"),
        ],
        None,
    );
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );

    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        Some(&c.principal),
        Some(&json!({})),
    );
    assert_eq!(st, 200);
    let (st, e) = exchange(&s, &mandate, &[], None);
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert!(
        e["error_description"].as_str().unwrap().contains("revoked"),
        "{e}"
    );
}

#[test]
fn authlib_exchanges_a_mandate_and_pyjwt_verifies_the_token_as_a_resource_server() {
    let s = Server::start("oauth-authlib");
    let c = Cast::new(&s);
    let (id, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let private = serde_json::to_string(&agent_key().to_private_jwk()).unwrap();
    let out = run_peer(
        "authlib_exchange.py",
        &[&format!("http://{}", s.addr), &mandate, &private],
    );
    let r: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(r["mandate_id"], json!(id));
    assert_eq!(r["jkt"], json!(agent_key().public_jwk().thumbprint()));
    // The token Authlib obtained is live for resource servers that ask.
    assert_eq!(
        introspect(&s, &c, r["access_token"].as_str().unwrap())["active"],
        true
    );
}

#[test]
fn with_nonces_on_the_token_endpoint_asks_for_its_nonce_first() {
    let s = Server::start_configured(temp_dir("oauth-nonce"), |cfg| cfg.dpop_nonce = true);
    let c = Cast::new(&s);
    let (_, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let body = form(&[
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", &mandate),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ]);
    // The first attempt learns the nonce from the answer's header.
    let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
    use std::io::{Read as _, Write as _};
    write!(conn, "POST /oauth/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nDPoP: {}\r\nContent-Length: {}\r\n\r\n{body}",
        proof("POST", TOKEN_URL, None), body.len()).unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    assert!(out.contains("use_dpop_nonce"), "{out}");
    let nonce = out
        .lines()
        .find_map(|l| l.strip_prefix("dpop-nonce: "))
        .expect("a DPoP-Nonce header")
        .trim()
        .to_owned();
    let with_nonce = mandate_core::pop::make_proof_with_nonce(
        &agent_key(),
        "POST",
        TOKEN_URL,
        None,
        Some(&nonce),
        "n-1",
        now(),
    );
    let (st, t) = exchange(&s, &mandate, &[], Some(with_nonce));
    assert_eq!(st, 200, "{t}");
}

#[test]
fn an_agent_runtime_asks_which_actions_it_may_take_on_a_resource_now() {
    let s = Server::start("action-search");
    let (c, mandate) = active_procurement_mandate(&s);
    let (st, cfg) = s.call("GET", "/.well-known/authzen-configuration", None, None);
    assert_eq!(st, 200);
    assert_eq!(
        cfg["search_action_endpoint"],
        "https://mandate.test/access/v1/search/action"
    );
    let search = |proof: Option<String>| {
        let mut q = with_proof(&mandate, proof);
        q.as_object_mut().unwrap().remove("action");
        let (st, r) = s.call(
            "POST",
            "/access/v1/search/action",
            Some(&c.enforcer),
            Some(&q),
        );
        assert_eq!(st, 200, "{r}");
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    // The procurement mandate's actions on the vendor portal, all allowed now.
    assert_eq!(
        search(Some(proof("POST", URL, None))),
        ["search", "view_profile", "initiate_onboarding"]
    );
    // Without the holder's proof: nothing.
    assert!(search(None).is_empty());
    // Once the program is cancelled (a failed condition): nothing.
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "cancelled"}}}),
    );
    assert!(search(Some(proof("POST", URL, None))).is_empty());
}

/// The holder's header on a proof signed by `thief` (so it passes the key
/// match and fails only at the signature).
fn spliced(thief: &SigningKey, jti: &str) -> String {
    let honest = proof("POST", URL, None);
    let forged = mandate_core::pop::make_proof(thief, "POST", URL, None, jti, now());
    let head = honest.split('.').next().unwrap();
    let rest = forged.split_once('.').unwrap().1;
    format!("{head}.{rest}")
}

#[test]
fn concurrent_decisions_whose_proofs_are_checked_together_each_get_their_own_answer() {
    // The signatures of decisions arriving together are verified as one
    // batch; a forged one among them must fail alone, and the honest ones
    // beside it must pass.
    let s = Server::start("pop-batch");
    let (c, mandate) = active_procurement_mandate(&s);
    let thief = SigningKey::from_seed(Algorithm::EdDSA, [9; 32]);
    let answers: Vec<(bool, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let (s, c, mandate, thief) = (&s, &c, &mandate, &thief);
                scope.spawn(move || {
                    (0..12)
                        .map(|i| {
                            let honest = (t + i) % 3 != 0;
                            let p = if honest {
                                proof("POST", URL, None)
                            } else if i % 2 == 0 {
                                spliced(thief, &format!("forged-{t}-{i}"))
                            } else {
                                // The holder's proof with one signature byte changed.
                                let good = proof("POST", URL, None);
                                let (signed, sig) = good.rsplit_once('.').unwrap();
                                let flipped = if sig.starts_with('A') { "B" } else { "A" };
                                format!("{signed}.{flipped}{}", &sig[1..])
                            };
                            (honest, evaluate(s, c, &with_proof(mandate, Some(p))))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(answers.len(), 72);
    for (honest, d) in answers {
        if honest {
            assert_eq!(d["decision"], true, "{d}");
        } else {
            assert_eq!(reasons(&d), ["pop_invalid"], "{d}");
        }
    }
    // /metrics says how each of the 72 signatures was checked.
    let (st, m) = s.call("GET", "/metrics", None, None);
    assert_eq!(st, 200);
    let text = m.as_str().unwrap();
    let count = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    let at_once = count(r#"mandate_proof_signatures_total{checked="at_once"}"#);
    let alone = count(r#"mandate_proof_signatures_total{checked="thread_alone"}"#);
    let batched = count(r#"mandate_proof_signatures_total{checked="batch"}"#);
    let batches = count("mandate_proof_signature_batches_total");
    let rechecked = count("mandate_proof_signatures_rechecked_total");
    assert_eq!(at_once + alone + batched, 72, "{text}");
    assert!(batched >= 2 * batches && rechecked <= batched, "{text}");
}

/// The authority ends no agent's TLS connection to an enforcement point, so
/// it never sees the certificate a certificate-bound mandate names: such a
/// mandate is refused at the AuthZEN endpoint whatever the request says it
/// saw, and is not exchanged for a (weaker) DPoP-bound token, even with a
/// valid proof by its holder key.
#[test]
fn a_certificate_bound_mandate_is_neither_decided_nor_exchanged_by_the_authority() {
    let s = Server::start("pop-certificate");
    let thumbprint = mandate_core::hash::sha256_b64(b"the agent's certificate");
    let mut request = procurement_request("vp@acme.example");
    request["agent"]["cnf"]["x5t#S256"] = json!(thumbprint);
    let (c, mandate) = active_mandate(&s, &request);

    let mut req = with_proof(&mandate, Some(proof("POST", URL, None)));
    req["context"]["x5t#S256"] = json!(thumbprint);
    let d = evaluate(&s, &c, &req);
    assert_eq!(d["decision"], false, "{d}");
    assert_eq!(reasons(&d), ["pop_certificate_missing"]);

    let (st, e) = exchange(&s, &mandate, &[], None);
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert!(
        e["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("certificate-bound")),
        "{e}"
    );
}
