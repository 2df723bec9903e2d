//! The acceptance scenarios of the brief, at the level of the core.

use mandate_core::chain::ChildSpec;
use mandate_core::keys::{Algorithm, SigningKey};
use mandate_core::model::MandateClaims;
use mandate_core::prelude::*;
use serde_json::json;

use crate::support::*;

fn code_agent_mandate(pr: u32) -> MandateClaims {
    serde_json::from_value(json!({
        "mandate_id": format!("mnd-pr-watch-{pr}"), "jti": format!("mnd-pr-watch-{pr}"),
        "iss": "https://mandate.example.com",
        "iat": 1_764_576_000, "nbf": 1_764_576_000, "exp": 1_764_662_400,
        "principal": {"sub": "lead@example.com", "iss": "https://idp.example.com", "grant_ref": "gnt-1"},
        "agent": {"id": "urn:agent:code/pr-watcher@1.0", "instance": "inst-1"},
        "purpose": {"objective": format!("Watch PR #{pr} and announce its merge"), "business_context": "Release 4.2"},
        "authorization_details": [
            {"type": "github_pull_request", "locations": ["https://api.github.com/repos/acme/app"],
             "resource": {"repo": "acme/app", "number": pr}, "actions": ["read"]},
            {"type": "slack_message", "locations": ["https://slack.com/api/chat.postMessage"],
             "actions": ["post"], "constraints": {"channel": "#releases"}}
        ],
        "conditions": [{"id": "pr-open", "evaluation": "per_action", "on_failure": "revoke",
            "expression": format!("github.pulls['acme/app#{pr}'].state == 'open'")}],
        "lifecycle": {"hard_expiry": "2025-12-02T08:00:00Z", "on_expiry": "revoke_and_cascade",
            "terminal_events": [{"type": "pull_request.merged", "subject": format!("github:acme/app#{pr}")}]},
        "delegation": {"permitted": false, "max_additional_hops": 0,
            "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    }))
    .unwrap()
}

fn read_pr(pr: u32) -> EvaluationRequest {
    EvaluationRequest::new(
        "read",
        "github_pull_request",
        &format!("https://api.github.com/repos/acme/app/pulls/{pr}"),
        props(json!({"repo": "acme/app", "number": pr})),
    )
}

fn github_facts(state: &str) -> Facts {
    Facts::from_json(json!({"github": {"pulls": {"acme/app#123": {"state": state}, "acme/app#124": {"state": "open"}}}})).unwrap()
}

#[test]
fn ghost_execution_ends_when_the_pr_merges_although_the_token_is_valid() {
    let chain = verifier()
        .verify(&issue_root(&authority(), &code_agent_mandate(123)).unwrap())
        .unwrap();
    let at = t("2025-12-01T14:00:00Z");
    let mut state = StateSnapshot::new();
    state.set_facts(github_facts("open"));
    assert!(decide_as_leaf(&chain, &read_pr(123), None, &state, at).allow);
    // Another PR is out of scope even while the mission runs.
    assert_eq!(
        decide_as_leaf(&chain, &read_pr(124), None, &state, at).reasons,
        ["resource_not_permitted"]
    );

    // The merge of PR #124 does not end a mandate bound to PR #123.
    state.add_event("pull_request.merged", Some("github:acme/app#124"));
    assert!(decide_as_leaf(&chain, &read_pr(123), None, &state, at).allow);

    // The merge of PR #123 does, at once, with the fact change.
    state.add_event("pull_request.merged", Some("github:acme/app#123"));
    state.set_facts(github_facts("merged"));
    let d = decide_as_leaf(
        &chain,
        &read_pr(123),
        None,
        &state,
        t("2025-12-01T14:05:00Z"),
    );
    assert_eq!(d.reasons, ["completed", "condition_failed:pr-open"]);
}

#[test]
fn the_taxi_gets_a_one_time_mandate_for_one_endpoint() {
    // The authority, not the agent, issues the one-time child for the
    // discovered sanctions API (here: signed by the agent's bound key, as the
    // authority acting for the holder would).
    let mut claims = procurement_claims(1);
    claims.authorization_details.push(
        serde_json::from_value(json!({
            "type": "sanctions_screening", "locations": ["https://screening.example.net/v2"],
            "actions": ["screen_entity"]
        }))
        .unwrap(),
    );
    let root = issue_root(&authority(), &claims).unwrap();
    let spec: ChildSpec = serde_json::from_value(json!({
        "agent": {"id": "urn:agent:procurement/screener@1", "instance": "inst-scr-1"},
        "authorization_details": [{"type": "sanctions_screening",
            "locations": ["https://screening.example.net/v2/entities/screen"], "actions": ["screen_entity"]}],
        "lifecycle": {"hard_expiry": "2025-10-02T09:05:00Z", "one_time": true},
        "delegation": {"permitted": false, "max_additional_hops": 0,
            "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })).unwrap();
    let one_time = child_of(&root, &agent_key(), &spec, "mnd-screen-once").unwrap();
    let chain = verifier().verify(&one_time).unwrap();
    let screen = EvaluationRequest::new(
        "screen_entity",
        "sanctions_screening",
        "https://screening.example.net/v2/entities/screen",
        Default::default(),
    );
    let mut state = active_facts();

    let first = decide_as_leaf(&chain, &screen, None, &state, during());
    assert!(first.allow);
    assert_eq!(
        serde_json::to_value(&first.obligations).unwrap(),
        json!([{"type": "consume_one_time", "mandate_id": "mnd-screen-once"}])
    );
    state.consume(MandateId::new("mnd-screen-once").unwrap());
    assert_eq!(
        decide_as_leaf(&chain, &screen, None, &state, during()).reasons,
        ["one_time_used"]
    );

    // Only that endpoint and that action, and only for minutes.
    let other = EvaluationRequest::new(
        "screen_entity",
        "sanctions_screening",
        "https://screening.example.net/v2/admin",
        Default::default(),
    );
    assert!(
        decide_as_leaf(&chain, &other, None, &active_facts(), during())
            .reasons
            .contains(&"location_not_permitted".to_owned())
    );
    assert!(
        decide_as_leaf(&chain, &search(), None, &active_facts(), during())
            .reasons
            .contains(&"resource_type_not_permitted".to_owned())
    );
    assert_eq!(
        decide_as_leaf(
            &chain,
            &screen,
            None,
            &active_facts(),
            t("2025-10-02T09:06:00Z")
        )
        .reasons,
        ["expired"]
    );

    // The sub-agent cannot delegate further.
    let sub = SigningKey::from_seed(Algorithm::EdDSA, [4; 32]);
    assert!(child_of(&one_time, &sub, &spec, "mnd-x").is_err());

    // Cancelling the contingency program ends the parent and the child with it.
    let mut cancelled = state_with_status("cancelled");
    cancelled.add_event(
        "contingency_program.cancelled",
        Some("program:contingency-q4-2025"),
    );
    let d = decide_as_leaf(&chain, &screen, None, &cancelled, during());
    assert_eq!(d.reasons, ["completed", "condition_failed:program-active"]);
}

#[test]
fn a_board_approval_ends_the_research_mandate_while_every_identity_control_passes() {
    let mut c = procurement_claims(0);
    c.lifecycle.terminal_events = vec![
        serde_json::from_value(
            json!({"type": "board.approved", "subject": "deck:pre-ipo-exposure"}),
        )
        .unwrap(),
    ];
    c.conditions.clear();
    let chain = verifier()
        .verify(&issue_root(&authority(), &c).unwrap())
        .unwrap();
    let mut state = StateSnapshot::new();
    assert!(decide_as_leaf(&chain, &search(), None, &state, t("2025-10-02T13:59:00Z")).allow);
    state.add_event("board.approved", Some("deck:pre-ipo-exposure"));
    assert_eq!(
        decide_as_leaf(&chain, &search(), None, &state, t("2025-10-02T14:05:00Z")).reasons,
        ["completed"]
    );
}
