//! Test vectors in `testdata/vectors/`, generated here from fixed seeds.
//! The test fails when the generator's output drifts from the files; run with
//! `MANDATE_REGEN_VECTORS=1` to rewrite them after an intended change.

use mandate_core::keys::{Algorithm, KeySet, SigningKey};
use mandate_core::prelude::*;
use mandate_core::state::StateDocument;
use serde_json::{Value, json};

use crate::support::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");

fn es256_authority() -> SigningKey {
    SigningKey::from_seed(Algorithm::ES256, [5; 32])
}

fn vector(
    name: &str,
    about: &str,
    mandate: &str,
    request: &EvaluationRequest,
    state: Value,
    token: Option<&str>,
    at: &str,
    algorithms: &[&str],
) -> Value {
    json!({
        "name": name,
        "about": about,
        "algorithms": algorithms,
        "mandate": mandate,
        "request": sent_by_leaf(mandate, request),
        "state": state,
        "token": token,
        "at": at,
    })
}

/// The request as the presented chain's leaf holder sends it (its
/// `context.agent_instance`), read from the unverified leaf when it parses.
fn sent_by_leaf(mandate: &str, request: &EvaluationRequest) -> EvaluationRequest {
    let mut r = request.clone();
    if let Ok(chain) = mandate_core::chain::parse_unverified(mandate)
        && let Some(leaf) = chain.last()
    {
        r.context
            .entry("agent_instance")
            .or_insert_with(|| json!(leaf.claims.agent.instance));
    }
    r
}

fn generate() -> (Value, Value) {
    let active = json!({"facts": {"procurement": {"contingency_program": {"status": "active"}}}});
    let root1 = root(1);
    let root2 = root(2);
    let child = child_of(&root1, &agent_key(), &search_only_spec(0), "mnd-vec-child").unwrap();
    let child_hop = child_of(&root2, &agent_key(), &search_only_spec(1), "mnd-vec-child").unwrap();
    let mut gc_spec = search_only_spec(0);
    gc_spec.agent.id = AgentId::new("urn:agent:procurement/leaf@1").unwrap();
    gc_spec.agent.cnf = None;
    gc_spec.lifecycle = lifecycle("2025-10-05T00:00:00Z");
    let grandchild =
        child_of(&child_hop, &sub_agent_key(), &gc_spec, "mnd-vec-grandchild").unwrap();
    let widened = forge_child(&root1, &agent_key(), &search_only_spec(0), |c| {
        c.authorization_details[0]
            .actions
            .push("delete_vendor".into())
    });
    let mut other = procurement_claims(1);
    other.mandate_id = MandateId::new("mnd-vec-other").unwrap();
    other.jti = "mnd-vec-other".into();
    let spliced = format!(
        "{}~{}",
        issue_root(&authority(), &other).unwrap(),
        child.rsplit_once('~').unwrap().1
    );
    let tampered = {
        let mut p: Vec<String> = root1.split('.').map(str::to_owned).collect();
        let flipped = if p[2].starts_with('A') { "B" } else { "A" };
        p[2].replace_range(0..1, flipped);
        p.join(".")
    };
    let es_root = issue_root(&es256_authority(), &procurement_claims(1)).unwrap();
    let mut bound = procurement_claims(1);
    bound.token_binding = Some(
        serde_json::from_value(
            json!({"access_token_sha256": mandate_core::hash::sha256_b64(b"token-of-the-agent")}),
        )
        .unwrap(),
    );
    let bound_root = issue_root(&authority(), &bound).unwrap();
    let s = search();
    let during = "2025-10-02T09:00:00Z";
    let ed = ["EdDSA"];
    let vectors = json!([
        vector(
            "root-allow",
            "the procurement mandate of the source text, during the mission",
            &root1,
            &s,
            active.clone(),
            None,
            during,
            &ed
        ),
        vector(
            "root-expired",
            "the same, at its hard expiry",
            &root1,
            &s,
            active.clone(),
            None,
            "2025-10-15T17:00:00Z",
            &ed
        ),
        vector(
            "root-out-of-scope",
            "an action the mandate does not list",
            &root1,
            &EvaluationRequest::new(
                "delete_vendor",
                "vendor_portal",
                "https://vendor-portal.example.com/v/1",
                s.resource.properties.clone()
            ),
            active.clone(),
            None,
            during,
            &ed
        ),
        vector(
            "child-allow",
            "a search-only child of the root",
            &child,
            &s,
            active.clone(),
            None,
            during,
            &ed
        ),
        vector(
            "grandchild-allow",
            "a three-hop chain",
            &grandchild,
            &s,
            active.clone(),
            None,
            during,
            &ed
        ),
        vector(
            "child-widened",
            "a child that adds an action its parent lacks",
            &widened,
            &s,
            active.clone(),
            None,
            during,
            &ed
        ),
        vector(
            "child-spliced",
            "a child moved onto another root",
            &spliced,
            &s,
            active.clone(),
            None,
            during,
            &ed
        ),
        vector(
            "root-tampered",
            "a root whose signature was altered",
            &tampered,
            &s,
            active.clone(),
            None,
            during,
            &ed
        ),
        vector(
            "condition-failed",
            "the contingency program was cancelled",
            &child,
            &s,
            json!({"facts": {"procurement": {"contingency_program": {"status": "cancelled"}}}}),
            None,
            during,
            &ed
        ),
        vector(
            "terminal-event",
            "the program-cancelled business event arrived",
            &child,
            &s,
            json!({"facts": {"procurement": {"contingency_program": {"status": "active"}}}, "events": [{"type": "contingency_program.cancelled", "subject": "program:contingency-q4-2025"}]}),
            None,
            during,
            &ed
        ),
        vector(
            "ancestor-revoked",
            "the root was revoked; the child ends with it",
            &child,
            &s,
            json!({"revoked": ["mnd-logistics-sourcing-7f2a"], "facts": active["facts"]}),
            None,
            during,
            &ed
        ),
        vector(
            "es256-root-allow",
            "an ES256 root with ES256 allowed",
            &es_root,
            &s,
            active.clone(),
            None,
            during,
            &["ES256"]
        ),
        vector(
            "es256-root-not-allowed",
            "an ES256 root with only EdDSA allowed",
            &es_root,
            &s,
            active.clone(),
            None,
            during,
            &ed
        ),
        vector(
            "token-bound",
            "the token whose hash the mandate carries",
            &bound_root,
            &s,
            active.clone(),
            Some("token-of-the-agent"),
            during,
            &ed
        ),
        vector(
            "token-unrelated",
            "a valid mandate with an unrelated token",
            &bound_root,
            &s,
            active.clone(),
            Some("someone-elses-token"),
            during,
            &ed
        ),
    ]);
    let mut keys = KeySet::new();
    keys.insert(authority().verifying_key().unwrap());
    keys.insert(es256_authority().verifying_key().unwrap());
    (serde_json::to_value(keys.to_jwks()).unwrap(), vectors)
}

