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

/// An agent flooding the gateway with fresh proofs fills its replay cache:
/// from then on a new proof is refused under its own name, never admitted
/// without being remembered, and an admitted one still cannot be replayed.
#[test]
fn a_gateway_whose_replay_cache_is_full_refuses_new_proofs_by_name() {
    let dir = temp("pop-replay-full");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(321));
    let (gateway, _gw) = start_gateway_with(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
        |c| c.replay_capacity = 2,
    );
    let g = gateway.addr;
    let token = Some("gho_still_valid");
    let first = proof("GET", &url(g, 321), token);
    for p in [first.clone(), proof("GET", &url(g, 321), token)] {
        let (st, body) = read_with(g, &mandate, 321, Some(p));
        assert_eq!(st, 200, "{body}");
    }
    let third = proof("GET", &url(g, 321), token);
    let (st, body) = read_with(g, &mandate, 321, Some(third.clone()));
    assert_eq!(
        (st, &body["reasons"]),
        (403, &json!(["pop_replay_cache_full"]))
    );
    // Refused, so not remembered as used: still refused for the same reason.
    let (st, body) = read_with(g, &mandate, 321, Some(third));
    assert_eq!(
        (st, &body["reasons"]),
        (403, &json!(["pop_replay_cache_full"]))
    );
    let (st, body) = read_with(g, &mandate, 321, Some(first));
    assert_eq!((st, &body["reasons"]), (403, &json!(["pop_replayed"])));
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

#[test]
fn a_gateway_that_requires_nonces_hands_one_out_and_accepts_only_proofs_made_after() {
    let dir = temp("pop-nonce");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(55));
    let (gateway, gw) = start_gateway_with(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
        |c| c.dpop_nonce = true,
    );
    let g = gateway.addr;
    let u = url(g, 55);
    // Sends one request with `proof`; the status, the `DPoP-Nonce` header
    // and the `WWW-Authenticate` header.
    let send = |proof: &str| {
        let mut s = TcpStream::connect(g).unwrap();
        write!(
            s,
            "GET /repos/acme/app/pulls/55 HTTP/1.1\r\nHost: {g}\r\nConnection: close\r\nMandate: {mandate}\r\n{INSTANCE}: inst-1\r\nAuthorization: Bearer gho_still_valid\r\nDPoP: {proof}\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let head = out.split("\r\n\r\n").next().unwrap().to_owned();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            })
        };
        (status, header("dpop-nonce"), header("www-authenticate"))
    };
    // A proof made without the gateway's nonce (in advance, say).
    let (st, nonce, challenge) = send(&proof("GET", &u, Some("gho_still_valid")));
    assert_eq!(st, 401);
    assert!(challenge.unwrap().contains("use_dpop_nonce"));
    let nonce = nonce.expect("the nonce to use");
    // Made with it: allowed, and the answer carries the nonce to use next.
    let mut jti = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut jti);
    let now = mandate_core::timestamp::UnixTime::from_secs(now_secs()).unwrap();
    let p = mandate_core::pop::make_proof_with_nonce(
        &holder(),
        "GET",
        &u,
        Some("gho_still_valid"),
        Some(&nonce),
        &hex::encode(jti),
        now,
    );
    let (st, next, _) = send(&p);
    assert_eq!(st, 200);
    assert!(next.is_some());
    // A nonce the gateway never issued.
    let forged = mandate_core::pop::Nonces::new([1; 32]).current(now);
    let p = mandate_core::pop::make_proof_with_nonce(
        &holder(),
        "GET",
        &u,
        Some("gho_still_valid"),
        Some(&forged),
        "forged-1",
        now,
    );
    assert_eq!(send(&p).0, 401);
    gw.stop();
}

#[test]
fn the_gateway_forwards_as_a_proxy_does_without_hop_by_hop_headers_or_the_proof() {
    let dir = temp("hop-by-hop");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(8));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
    );
    let (st, body) = http(
        gateway.addr,
        "GET",
        "/repos/acme/app/pulls/8",
        &[
            ("Mandate", mandate.clone()),
            ("Authorization", "Bearer gho_still_valid".into()),
            ("Connection", "x-private-hop, keep-alive".into()),
            ("X-Private-Hop", "for the gateway only".into()),
            ("Proxy-Authorization", "Basic c2VjcmV0".into()),
            ("TE", "trailers".into()),
            ("X-Forwarded-For", "203.0.113.9".into()),
        ],
        "",
    );
    assert_eq!(st, 200, "{body}");
    let seen = &body["seen_headers"];
    for gone in [
        "x-private-hop",
        "proxy-authorization",
        "te",
        "keep-alive",
        "mandate",
        "dpop",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }
    assert_eq!(seen["via"], "1.1 mandate-gateway");
    // The upstream is named as the request's host, not the gateway.
    assert_eq!(seen["host"], upstream.addr.to_string(), "{seen}");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert!(
        seen["forwarded"]
            .as_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=http"),
        "{seen}"
    );
    // The access token is the upstream's business: it goes through.
    assert_eq!(seen["authorization"], "Bearer gho_still_valid");
    gw.stop();
}

