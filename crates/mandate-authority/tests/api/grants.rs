//! Requests, consent, lifecycle, roles and tenants.

use mandate_authority::auth::Role;
use serde_json::json;

use crate::support::*;

#[test]
fn a_request_is_pending_until_the_principal_approves_and_then_decides_allow() {
    let s = Server::start("grant");
    let c = Cast::new(&s);
    let (st, r) = s.call(
        "POST",
        "/v1/requests",
        Some(&c.agent),
        Some(&procurement_request("vp@acme.example")),
    );
    assert_eq!(st, 201);
    assert_eq!(r["state"], "pending");
    let id = r["id"].as_str().unwrap();
    let (st, shown) = s.call(
        "GET",
        &format!("/v1/requests/{id}"),
        Some(&c.principal),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(shown["consent_sha256"], r["consent_sha256"]);

    // Consent evidence must match what was shown.
    let (st, e) = s.call(
        "POST",
        &format!("/v1/requests/{id}/approve"),
        Some(&c.principal),
        Some(&json!({"consent_sha256": "0".repeat(64)})),
    );
    assert_eq!((st, e["code"].as_str()), (409, Some("consent_mismatch")));
    let (st, a) = s.call(
        "POST",
        &format!("/v1/requests/{id}/approve"),
        Some(&c.principal),
        Some(&json!({"consent_sha256": r["consent_sha256"]})),
    );
    assert_eq!(st, 200, "{a}");
    let mandate = a["mandate"].as_str().unwrap();

    // The agent fetches what was issued.
    let (_, again) = s.call("GET", &format!("/v1/requests/{id}"), Some(&c.agent), None);
    assert_eq!(again["mandate"], a["mandate"]);

    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let d = decide(&s, &c, &search_request(mandate));
    assert_eq!(d["decision"], true, "{d}");
    assert_eq!(d["context"]["chain"][0], a["mandate_id"]);
}

#[test]
fn another_principal_cannot_approve_and_a_denied_request_issues_nothing() {
    let s = Server::start("deny");
    let c = Cast::new(&s);
    let (_, r) = s.call(
        "POST",
        "/v1/requests",
        Some(&c.agent),
        Some(&procurement_request("vp@acme.example")),
    );
    let id = r["id"].as_str().unwrap();
    let other = s.token("someone@acme.example", Role::Principal, "acme");
    let (st, e) = s.call(
        "POST",
        &format!("/v1/requests/{id}/approve"),
        Some(&other),
        None,
    );
    assert_eq!(st, 403);
    // Told why: principals may approve, only not another principal's request.
    assert_eq!(
        e["detail"],
        "this request is addressed to another principal: only that principal or an admin may approve it"
    );
    let (_, e) = s.call(
        "POST",
        &format!("/v1/requests/{id}/approve"),
        Some(&c.agent),
        None,
    );
    assert_eq!(e["detail"], "role `agent` may not approve requests");
    let (st, d) = s.call(
        "POST",
        &format!("/v1/requests/{id}/deny"),
        Some(&c.principal),
        Some(&json!({"reason": "not now"})),
    );
    assert_eq!((st, d["state"].as_str()), (200, Some("denied")));
    let (st, _) = s.call(
        "POST",
        &format!("/v1/requests/{id}/approve"),
        Some(&c.principal),
        None,
    );
    assert_eq!(st, 409);
}

#[test]
fn an_agent_can_never_approve_amend_extend_resume_or_revoke_and_each_attempt_is_audited() {
    let s = Server::start("agent-refused");
    let c = Cast::new(&s);
    let (st, r) = s.call(
        "POST",
        "/v1/requests",
        Some(&c.agent),
        Some(&procurement_request("vp@acme.example")),
    );
    assert_eq!(st, 201);
    let rid = r["id"].as_str().unwrap();
    assert_eq!(
        s.call(
            "POST",
            &format!("/v1/requests/{rid}/approve"),
            Some(&c.agent),
            None
        )
        .0,
        403
    );
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    for (op, body) in [
        ("amend", json!({"hard_expiry": "2100-01-01T00:00:00Z"})),
        ("suspend", json!({})),
        ("resume", json!({})),
        ("revoke", json!({})),
    ] {
        let (st, e) = s.call(
            "POST",
            &format!("/v1/mandates/{id}/{op}"),
            Some(&c.agent),
            Some(&body),
        );
        assert_eq!(st, 403, "{op}: {e}");
    }
    assert_eq!(
        s.call("PUT", "/v1/facts", Some(&c.agent), Some(&json!({"x": 1})))
            .0,
        403
    );
    let conn = open_db(&s.data_dir());
    let refused: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE kind = 'refused'",
            mandate_store::params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refused, 6);
    let (_, m) = s.call("GET", &format!("/v1/mandates/{id}"), Some(&c.agent), None);
    assert_eq!(m["state"], "active");
}

