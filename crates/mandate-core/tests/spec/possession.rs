//! Possession: who may use a mandate. A leaf bound to a key is used with a
//! DPoP proof by that key for each request; a leaf bound to a TLS client
//! certificate (`agent.cnf.x5t#S256`, RFC 8705) is used only on a
//! connection that presented that certificate, and nothing else stands in.

use mandate_core::chain::issue_root;
use mandate_core::hash::sha256_b64;
use mandate_core::pop::{self, Possession, ProofTarget, ReplayCache};
use mandate_core::prelude::*;
use serde_json::json;

use crate::support::*;

const HTU: &str = "https://gw.example/po";

/// The thumbprint of a (stand-in) DER certificate.
fn thumbprint(der: &[u8]) -> String {
    mandate_core::model::certificate_thumbprint(der)
}

/// The procurement mandate, bound to the agent's key and, when given, to
/// the certificate with this thumbprint.
fn bound(x5t: Option<&str>) -> std::sync::Arc<VerifiedChain> {
    let mut c = procurement_claims(1);
    c.agent.cnf.as_mut().unwrap().x5t_s256 = x5t.map(str::to_owned);
    verifier()
        .verify(&issue_root(&authority(), &c).unwrap())
        .unwrap()
}

fn proof(jti: &str) -> String {
    pop::make_proof(&agent_key(), "POST", HTU, None, jti, during())
}

/// The reason possession is refused, if it is.
fn refused(
    chain: &VerifiedChain,
    proof: Option<&str>,
    certificate: Option<&str>,
) -> Option<&'static str> {
    let possession = Possession::Proof {
        proof,
        target: ProofTarget {
            htm: "POST",
            htu: HTU,
            access_token: None,
            nonce: None,
        },
        certificate,
    };
    pop::check(chain, &possession, &ReplayCache::new(16), during()).map(|e| e.code())
}

#[test]
fn a_certificate_bound_leaf_is_proved_by_that_certificate_and_nothing_else() {
    let agents = thumbprint(b"the agent's certificate");
    let chain = bound(Some(&agents));
    assert_eq!(refused(&chain, None, Some(&agents)), None);
    // Every use on that connection: no proof, no replay cache.
    assert_eq!(refused(&chain, None, Some(&agents)), None);

    // A valid DPoP proof by agent.cnf.jwk does not stand in.
    assert_eq!(
        refused(&chain, Some(&proof("p1")), None),
        Some("pop_certificate_missing")
    );
    let others = thumbprint(b"someone else's certificate");
    assert_eq!(
        refused(&chain, None, Some(&others)),
        Some("pop_certificate_mismatch")
    );
    assert_eq!(
        refused(&chain, Some(&proof("p2")), Some(&others)),
        Some("pop_certificate_mismatch")
    );
    // Compared whole: a prefix is another certificate.
    assert_eq!(
        refused(&chain, None, Some(&agents[..42])),
        Some("pop_certificate_mismatch")
    );
}

#[test]
fn a_key_bound_leaf_still_needs_its_proof_whatever_certificate_the_connection_has() {
    let chain = bound(None);
    let any = thumbprint(b"a certificate");
    assert_eq!(refused(&chain, None, Some(&any)), Some("pop_missing"));
    assert_eq!(refused(&chain, Some(&proof("p3")), Some(&any)), None);
    assert_eq!(refused(&chain, Some(&proof("p4")), None), None);
}

#[test]
fn whoever_asks_over_authzen_cannot_vouch_for_a_certificate() {
    let agents = thumbprint(b"the agent's certificate");
    let chain = bound(Some(&agents));
    // The enforcement point says what it saw; that is not a handshake.
    let mut request = search();
    for (k, v) in [
        ("dpop", proof("p5")),
        ("htm", "POST".to_owned()),
        ("htu", HTU.to_owned()),
        ("x5t#S256", agents.clone()),
        ("client_certificate", agents.clone()),
    ] {
        request.context.insert(k.to_owned(), json!(v));
    }
    let possession = pop::from_context(&request, None);
    assert_eq!(
        pop::check(&chain, &possession, &ReplayCache::new(16), during()).map(|e| e.code()),
        Some("pop_certificate_missing")
    );
}

#[test]
fn a_thumbprint_that_is_not_a_sha_256_is_refused_by_name() {
    let valid = sha256_b64(b"x");
    for wrong in [
        "not-a-thumbprint".to_owned(),
        format!("{valid}="),
        valid[..42].to_owned(),
        format!("{valid}A"),
        format!("+{}", &valid[1..]),
        String::new(),
    ] {
        if wrong == valid {
            continue;
        }
        let mut c = procurement_claims(1);
        c.agent.cnf.as_mut().unwrap().x5t_s256 = Some(wrong.clone());
        let e = issue_root(&authority(), &c).unwrap_err();
        assert!(
            e.to_string().contains("agent.cnf.x5t#S256"),
            "`{wrong}`: {e}"
        );
    }
}

#[test]
fn a_child_is_bound_as_its_parent_chose_and_the_parents_certificate_does_not_use_it() {
    let parents = thumbprint(b"the agent's certificate");
    let subs = thumbprint(b"the sub-agent's certificate");
    let mut c = procurement_claims(1);
    c.agent.cnf.as_mut().unwrap().x5t_s256 = Some(parents.clone());
    let root = issue_root(&authority(), &c).unwrap();
    let mut spec = search_only_spec(0);
    spec.agent.cnf.as_mut().unwrap().x5t_s256 = Some(subs.clone());
    let child = child_of(&root, &agent_key(), &spec, "mnd-sub-cert").unwrap();
    let chain = verifier().verify(&child).unwrap();
    assert_eq!(refused(&chain, None, Some(&subs)), None);
    assert_eq!(
        refused(&chain, None, Some(&parents)),
        Some("pop_certificate_mismatch")
    );
    // The binding is signed: rewritten, the child no longer verifies.
    let rewritten = child.replace(&b64_payload_of(&child), &{
        let mut v: serde_json::Value =
            serde_json::from_slice(&mandate_core::b64::decode(b64_payload_of(&child)).unwrap())
                .unwrap();
        v["agent"]["cnf"]["x5t#S256"] = json!(parents);
        mandate_core::b64::encode(v.to_string())
    });
    assert!(verifier().verify(&rewritten).is_err());
}

/// The payload segment of a compact mandate chain's leaf.
fn b64_payload_of(chain: &str) -> String {
    let leaf = chain.rsplit('~').next().unwrap();
    leaf.split('.').nth(1).unwrap().to_owned()
}