#[test]
fn the_gateway_reads_its_token_file_again_when_it_changes() {
    let dir = temp("token-file");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(66));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
    );
    let until = |want: bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while gw.replica.is_fresh() != want {
            assert!(
                Instant::now() < deadline,
                "replica never became fresh={want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The token is replaced by one the authority refuses (as an expired
    // one would be): the gateway loses contact and denies as stale.
    std::fs::write(dir.join("enforcer.token"), "not-a-token").unwrap();
    until(false);
    let (st, body) = read_pr(gateway.addr, &mandate, 66);
    assert_eq!((st, &body["reasons"]), (403, &json!(["state_stale"])));
    // Whatever refreshes it writes a new one: used without a restart.
    std::fs::write(
        dir.join("enforcer.token"),
        token(&dir, "gateway-1", Role::Enforcer),
    )
    .unwrap();
    until(true);
    let (st, body) = read_pr(gateway.addr, &mandate, 66);
    assert_eq!(st, 200, "{body}");
    gw.stop();
}

/// Requests arriving together have their proofs' signatures checked as one
/// batch: a forged proof hidden among honest ones (the holder's header on a
/// thief's signature, or the holder's proof with one signature byte
/// changed) is refused alone, and every honest one beside it goes through.
#[test]
fn a_forged_proof_among_concurrent_honest_ones_is_refused_alone_at_the_gateway() {
    let dir = temp("pop-gateway-batch");
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
    let thief =
        mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [7; 32]);
    let answers: Vec<(bool, u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let (mandate, thief) = (&mandate, &thief);
                scope.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let honest = (t + i) % 3 != 0;
                            let good = proof("GET", &url(g, 321), token);
                            let p = if honest {
                                good
                            } else if i % 2 == 0 {
                                let now = mandate_core::timestamp::UnixTime::from_secs(now_secs())
                                    .unwrap();
                                let forged = mandate_core::pop::make_proof(
                                    thief,
                                    "GET",
                                    &url(g, 321),
                                    token,
                                    &format!("forged-{t}-{i}"),
                                    now,
                                );
                                let head = good.split('.').next().unwrap();
                                format!("{head}.{}", forged.split_once('.').unwrap().1)
                            } else {
                                let (signed, sig) = good.rsplit_once('.').unwrap();
                                let flipped = if sig.starts_with('A') { "B" } else { "A" };
                                format!("{signed}.{flipped}{}", &sig[1..])
                            };
                            let (st, body) = read_with(g, mandate, 321, Some(p));
                            (honest, st, body)
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
    assert_eq!(answers.len(), 60);
    for (honest, st, body) in answers {
        if honest {
            assert_eq!((st, &body["number"]), (200, &json!(321)), "{body}");
        } else {
            assert_eq!(
                (st, &body["reasons"]),
                (403, &json!(["pop_invalid"])),
                "{body}"
            );
        }
    }
    gw.stop();
}

/// A sub-agent's chain below its parent's, which the gateway has already
/// verified (the parent acted with it, so the gateway keeps it and checks
/// only the new leaf): the honest child is allowed, and children forged
/// below that same verified chain are refused with the reason a gateway
/// that had seen nothing would give. Over the real socket.
#[test]
fn a_child_forged_below_a_chain_the_gateway_already_verified_is_refused() {
    use mandate_core::keys::{Algorithm, SigningKey};
    let dir = temp("pop-below");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let mut request = pr_request(654);
    request["delegation"] = json!({"permitted": true, "max_additional_hops": 1, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"});
    let (_, mandate) = grant(&dir, authority.addr, &request);
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
    );
    let g = gateway.addr;
    let token = Some("gho_still_valid");
    let (st, body) = read_with(g, &mandate, 654, Some(proof("GET", &url(g, 654), token)));
    assert_eq!(st, 200, "the parent acts first: {body}");

    let sub = SigningKey::from_seed(Algorithm::EdDSA, [11; 32]);
    let now = mandate_core::timestamp::UnixTime::from_secs(now_secs()).unwrap();
    let mut jti = 0;
    let mut as_sub = |chain: &str, key: &SigningKey| {
        jti += 1;
        let p = mandate_core::pop::make_proof(
            key,
            "GET",
            &url(g, 654),
            token,
            &format!("sub-{jti}"),
            now,
        );
        read_with(g, chain, 654, Some(p))
    };
    let spec = |actions: Value| -> mandate_core::chain::ChildSpec {
        serde_json::from_value(json!({
            "agent": {"id": "urn:agent:code/pr-reader@1.0", "instance": "sub-1", "cnf": {"jwk": sub.public_jwk()}},
            "authorization_details": [{"type": "github_pull_request", "locations": ["https://api.github.com/repos/acme/app"],
                "resource": {"repo": "acme/app", "number": 654}, "actions": actions}],
            "lifecycle": {"hard_expiry": "2098-01-01T00:00:00Z"},
            "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
        }))
        .unwrap()
    };
    let id = |s: &str| mandate_core::id::MandateId::new(s).unwrap();
    // Signs a child's claims, built from `spec` and then edited, with `key`.
    let forge = |key: &SigningKey, edit: &dyn Fn(&mut mandate_core::model::MandateClaims)| {
        let parents = mandate_core::chain::parse_unverified(&mandate).unwrap();
        let parent = parents.last().unwrap();
        let mut claims = mandate_core::chain::child_claims(
            &parent.claims,
            &parent.jws_sha256,
            &spec(json!(["read"])),
            id("mnd-forged-654"),
            now,
        );
        edit(&mut claims);
        let kid = holder().public_jwk().thumbprint();
        let leaf = mandate_core::jws::sign_with_kid(
            key,
            &kid,
            mandate_core::model::MANDATE_TYP,
            &serde_json::to_vec(&claims).unwrap(),
        );
        format!("{mandate}~{leaf}")
    };

    // What a verifier that has seen nothing trusts: the authority's keys.
    let (st, jwks) = http(authority.addr, "GET", "/.well-known/jwks.json", &[], "");
    assert_eq!(st, 200);
    let (authority_keys, _) =
        mandate_core::keys::KeySet::from_jwks_skipping_unknown(&jwks).unwrap();

    // The honest child, derived with the parent's holder key.
    let child = mandate_core::chain::derive_child(
        &mandate,
        &holder(),
        &spec(json!(["read"])),
        id("mnd-sub-654"),
        now,
    )
    .unwrap();
    let (st, body) = as_sub(&child, &sub);
    assert_eq!(st, 200, "the honest child: {body}");
    let (st, health) = http(g, "GET", "/_mandate/healthz", &[], "");
    assert_eq!(st, 200);
    assert_eq!(
        health["chains_verified"]["below_cached"], 1,
        "the child was checked below its parent's chain: {health}"
    );
    // Each of the two requests' proofs was checked once, and none failed.
    let proofs = &health["proof_signatures"];
    let checked = ["at_once", "thread_alone", "in_batches"]
        .iter()
        .map(|how| proofs[how].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(checked, 2, "two proofs, each checked once: {health}");
    assert_eq!(proofs["rechecked"], 0, "{health}");

    // A thief signs its own child below the verified chain.
    let thief = SigningKey::from_seed(Algorithm::EdDSA, [7; 32]);
    let stolen = forge(&thief, &|_| {});
    // The parent's holder signs a child wider than its parent.
    let wider = forge(&holder(), &|c| {
        c.authorization_details[0].actions.push("merge".into());
    });
    // One byte of the honest child's signature changed.
    // (Ten characters from the end: inside `S`, and never the last
    // character, whose spare bits strict base64url requires to be zero.)
    let mut flipped = child.clone().into_bytes();
    let at = flipped.len() - 10;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (name, chain, reason) in [
        ("stolen", &stolen, "signature_invalid"),
        ("wider", &wider, "attenuation_violation:actions"),
        ("flipped", &flipped, "signature_invalid"),
    ] {
        let alone = mandate_core::chain::Verifier::new(authority_keys.clone())
            .verify(chain)
            .map(|_| Vec::new())
            .unwrap_or_else(|e| e.codes());
        let (st, body) = as_sub(chain, &sub);
        assert_eq!(st, 403, "{name}: {body}");
        assert_eq!(
            body["reasons"],
            json!(alone),
            "{name}: as a verifier that saw nothing says"
        );
        assert!(
            body["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap().starts_with(reason)),
            "{name}: {body}"
        );
    }
    gw.stop();
}
