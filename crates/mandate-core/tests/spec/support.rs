//! Fixtures: fixed keys, the procurement mandate, and helpers to sign
//! anything (including what the library would refuse to build).

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use mandate_core::chain::{ChildLifecycle, ChildSpec, child_claims, derive_child, issue_root};
use mandate_core::keys::{Algorithm, KeySet, SigningKey};
use mandate_core::model::{Confirmation, MandateClaims};
use mandate_core::prelude::*;
use serde_json::{Value, json};

pub const PROCUREMENT: &str = include_str!("../../../../testdata/procurement-mandate.json");

pub fn authority() -> SigningKey {
    SigningKey::from_seed(Algorithm::EdDSA, [1; 32])
}
pub fn agent_key() -> SigningKey {
    SigningKey::from_seed(Algorithm::EdDSA, [2; 32])
}
pub fn sub_agent_key() -> SigningKey {
    SigningKey::from_seed(Algorithm::EdDSA, [3; 32])
}
pub fn intruder_key() -> SigningKey {
    SigningKey::from_seed(Algorithm::EdDSA, [66; 32])
}

pub fn t(s: &str) -> UnixTime {
    UnixTime::parse_rfc3339(s).unwrap()
}

/// During the mission.
pub fn during() -> UnixTime {
    t("2025-10-02T09:00:00Z")
}

pub fn verifier() -> Verifier {
    let mut keys = KeySet::new();
    keys.insert(authority().verifying_key().unwrap());
    Verifier::new(keys)
}

/// The procurement mandate of the source text, bound to the agent's key,
/// with `hops` more delegation hops.
pub fn procurement_claims(hops: u8) -> MandateClaims {
    let mut c: MandateClaims = serde_json::from_str(PROCUREMENT).unwrap();
    c.agent.cnf = Some(Confirmation::key(agent_key().public_jwk()));
    c.delegation.max_additional_hops = hops;
    c
}

pub fn root(hops: u8) -> String {
    issue_root(&authority(), &procurement_claims(hops)).unwrap()
}

pub fn active_facts() -> StateSnapshot {
    state_with_status("active")
}

pub fn state_with_status(status: &str) -> StateSnapshot {
    let mut s = StateSnapshot::new();
    s.set_facts(
        Facts::from_json(json!({"procurement": {"contingency_program": {"status": status}}}))
            .unwrap(),
    );
    s
}

pub fn props(v: Value) -> serde_json::Map<String, Value> {
    serde_json::from_value(v).unwrap()
}

/// A request the procurement mandate allows.
pub fn search() -> EvaluationRequest {
    EvaluationRequest::new(
        "search",
        "vendor_portal",
        "https://vendor-portal.example.com/search",
        props(json!({
            "category": "logistics", "region": "north-america",
            "contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"
        })),
    )
}

/// A child spec within the procurement mandate: search only, below /search,
/// a week shorter, held by the sub-agent.
pub fn search_only_spec(hops: u8) -> ChildSpec {
    serde_json::from_value(json!({
        "agent": {
            "id": "urn:agent:procurement/vendor-search@1.0",
            "instance": "inst-search-01",
            "cnf": {"jwk": sub_agent_key().public_jwk()}
        },
        "authorization_details": [{
            "type": "vendor_portal",
            "locations": ["https://vendor-portal.example.com/search"],
            "resource": {"category": "logistics", "region": "north-america"},
            "actions": ["search"],
            "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}
        }],
        "lifecycle": {"hard_expiry": "2025-10-08T17:00:00Z"},
        "delegation": {
            "permitted": hops > 0, "max_additional_hops": hops,
            "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"
        }
    }))
    .unwrap()
}

pub fn child_of(
    parent: &str,
    key: &SigningKey,
    spec: &ChildSpec,
    id: &str,
) -> Result<String, IssueError> {
    derive_child(parent, key, spec, MandateId::new(id).unwrap(), during())
}

/// Signs arbitrary header and payload JSON with `key`.
pub fn sign_raw(key: &SigningKey, header: &Value, payload: &[u8]) -> String {
    let mut out = B64.encode(header.to_string());
    out.push('.');
    out.push_str(&B64.encode(payload));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&B64.encode(sig));
    out
}

/// Builds a child's claims from `spec`, lets `edit` change them (to widen
/// them past what `derive_child` allows), and signs them with `key`,
/// returning the presented chain.
pub fn forge_child(
    parent: &str,
    key: &SigningKey,
    spec: &ChildSpec,
    edit: impl FnOnce(&mut MandateClaims),
) -> String {
    let chain = parse_unverified(parent).unwrap();
    let p = chain.last().unwrap();
    let mut claims = child_claims(
        &p.claims,
        &p.jws_sha256,
        spec,
        MandateId::new("mnd-forged").unwrap(),
        during(),
    );
    edit(&mut claims);
    let kid = p
        .claims
        .agent
        .cnf
        .as_ref()
        .map(|c| c.jwk.thumbprint())
        .unwrap_or_default();
    // Keys in sorted order, written so: the same bytes whatever serde_json keeps.
    let header: Value = serde_json::from_str(&format!(
        r#"{{"alg":"{}","kid":"{kid}","typ":"mandate+jwt"}}"#,
        key.algorithm().as_str()
    ))
    .unwrap();
    format!(
        "{parent}~{}",
        sign_raw(key, &header, &serde_json::to_vec(&claims).unwrap())
    )
}

pub fn lifecycle(expiry: &str) -> ChildLifecycle {
    ChildLifecycle {
        hard_expiry: t(expiry),
        terminal_events: Vec::new(),
        one_time: false,
    }
}

pub fn codes(r: Result<std::sync::Arc<VerifiedChain>, ChainError>) -> Vec<String> {
    r.map(|_| Vec::new()).unwrap_or_else(|e| e.codes())
}

/// `request` as the leaf's holder sends it: `context.agent_instance` is the
/// leaf's instance unless the test set one. (Requests without it are denied
/// `agent_instance_missing`; tests of that build the request themselves.)
pub fn as_leaf_of(chain: &VerifiedChain, request: &EvaluationRequest) -> EvaluationRequest {
    let mut r = request.clone();
    r.context
        .entry("agent_instance")
        .or_insert_with(|| json!(chain.leaf().claims().agent.instance));
    r
}

/// [`decide`] for a request sent by the leaf's holder (see [`as_leaf_of`]).
pub fn decide_as_leaf(
    chain: &VerifiedChain,
    request: &EvaluationRequest,
    token: Option<&str>,
    state: &StateSnapshot,
    now: UnixTime,
) -> Decision {
    decide(chain, &as_leaf_of(chain, request), token, state, now)
}
