//! Caller tokens as identity providers issue them (made by PyJWT, an
//! independent implementation): Entra ID (RS256, `aud` a list, app roles),
//! Okta (PS256, `typ: at+jwt`, groups) and Keycloak (ES256, no `typ`,
//! nested realm roles), each mapped to a Mandate role and tenant by its
//! `trusted_issuer` entry; and every forgery an attacker would try with the
//! same keys in reach, refused with 401.

use serde_json::{Value, json};

use crate::support::*;

const ENTRA: &str = "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0";
const OKTA: &str = "https://acme.okta.com/oauth2/default";
const KEYCLOAK: &str = "http://127.0.0.1:1/realms/acme";

fn providers(dir: &std::path::Path) -> Value {
    let out = run_peer(
        "idp_tokens.py",
        &[
            dir.to_str().unwrap(),
            &mandate_authority::auth::now_secs().to_string(),
        ],
    );
    serde_json::from_slice(&out).unwrap()
}

fn start() -> (Server, Value) {
    let dir = temp_dir("idp-peers");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = providers(&dir);
    let jwks = dir.join("jwks.json");
    let s = Server::start_configured(dir, |c| {
        c.trusted_issuer = vec![
            mandate_authority::config::TrustedIssuer {
                iss: ENTRA.into(),
                jwks_file: Some(jwks.clone()),
                audience: Some("api://mandate".into()),
                role_claim: Some("roles".into()),
                tenant: Some("acme".into()),
                roles: [(
                    "Mandate.Approver".to_owned(),
                    mandate_authority::auth::Role::Principal,
                )]
                .into(),
                ..Default::default()
            },
            mandate_authority::config::TrustedIssuer {
                iss: OKTA.into(),
                jwks_file: Some(jwks.clone()),
                audience: Some("api://mandate".into()),
                role_claim: Some("groups".into()),
                tenant_claim: Some("org".into()),
                roles: [
                    (
                        "mandate-admins".to_owned(),
                        mandate_authority::auth::Role::Admin,
                    ),
                    (
                        "mandate-bots".to_owned(),
                        mandate_authority::auth::Role::Agent,
                    ),
                ]
                .into(),
                ..Default::default()
            },
            mandate_authority::config::TrustedIssuer {
                iss: KEYCLOAK.into(),
                jwks_file: Some(jwks.clone()),
                role_claim: Some("realm_access.roles".into()),
                ..Default::default()
            },
        ];
    });
    (s, tokens)
}

#[test]
fn tokens_of_entra_okta_and_keycloak_call_the_api_with_the_roles_their_claims_map_to() {
    let (s, t) = start();
    let c = Cast::new(&s);
    let entra = t["entra_principal"].as_str().unwrap();
    let okta = t["okta_admin"].as_str().unwrap();
    let keycloak = t["keycloak_enforcer"].as_str().unwrap();

    // The Entra user (RS256) is a principal of acme: an agent asks them,
    // by their `sub`, and they approve.
    let request = procurement_request("AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ");
    let (st, r) = s.call("POST", "/v1/requests", Some(&c.agent), Some(&request));
    assert_eq!(st, 201, "{r}");
    let (st, a) = s.call(
        "POST",
        &format!("/v1/requests/{}/approve", r["id"].as_str().unwrap()),
        Some(entra),
        Some(&json!({"consent_sha256": r["consent_sha256"]})),
    );
    assert_eq!(st, 200, "{a}");
    let id = a["mandate_id"].as_str().unwrap().to_owned();

    // A principal is not an admin: facts are refused.
    let facts = json!({"procurement": {"contingency_program": {"status": "active"}}});
    let (st, _) = s.call("PUT", "/v1/facts", Some(entra), Some(&facts));
    assert_eq!(st, 403);
    // The Okta admin (PS256, at+jwt, via the `mandate-admins` group) may.
    let (st, body) = s.call("PUT", "/v1/facts", Some(okta), Some(&facts));
    assert_eq!(st, 200, "{body}");
    // The Keycloak enforcer (ES256, no typ, a realm role) asks for a decision.
    let (st, d) = s.call(
        "POST",
        "/access/v1/evaluation",
        Some(keycloak),
        Some(&as_leaf(search_request(a["mandate"].as_str().unwrap()))),
    );
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["decision"], true, "{d}");
    // An enforcer is not a principal.
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/suspend"),
        Some(keycloak),
        Some(&json!({"reason": "x"})),
    );
    assert_eq!(st, 403);
}

#[test]
fn forged_misdirected_and_unmappable_tokens_are_refused_with_the_reason() {
    let (s, t) = start();
    let cases = [
        ("hs256_with_public_key", "HS256"),
        ("alg_none", "header"),
        ("foreign_key", "signature does not verify"),
        ("enc_kid", "unknown kid"),
        ("rs256_on_ec_kid", "is not the key's"),
        ("jku_header", "names its own key"),
        ("expired", "expired"),
        ("not_yet_valid", "not yet valid"),
        ("issued_in_the_future", "issued in the future"),
        ("wrong_audience", "wrong audience"),
        ("untrusted_issuer", "untrusted issuer"),
        ("id_token_typed_as_dpop", "typ"),
        ("group_without_role", "no value names a Mandate role"),
        ("two_kinds_of_role", "several roles"),
        ("no_tenant", "org: missing"),
    ];
    for (case, why) in cases {
        let token = t[case].as_str().unwrap();
        let (st, body) = s.call("GET", "/v1/mandates/mnd-none", Some(token), None);
        assert_eq!(st, 401, "{case}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(why),
            "{case}: expected `{why}` in {body}"
        );
    }
}
