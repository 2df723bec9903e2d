//! Proof of possession at the gateway, over a real socket: a copied mandate
//! is useless without the holder's key, a proof is good for one request, and
//! an independent peer (PyJWT) makes proofs the gateway accepts.

use std::process::Command;

use super::*;

fn read_with(gateway: SocketAddr, mandate: &str, pr: u32, dpop: Option<String>) -> (u16, Value) {
    let mut headers = vec![
        ("Mandate", mandate.to_owned()),
        ("Authorization", "Bearer gho_still_valid".into()),
        (NO_PROOF, "1".into()),
    ];
    if let Some(p) = dpop {
        headers.push(("DPoP", p));
    }
    http(
        gateway,
        "GET",
        &format!("/repos/acme/app/pulls/{pr}"),
        &headers,
        "",
    )
}

fn url(gateway: SocketAddr, pr: u32) -> String {
    format!("http://{gateway}/repos/acme/app/pulls/{pr}")
}

#[test]
fn a_stolen_mandate_without_the_holder_key_is_useless_at_the_gateway() {
    let dir = temp("pop-gateway");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(321));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
    );
    let g = gateway.addr;
    let token = Some("gho_still_valid");

    // The mandate alone.
    let (st, body) = read_with(g, &mandate, 321, None);
    assert_eq!((st, &body["reasons"]), (403, &json!(["pop_missing"])));

    // A thief's proof, with the thief's own key.
    let thief =
        mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [7; 32]);
    let now = mandate_core::timestamp::UnixTime::from_secs(now_secs()).unwrap();
    let forged = mandate_core::pop::make_proof(&thief, "GET", &url(g, 321), token, "thief-1", now);
    let (st, body) = read_with(g, &mandate, 321, Some(forged));
    assert_eq!((st, &body["reasons"]), (403, &json!(["pop_invalid"])));

    // The holder's proof, for another path of the same gateway.
    let elsewhere = proof("GET", &url(g, 999), token);
    let (st, body) = read_with(g, &mandate, 321, Some(elsewhere));
    assert_eq!((st, &body["reasons"]), (403, &json!(["pop_invalid"])));

    // The holder's proof for this request: allowed, and only once.
    let good = proof("GET", &url(g, 321), token);
    let (st, body) = read_with(g, &mandate, 321, Some(good.clone()));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["number"], 321);
    let (st, body) = read_with(g, &mandate, 321, Some(good));
    assert_eq!((st, &body["reasons"]), (403, &json!(["pop_replayed"])));

    // An old proof (a log line from two minutes ago).
    let old =
        mandate_core::pop::make_proof(&holder(), "GET", &url(g, 321), token, "old", now.plus(-120));
    let (st, body) = read_with(g, &mandate, 321, Some(old));
    assert_eq!((st, &body["reasons"]), (403, &json!(["pop_stale"])));

    // Two proofs in two headers are not one proof.
    let mut two = vec![
        ("Mandate", mandate.clone()),
        ("Authorization", "Bearer gho_still_valid".into()),
        (NO_PROOF, "1".into()),
    ];
    two.push(("DPoP", proof("GET", &url(g, 321), token)));
    two.push(("DPoP", proof("GET", &url(g, 321), token)));
    let (st, body) = http(g, "GET", "/repos/acme/app/pulls/321", &two, "");
    assert_eq!((st, &body["reasons"]), (403, &json!(["pop_invalid"])));

    // After the merge, a fresh proof proves possession of an ended mandate.
    merge(authority.addr, 321, "delivery-pop");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, body) = read_with(g, &mandate, 321, Some(proof("GET", &url(g, 321), token)));
        if st == 403 {
            assert_eq!(body["reasons"], json!(["completed"]), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still allowed 10 s after the merge"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.stop();
}

#[test]
fn a_proof_made_by_pyjwt_from_the_holder_key_is_accepted_by_the_gateway() {
    let dir = temp("pop-pyjwt");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(77));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
    );
    let private = serde_json::to_string(&holder().to_private_jwk()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_dpop.py");
    let make = |u: &str| {
        let out = Command::new("python3")
            .args([script, &private, "GET", u, "gho_still_valid"])
            .output()
            .expect("python3 with PyJWT (scripts/test installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (st, body) = read_with(
        gateway.addr,
        &mandate,
        77,
        Some(make(&url(gateway.addr, 77))),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["number"], 77);
    // PyJWT's proof for another URL is refused like ours.
    let (st, body) = read_with(
        gateway.addr,
        &mandate,
        77,
        Some(make("http://elsewhere.example/x")),
    );
    assert_eq!((st, &body["reasons"]), (403, &json!(["pop_invalid"])));
    gw.stop();
}
