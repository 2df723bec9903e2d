//! Independent peers, written from the specifications, against the
//! authority over a real socket.

use crate::support::*;

#[test]
fn an_independent_ssf_receiver_finds_no_deviation() {
    let s = Server::start("ssf-peer");
    let c = Cast::new(&s);
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    run_peer(
        "ssf_receiver.py",
        &[
            &format!("http://{}", s.addr),
            &c.enforcer,
            &c.principal,
            &id,
        ],
    );
}

#[test]
fn an_independent_authzen_client_finds_no_deviation() {
    let s = Server::start("authzen-peer");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &serde_json::json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (_, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let private = serde_json::to_string(&agent_key().to_private_jwk()).unwrap();
    run_peer(
        "authzen_client.py",
        &[
            &format!("http://{}", s.addr),
            &c.enforcer,
            &mandate,
            &private,
        ],
    );
}

#[test]
fn prometheus_clients_own_parser_reads_the_metrics() {
    let s = Server::start("metrics-peer");
    let c = Cast::new(&s);
    let (_, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    // A deny whose reason carries a condition id (no facts yet:
    // `condition_error:program-active`): counted by its family.
    let _ = decide(&s, &c, &search_request(&mandate));
    let (st, _) = s.call("GET", "/v1/mandates/nope", Some(&c.admin), None);
    assert_eq!(st, 404);
    let out = run_peer("parse_metrics.py", &[&format!("http://{}/metrics", s.addr)]);
    let families: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for name in [
        "mandate_decisions",
        "mandate_decision_seconds",
        "mandate_http_requests",
        "mandate_http_request_seconds",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(families.get(name).is_some(), "{name} missing: {families}");
    }
    let http = families["mandate_http_requests"].as_array().unwrap();
    assert!(
        http.iter()
            .any(|s| s[1]["route"] == "/v1/mandates/{id}" && s[1]["status"] == "404"),
        "{http:?}"
    );
    let decisions = families["mandate_decisions"].as_array().unwrap();
    assert!(
        decisions
            .iter()
            .any(|s| s[1]["reason"] == "condition_error"),
        "{decisions:?}"
    );
}

/// Schemathesis (property-based testing from the served OpenAPI document):
/// as an admin, an enforcer and an agent, no generated request gets a 5xx,
/// an undocumented status code, an undocumented content type, or a body
/// its documented schema does not admit.
#[test]
fn schemathesis_finds_no_server_error_and_no_answer_that_contradicts_the_document() {
    let s = Server::start("schemathesis");
    let c = Cast::new(&s);
    for token in [&c.admin, &c.enforcer, &c.agent] {
        // Its state (`.schemathesis/`) goes to the server's scratch directory.
        let out = std::process::Command::new("st")
            .current_dir(s.data_dir())
            .args([
                "run",
                &format!("http://{}/openapi.json", s.addr),
                "--url",
                &format!("http://{}", s.addr),
                "-H",
                &format!("Authorization: Bearer {token}"),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "10",
                "--seed",
                "20261130",
                "--no-color",
            ])
            .output()
            .expect("schemathesis (`st`; scripts/test installs it with pip)");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
