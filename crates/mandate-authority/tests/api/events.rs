//! Business events and the acceptance scenarios through the decision API.

use mandate_authority::auth::Role;
use serde_json::json;

use crate::support::*;

#[test]
fn ghost_execution_the_github_merge_ends_the_pr_mandate_while_the_token_is_still_valid() {
    let s = Server::start("ghost");
    let c = Cast::new(&s);
    let (id123, m123) = grant(&s, &c, &pr_request("vp@acme.example", 123));
    let (_, m124) = grant(&s, &c, &pr_request("vp@acme.example", 124));
    assert_eq!(decide(&s, &c, &read_pr(&m123, 123))["decision"], true);

    // An unsigned or wrongly signed delivery is 401 and changes nothing.
    assert_eq!(github_delivery(&s, "d-0", &merged(123), None).0, 401);
    assert_eq!(
        github_delivery(&s, "d-0", &merged(123), Some("wrong-secret-wrong-secret")).0,
        401
    );
    assert_eq!(decide(&s, &c, &read_pr(&m123, 123))["decision"], true);

    // The merge of PR #124 ends the #124 mandate only.
    let (st, r) = github_delivery(&s, "d-124", &merged(124), Some(WEBHOOK_SECRET));
    assert_eq!(st, 202, "{r}");
    assert_eq!(decide(&s, &c, &read_pr(&m123, 123))["decision"], true);
    assert_eq!(
        reasons(&decide(&s, &c, &read_pr(&m124, 124))),
        ["completed"]
    );

    // The merge of PR #123: the next call is denied although the token is valid.
    let (st, r) = github_delivery(&s, "d-123", &merged(123), Some(WEBHOOK_SECRET));
    assert_eq!(st, 202, "{r}");
    assert_eq!(r["changed"], json!([id123]));
    assert_eq!(
        reasons(&decide(&s, &c, &read_pr(&m123, 123))),
        ["completed"]
    );

    // A replayed delivery changes nothing.
    let (st, r) = github_delivery(&s, "d-123", &merged(123), Some(WEBHOOK_SECRET));
    assert_eq!((st, &r["replayed"]), (200, &json!(true)));

    // The audit shows the merge as the event that ended it and the later attempt as after the end.
    let conn = open_db(&s.data_dir());
    let (ended, after) = mandate_store::audit::after_end(&conn, &id123).unwrap();
    let ended = ended.unwrap();
    assert_eq!(ended.kind, "completed");
    // The merge itself is the event (whichever delivery carried it).
    assert!(
        ended.body["by"]
            .as_str()
            .unwrap()
            .starts_with("event:github:merge:acme/app#123@"),
        "{}",
        ended.body
    );
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].body["decision"], "deny");
}

#[test]
fn a_cancellation_event_suspends_the_procurement_mandate_and_its_child_with_it() {
    let s = Server::start("taxi");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let (_, g) = s.call("POST", &format!("/v1/mandates/{id}/discovery"), Some(&c.agent), Some(&json!({"type": "sanctions_screening", "location": "https://screening.example.net/v2/screen", "action": "screen_entity"})));
    let once = g["mandate"].as_str().unwrap().to_owned();
    let screen = json!({"subject": {"type": "agent", "id": "a", "properties": {"mandate": once}},
        "action": {"name": "screen_entity"}, "resource": {"type": "sanctions_screening", "id": "https://screening.example.net/v2/screen"}});
    let (st, r) = s.call("POST", "/v1/events", Some(&c.events), Some(&json!({
        "id": "crm-991", "type": "contingency_program.status_changed", "subject": "program:contingency-q4",
        "facts": {"procurement": {"contingency_program": {"status": "cancelled"}}}
    })));
    assert_eq!(st, 202, "{r}");
    assert_eq!(
        r["changed"][0],
        json!(id),
        "the condition's on_failure applied at once"
    );
    let (_, m) = s.call("GET", &format!("/v1/mandates/{id}"), Some(&c.admin), None);
    assert_eq!(m["state"], "suspended");
    let d = decide(&s, &c, &screen);
    assert_eq!(
        reasons(&d),
        ["suspended", "condition_failed:program-active"]
    );
    let conn = open_db(&s.data_dir());
    let notes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM notifications WHERE principal = 'vp@acme.example'",
            mandate_store::params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(notes, 1);

    // The terminal event itself ends the parent (completed) and the grant with it.
    let (st, r) = s.call("POST", "/v1/events", Some(&c.events), Some(&json!({"id": "crm-992", "type": "contingency_program.cancelled", "subject": "program:contingency-q4"})));
    assert_eq!(st, 202, "{r}");
    let (_, m) = s.call("GET", &format!("/v1/mandates/{id}"), Some(&c.admin), None);
    assert_eq!(m["state"], "completed");
    let gid = g["mandate_id"].as_str().unwrap();
    let (_, child) = s.call("GET", &format!("/v1/mandates/{gid}"), Some(&c.admin), None);
    assert_eq!(child["state"], "completed");
    assert!(reasons(&decide(&s, &c, &screen)).contains(&"completed".to_owned()));
}