#[test]
fn suspend_resume_revoke_are_idempotent_and_impossible_moves_conflict() {
    let s = Server::start("lifecycle");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (id, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let post = |op: &str| {
        s.call(
            "POST",
            &format!("/v1/mandates/{id}/{op}"),
            Some(&c.principal),
            Some(&json!({"reason": "test"})),
        )
    };
    assert_eq!(post("suspend").0, 200);
    assert_eq!(
        reasons(&decide(&s, &c, &search_request(&mandate))),
        ["suspended"]
    );
    assert_eq!(post("suspend").0, 200);
    assert_eq!(post("resume").0, 200);
    assert_eq!(decide(&s, &c, &search_request(&mandate))["decision"], true);
    let (st, first) = post("revoke");
    assert_eq!((st, first["state"].as_str()), (200, Some("revoked")));
    let (st, second) = post("revoke");
    assert_eq!((st, second["state"].as_str()), (200, Some("revoked")));
    assert_eq!(post("resume").0, 409);
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/amend"),
        Some(&c.principal),
        Some(&json!({"hard_expiry": "2098-01-01T00:00:00Z"})),
    );
    assert_eq!(st, 409);
    assert_eq!(
        reasons(&decide(&s, &c, &search_request(&mandate))),
        ["revoked"]
    );
}

#[test]
fn an_amendment_supersedes_the_old_revision() {
    let s = Server::start("amend");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (id, old) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let (st, a) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/amend"),
        Some(&c.admin),
        Some(&json!({"hard_expiry": "2098-01-01T00:00:00Z", "reason": "shorter"})),
    );
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        reasons(&decide(&s, &c, &search_request(&old))),
        ["superseded"]
    );
    assert_eq!(
        decide(&s, &c, &search_request(a["mandate"].as_str().unwrap()))["decision"],
        true
    );
}

