//! Independent peers, written from the specifications, against the
//! authority over a real socket.

use crate::support::*;

#[test]
fn an_independent_ssf_receiver_finds_no_deviation() {
    let s = Server::start("ssf-peer");
    let c = Cast::new(&s);
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/ssf_receiver.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            &format!("http://{}", s.addr),
            &c.enforcer,
            &c.principal,
            &id,
        ])
        .output()
        .expect("python3 with PyJWT");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
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
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/authzen_client.py"
    );
    let private = serde_json::to_string(&agent_key().to_private_jwk()).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            script,
            &format!("http://{}", s.addr),
            &c.enforcer,
            &mandate,
            &private,
        ])
        .output()
        .expect("python3 with PyJWT");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