#[test]
fn five_minutes_after_the_board_approved_the_mandate_denies_while_every_identity_control_passes() {
    let s = Server::start("board");
    let c = Cast::new(&s);
    let mut req = procurement_request("cfo@acme.example");
    req["purpose"] = json!({"objective": "Analyze board exposure and prepare the presentation", "business_context": "Pre-IPO board review"});
    req["conditions"] = json!([]);
    req["lifecycle"]["terminal_events"] =
        json!([{"type": "board.approved", "subject": "deck:pre-ipo-exposure"}]);
    let (st, r) = s.call("POST", "/v1/requests", Some(&c.agent), Some(&req));
    assert_eq!(st, 201);
    let cfo = s.token("cfo@acme.example", Role::Principal, "acme");
    let (_, a) = s.call(
        "POST",
        &format!("/v1/requests/{}/approve", r["id"].as_str().unwrap()),
        Some(&cfo),
        None,
    );
    let mandate = a["mandate"].as_str().unwrap();
    let d = decide(&s, &c, &search_request(mandate));
    assert_eq!(d["decision"], true, "{d}");
    let (st, _) = s.call("POST", "/v1/events", Some(&c.events), Some(&json!({"id": "board-2pm", "type": "board.approved", "subject": "deck:pre-ipo-exposure", "occurred_at": now_rfc3339()})));
    assert_eq!(st, 202);
    // The caller token is still valid and the scope still matches: only the mandate says no.
    let d = decide(&s, &c, &search_request(mandate));
    assert_eq!(reasons(&d), ["completed"]);
    // An event about another deck would not have ended it.
    // (A mandate issued in the same second as an event counts as issued
    // before it: ends fail closed.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, other) = grant(&s, &c, &{
        let mut r = req.clone();
        r["principal"] = json!("vp@acme.example");
        r
    });
    let (st, _) = s.call(
        "POST",
        "/v1/events",
        Some(&c.events),
        Some(&json!({"id": "board-other", "type": "board.approved", "subject": "deck:other"})),
    );
    assert_eq!(st, 202);
    assert_eq!(decide(&s, &c, &search_request(&other))["decision"], true);
}

#[test]
fn only_event_sources_and_admins_post_events() {
    let s = Server::start("event-roles");
    let c = Cast::new(&s);
    let (st, _) = s.call(
        "POST",
        "/v1/events",
        Some(&c.agent),
        Some(&json!({"id": "x", "type": "y"})),
    );
    assert_eq!(st, 403);
    let (st, e) = s.call(
        "POST",
        "/v1/events",
        Some(&c.events),
        Some(&json!({"id": "x", "type": "y", "subject": "z", "extra": 1})),
    );
    assert_eq!(st, 400);
    assert!(e["detail"].as_str().unwrap().contains("extra"));
}