#[test]
fn tenants_are_isolated_and_another_tenants_id_looks_like_none() {
    let s = Server::start("tenants");
    let c = Cast::new(&s);
    let (id, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let other_admin = s.token("admin@globex.example", Role::Admin, "globex");
    let other_enforcer = s.token("gw", Role::Enforcer, "globex");
    let (st_other, body_other) = s.call(
        "GET",
        &format!("/v1/mandates/{id}"),
        Some(&other_admin),
        None,
    );
    let (st_none, body_none) = s.call(
        "GET",
        "/v1/mandates/mnd-does-not-exist",
        Some(&other_admin),
        None,
    );
    assert_eq!(
        (st_other, &body_other["detail"]),
        (st_none, &body_none["detail"])
    );
    assert_eq!(st_other, 404);
    assert_eq!(
        s.call(
            "POST",
            &format!("/v1/mandates/{id}/revoke"),
            Some(&other_admin),
            None
        )
        .0,
        404
    );
    let (st, d) = s.call(
        "POST",
        "/access/v1/evaluation",
        Some(&other_enforcer),
        Some(&search_request(&mandate)),
    );
    assert_eq!(st, 200);
    assert_eq!(reasons(&d), ["unknown_mandate"]);
    let (_, m) = s.call("GET", &format!("/v1/mandates/{id}"), Some(&c.admin), None);
    assert_eq!(m["state"], "active");
}

#[test]
fn unauthenticated_and_forged_callers_are_refused() {
    let s = Server::start("authn");
    let (st, e) = s.call("GET", "/v1/facts", None, None);
    assert_eq!((st, e["code"].as_str()), (401, Some("unauthenticated")));
    let forged = mandate_authority::auth::mint(
        &agent_key(),
        "admin@acme.example",
        Role::Admin,
        "acme",
        mandate_authority::auth::now_secs(),
        600,
    );
    assert_eq!(s.call("GET", "/v1/facts", Some(&forged), None).0, 401);
    let (st, e) = s.call(
        "POST",
        "/v1/requests",
        Some(&s.token("a", Role::Agent, "acme")),
        Some(&json!({"principal": "x", "agent": {}})),
    );
    assert_eq!(st, 400);
    assert!(e["detail"].as_str().unwrap().contains("agent"), "{e}");
}

#[test]
fn a_revocation_cascades_to_a_child_derived_offline_and_registered() {
    let s = Server::start("cascade");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (id, root) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let spec: mandate_core::chain::ChildSpec = serde_json::from_value(json!({
        "agent": {"id": "urn:agent:procurement/search@1", "instance": "inst-s", "cnf": {"jwk": agent_key().public_jwk()}},
        "authorization_details": [{"type": "vendor_portal", "locations": ["https://vendor-portal.example.com/search"],
            "resource": {"category": "logistics", "region": "north-america"}, "actions": ["search"],
            "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}],
        "lifecycle": {"hard_expiry": "2098-01-01T00:00:00Z"},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })).unwrap();
    let now =
        mandate_core::timestamp::UnixTime::from_secs(mandate_authority::auth::now_secs()).unwrap();
    let child = mandate_core::chain::derive_child(
        &root,
        &agent_key(),
        &spec,
        mandate_core::id::MandateId::new(format!("{id}.child-1")).unwrap(),
        now,
    )
    .unwrap();
    let (st, r) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/children"),
        Some(&c.agent),
        Some(&json!({"mandate": child})),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(decide(&s, &c, &search_request(&child))["decision"], true);
    let (_, rv) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        Some(&c.principal),
        None,
    );
    let child_id = format!("{id}.child-1");
    assert_eq!(rv["changed"], json!([id, child_id]));
    let (_, m) = s.call(
        "GET",
        &format!("/v1/mandates/{child_id}"),
        Some(&c.admin),
        None,
    );
    assert_eq!(m["state"], "revoked");
    assert_eq!(
        reasons(&decide(&s, &c, &search_request(&child))),
        ["revoked"]
    );
}

#[test]
fn a_discovered_tool_is_granted_once_within_the_allowance_and_a_second_use_is_denied() {
    let s = Server::start("discovery");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let (st, e) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/discovery"),
        Some(&c.agent),
        Some(&json!({"type": "payments", "location": "https://pay.example.net/", "action": "pay"})),
    );
    assert_eq!(st, 403, "{e}");
    let (st, g) = s.call("POST", &format!("/v1/mandates/{id}/discovery"), Some(&c.agent), Some(&json!({"type": "sanctions_screening", "location": "https://screening.example.net/v2/screen", "action": "screen_entity"})));
    assert_eq!(st, 200, "{g}");
    let once = g["mandate"].as_str().unwrap();
    let screen = json!({
        "subject": {"type": "agent", "id": "a", "properties": {"mandate": once}},
        "action": {"name": "screen_entity"},
        "resource": {"type": "sanctions_screening", "id": "https://screening.example.net/v2/screen"}
    });
    let first = decide(&s, &c, &screen);
    assert_eq!(first["decision"], true, "{first}");
    assert_eq!(reasons(&decide(&s, &c, &screen)), ["one_time_used"]);
    // It cannot be delegated further.
    let spec: mandate_core::chain::ChildSpec = serde_json::from_value(json!({
        "agent": {"id": "urn:agent:sub@1", "instance": "i"},
        "authorization_details": [{"type": "sanctions_screening", "locations": ["https://screening.example.net/v2/screen"], "actions": ["screen_entity"]}],
        "lifecycle": {"hard_expiry": "2098-01-01T00:00:00Z", "one_time": true},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })).unwrap();
    let now =
        mandate_core::timestamp::UnixTime::from_secs(mandate_authority::auth::now_secs()).unwrap();
    assert!(
        mandate_core::chain::derive_child(
            once,
            &agent_key(),
            &spec,
            mandate_core::id::MandateId::new("mnd-x").unwrap(),
            now
        )
        .is_err()
    );
    // The consume endpoint answers the same way.
    let gid = g["mandate_id"].as_str().unwrap();
    let (st, e) = s.call(
        "POST",
        &format!("/v1/mandates/{gid}/consume"),
        Some(&c.enforcer),
        None,
    );
    assert_eq!((st, e["code"].as_str()), (409, Some("one_time_used")));
}

#[test]
fn no_allow_is_returned_for_a_decision_that_starts_after_the_revocation_was_acknowledged() {
    let s = std::sync::Arc::new(Server::start("race"));
    let c = std::sync::Arc::new(Cast::new(&s));
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (id, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let revoked_at = std::sync::Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (s, c, m, r) = (s.clone(), c.clone(), mandate.clone(), revoked_at.clone());
        workers.push(std::thread::spawn(move || {
            let mut late_allows = 0;
            let mut denies = 0;
            for _ in 0..60 {
                let started = std::time::Instant::now();
                let d = decide(&s, &c, &search_request(&m));
                let ack = *r.lock().unwrap();
                if d["decision"] == true && ack.is_some_and(|a| started > a) {
                    late_allows += 1;
                }
                if d["decision"] == false {
                    denies += 1;
                }
            }
            (late_allows, denies)
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        Some(&c.principal),
        None,
    );
    *revoked_at.lock().unwrap() = Some(std::time::Instant::now());
    assert_eq!(st, 200);
    let mut total_denies = 0;
    for w in workers {
        let (late, denies) = w.join().unwrap();
        assert_eq!(
            late, 0,
            "an allow was returned for a decision started after the revocation"
        );
        total_denies += denies;
    }
    assert!(
        total_denies > 0,
        "the decisions all finished before the revocation; the race was not exercised"
    );
    assert_eq!(
        reasons(&decide(&s, &c, &search_request(&mandate))),
        ["revoked"]
    );
}

#[test]
fn a_mandate_expires_at_its_hard_expiry_with_a_record_written_when_it_happens() {
    let s = Server::start("expiry");
    let c = Cast::new(&s);
    let mut req = procurement_request("vp@acme.example");
    let soon =
        mandate_core::timestamp::UnixTime::from_secs(mandate_authority::auth::now_secs() + 2)
            .unwrap();
    req["lifecycle"]["hard_expiry"] = json!(soon);
    let (id, _) = grant(&s, &c, &req);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, m) = s.call("GET", &format!("/v1/mandates/{id}"), Some(&c.admin), None);
        if m["state"] == "expired" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not expired: {m}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let conn = open_db(&s.data_dir());
    let at: i64 = conn
        .query_row(
            "SELECT at_ms FROM audit WHERE kind = 'expired' AND mandate_id = ?1",
            mandate_store::params![id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        at >= soon.secs() * 1000,
        "the expired record predates the expiry"
    );
}

#[test]
fn an_enterprise_idp_is_trusted_by_its_jwks_url_and_its_rotated_keys_are_picked_up() {
    use mandate_core::keys::{Algorithm, SigningKey};
    // The IdP: a JWKS served over loopback HTTP, whose key can be rotated.
    let jwks = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let idp_key = SigningKey::from_seed(Algorithm::EdDSA, [41; 32]).with_kid("idp-1");
    let rotated = SigningKey::from_seed(Algorithm::EdDSA, [42; 32]).with_kid("idp-2");
    *jwks.lock().unwrap() = json!({"keys": [idp_key.public_jwk()]}).to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let served = jwks.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let body = served.lock().unwrap().clone();
            let _ = std::io::Write::write_all(&mut stream, format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
        }
    });
    let dir = temp_dir("idp");
    let config = mandate_authority::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        trusted_issuer: vec![mandate_authority::config::TrustedIssuer {
            iss: "https://idp.acme.example".into(),
            jwks_file: None,
            jwks_url: Some(url),
            ..Default::default()
        }],
        ..mandate_authority::Config::default()
    };
    let state = mandate_authority::AppState::open(config).unwrap();
    let now = mandate_authority::auth::now_secs();
    let token = |key: &SigningKey| {
        let claims = json!({"iss": "https://idp.acme.example", "sub": "vp@acme.example", "aud": "mandate", "iat": now, "exp": now + 600, "role": "principal", "tenant": "acme"});
        mandate_core::jws::sign(key, "JWT", claims.to_string().as_bytes())
    };
    let caller = state.issuers.verify(&token(&idp_key), now).unwrap();
    assert_eq!(
        (caller.sub.as_str(), caller.role),
        ("vp@acme.example", Role::Principal)
    );
    assert_eq!(
        state
            .issuers
            .verify(&token(&rotated), now)
            .unwrap_err()
            .status,
        401
    );
    *jwks.lock().unwrap() = json!({"keys": [rotated.public_jwk()]}).to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(mandate_authority::refresh_issuer_keys(&state));
    assert!(state.issuers.verify(&token(&rotated), now).is_ok());
    assert_eq!(
        state
            .issuers
            .verify(&token(&idp_key), now)
            .unwrap_err()
            .status,
        401
    );
    // A plain-HTTP JWKS anywhere but loopback is refused before start.
    assert!(!mandate_authority::config::acceptable_jwks_url(
        "http://idp.example.com/jwks"
    ));
    assert!(mandate_authority::config::acceptable_jwks_url(
        "https://idp.example.com/jwks"
    ));
}

#[test]
fn the_openapi_document_describes_every_route() {
    let s = Server::start("openapi");
    let (st, doc) = s.call("GET", "/openapi.json", None, None);
    assert_eq!(st, 200);
    let paths = doc["paths"].as_object().unwrap();
    let source = include_str!("../../src/http/mod.rs");
    let mut routes = 0;
    for after in source.split(".route(").skip(1) {
        let path = after.split('"').nth(1).unwrap();
        assert!(paths.contains_key(path), "openapi.json lacks {path}");
        routes += 1;
    }
    assert_eq!(
        routes,
        paths.len(),
        "openapi.json names a route the router does not have"
    );
    let (st, cfg) = s.call("GET", "/.well-known/authzen-configuration", None, None);
    assert_eq!(st, 200);
    assert_eq!(
        cfg["access_evaluation_endpoint"],
        "https://mandate.test/access/v1/evaluation"
    );
    let (st, m) = s.call("GET", "/metrics", None, None);
    assert_eq!(st, 200);
    assert!(
        m.as_str()
            .unwrap()
            .contains("# TYPE mandate_http_requests counter"),
        "{m}"
    );
}

#[test]
fn an_oversized_body_is_refused_with_413() {
    let s = Server::start("limit");
    let c = Cast::new(&s);
    let big = json!({"blob": "x".repeat(300 * 1024)});
    let (st, e) = s.call("PUT", "/v1/facts", Some(&c.admin), Some(&big));
    assert_eq!((st, e["code"].as_str()), (413, Some("too_large")));
}

#[test]
fn a_batch_of_evaluations_follows_its_semantics() {
    let s = Server::start("batch");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (_, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let batch = |semantic: &str| {
        // One request at the enforcement point, so one proof for the batch.
        let base = as_leaf(search_request(&mandate));
        json!({
            "subject": base["subject"], "resource": base["resource"], "context": base["context"],
            "evaluations": [{"action": {"name": "delete_vendor"}}, {"action": {"name": "search"}}, {"action": {"name": "view_profile"}}],
            "options": {"evaluations_semantic": semantic}
        })
    };
    let run = |semantic: &str| {
        let (st, r) = s.call(
            "POST",
            "/access/v1/evaluations",
            Some(&c.enforcer),
            Some(&batch(semantic)),
        );
        assert_eq!(st, 200, "{r}");
        r["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"] == true)
            .collect::<Vec<_>>()
    };
    assert_eq!(run("execute_all"), [false, true, true]);
    assert_eq!(run("deny_on_first_deny"), [false]);
    assert_eq!(run("permit_on_first_permit"), [false, true]);
}

#[test]
fn an_identity_providers_jwks_that_also_holds_rsa_keys_loads_and_its_ec_key_verifies() {
    use mandate_core::keys::{Algorithm, SigningKey};
    let idp_key = SigningKey::from_seed(Algorithm::ES256, [21; 32]);
    let dir = temp_dir("idp-rsa");
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("idp-jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa-2026", "use": "sig", "alg": "RS256", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "kid": "enc-1", "use": "enc", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
            idp_key.public_jwk(),
        ]})
        .to_string(),
    )
    .unwrap();
    let config = mandate_authority::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        trusted_issuer: vec![mandate_authority::config::TrustedIssuer {
            iss: "https://idp.acme.example".into(),
            jwks_file: Some(jwks),
            jwks_url: None,
            ..Default::default()
        }],
        ..mandate_authority::Config::default()
    };
    // Before: "keys[0]: missing field `crv`" and no start.
    let state = mandate_authority::AppState::open(config).unwrap();
    let now = mandate_authority::auth::now_secs();
    let claims = json!({"iss": "https://idp.acme.example", "sub": "vp@acme.example", "aud": "mandate", "iat": now, "exp": now + 600, "role": "principal", "tenant": "acme"});
    let token = mandate_core::jws::sign(&idp_key, "JWT", claims.to_string().as_bytes());
    assert!(state.issuers.verify(&token, now).is_ok());
}