fn evaluate(jwks: &Value, v: &Value) -> Decision {
    let keys = KeySet::from_jwks(&serde_json::from_value(jwks.clone()).unwrap()).unwrap();
    let algs = v["algorithms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| Algorithm::from_name(a.as_str().unwrap()));
    let verifier = Verifier::new(keys).with_algorithms(algs);
    let doc: StateDocument = serde_json::from_value(v["state"].clone()).unwrap();
    let state = StateSnapshot::from_document(doc).unwrap();
    let request: EvaluationRequest = serde_json::from_value(v["request"].clone()).unwrap();
    decide_presented(
        &verifier,
        v["mandate"].as_str().unwrap(),
        &request,
        v["token"].as_str(),
        &state,
        t(v["at"].as_str().unwrap()),
    )
}

/// Keys in sorted order whether or not serde_json keeps insertion order
/// (a peer in the workspace turns its `preserve_order` on).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(&sorted(v)).unwrap() + "\n"
}

#[test]
fn vectors_match_the_generator_and_their_expected_decisions() {
    let (jwks, mut vectors) = generate();
    for v in vectors.as_array_mut().unwrap() {
        let d = evaluate(&jwks, v);
        v["expected"] = json!({"allow": d.allow, "reasons": d.reasons});
    }
    let files = [
        ("jwks.json", pretty(&jwks)),
        ("vectors.json", pretty(&vectors)),
    ];
    if std::env::var_os("MANDATE_REGEN_VECTORS").is_some() {
        std::fs::create_dir_all(DIR).unwrap();
        for (name, text) in &files {
            std::fs::write(format!("{DIR}/{name}"), text).unwrap();
        }
    }
    for (name, text) in &files {
        let on_disk = std::fs::read_to_string(format!("{DIR}/{name}")).unwrap_or_default();
        assert!(
            on_disk == *text,
            "testdata/vectors/{name} drifted from the generator; rerun with MANDATE_REGEN_VECTORS=1 if the change is intended"
        );
    }
    // And the decisions are the ones the README promises.
    let expect = |name: &str| {
        vectors
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()["expected"]
            .clone()
    };
    assert_eq!(expect("root-allow"), json!({"allow": true, "reasons": []}));
    assert_eq!(
        expect("grandchild-allow"),
        json!({"allow": true, "reasons": []})
    );
    assert_eq!(
        expect("child-widened")["reasons"],
        json!(["attenuation_violation:actions"])
    );
    assert_eq!(
        expect("child-spliced")["reasons"],
        json!(["chain_link_mismatch"])
    );
    assert_eq!(
        expect("root-tampered")["reasons"],
        json!(["signature_invalid"])
    );
    assert_eq!(
        expect("token-unrelated")["reasons"],
        json!(["token_binding_mismatch"])
    );
    assert_eq!(
        expect("es256-root-not-allowed")["reasons"],
        json!(["alg_not_allowed"])
    );
}