#[test]
fn caller_tokens_shaped_as_identity_providers_issue_them_are_accepted_and_others_are_not() {
    let s = Server::start("idp-shapes");
    let local = mandate_authority::state::load_or_create_key(
        &mandate_authority::state::issuer_key_path(&s.data_dir()),
    )
    .unwrap();
    let now = mandate_authority::auth::now_secs();
    let sign = |typ: Option<&str>, aud: serde_json::Value, extra: serde_json::Value| {
        let mut claims = json!({"iss": "mandate-local", "sub": "admin@acme.example", "aud": aud,
            "iat": now, "exp": now + 600, "role": "admin", "tenant": "acme"});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut header = json!({"alg": local.algorithm().as_str(), "kid": local.kid()});
        if let Some(t) = typ {
            header["typ"] = json!(t);
        }
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let sig = local.sign(input.as_bytes());
        format!("{input}.{}", b64.encode(sig))
    };
    let status = |token: &str| s.call("GET", "/v1/facts", Some(token), None).0;
    // `aud` as a list that names us; `typ` absent, `JWT` or `at+jwt`.
    assert_eq!(
        status(&sign(
            Some("at+jwt"),
            json!(["api://other", "mandate"]),
            json!({})
        )),
        200
    );
    assert_eq!(status(&sign(None, json!("mandate"), json!({}))), 200);
    assert_eq!(
        status(&sign(Some("JWT"), json!(["mandate"]), json!({}))),
        200
    );
    // Not for us, not a token type, or not yet valid: 401.
    assert_eq!(
        status(&sign(Some("at+jwt"), json!(["api://other"]), json!({}))),
        401
    );
    assert_eq!(
        status(&sign(Some("secevent+jwt"), json!("mandate"), json!({}))),
        401
    );
    assert_eq!(
        status(&sign(None, json!("mandate"), json!({"nbf": now + 3600}))),
        401
    );
}
