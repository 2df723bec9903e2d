//! One credential inside the system, used as an attacker would: each test
//! is an attack over the real socket, and what the authority must answer.

use serde_json::{Value, json};

use crate::support::*;

fn child_spec(id: &str, instance: &str) -> mandate_core::chain::ChildSpec {
    serde_json::from_value(json!({
        "agent": {"id": id, "instance": instance, "cnf": {"jwk": agent_key().public_jwk()}},
        "authorization_details": [{"type": "vendor_portal", "locations": ["https://vendor-portal.example.com/search"],
            "resource": {"category": "logistics", "region": "north-america"}, "actions": ["search"],
            "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}],
        "lifecycle": {"hard_expiry": "2098-01-01T00:00:00Z"},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    }))
    .unwrap()
}

fn derive(parent: &str, child_id: &str) -> String {
    let now =
        mandate_core::timestamp::UnixTime::from_secs(mandate_authority::auth::now_secs()).unwrap();
    mandate_core::chain::derive_child(
        parent,
        &agent_key(),
        &child_spec("urn:agent:procurement/search@1", "inst-s"),
        mandate_core::id::MandateId::new(child_id).unwrap(),
        now,
    )
    .unwrap()
}

fn active(s: &Server, c: &Cast) {
    set_facts(
        s,
        c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
}

#[test]
fn a_sub_agent_presenting_its_ancestor_alone_gets_nothing() {
    let s = Server::start("ancestor-alone");
    let c = Cast::new(&s);
    active(&s, &c);
    let (_, root) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let child = derive(&root, "mnd-sub-1");
    // The sub-agent says who it is, and presents the root cut from its chain.
    let mut req = search_request(&root);
    req["subject"]["id"] = json!("urn:agent:procurement/search@1");
    req["context"]["agent_instance"] = json!("inst-s");
    let (st, d) = s.call(
        "POST",
        "/access/v1/evaluation",
        Some(&c.enforcer),
        Some(&req),
    );
    assert_eq!(st, 200);
    assert_eq!(d["decision"], false);
    // (Nor can it prove it holds the root's key.)
    assert_eq!(
        reasons(&d),
        ["agent_instance_mismatch", "agent_mismatch", "pop_missing"]
    );
    // Saying nothing about who acts is no way around it.
    let mut anonymous = search_request(&root);
    anonymous["context"] = json!({});
    let (_, d) = s.call(
        "POST",
        "/access/v1/evaluation",
        Some(&c.enforcer),
        Some(&anonymous),
    );
    assert_eq!(reasons(&d), ["agent_instance_missing", "pop_missing"]);
    // Its own chain works.
    assert_eq!(decide(&s, &c, &search_request(&child))["decision"], true);
}

/// A sub-agent's chain below its parent's, which the authority verified
/// when the parent acted: only the child is checked (counted on /metrics as
/// `below_cached`), and the next decision finds the whole chain verified.
#[test]
fn a_sub_agents_chain_is_verified_below_its_parents_and_counted() {
    let s = Server::start("below-cached");
    let c = Cast::new(&s);
    active(&s, &c);
    let (_, root) = grant(&s, &c, &procurement_request("vp@acme.example"));
    assert_eq!(decide(&s, &c, &search_request(&root))["decision"], true);
    let counts = || -> [u64; 3] {
        let (st, m) = s.call("GET", "/metrics", None, None);
        assert_eq!(st, 200);
        let text = m.as_str().unwrap().to_owned();
        ["cached", "below_cached", "whole"].map(|how| {
            let name = format!(r#"mandate_chains_verified_total{{how="{how}"}}"#);
            text.lines()
                .find_map(|l| l.strip_prefix(name.as_str())?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        })
    };
    let before = counts();
    let child = derive(&root, "mnd-sub-below");
    assert_eq!(decide(&s, &c, &search_request(&child))["decision"], true);
    assert_eq!(decide(&s, &c, &search_request(&child))["decision"], true);
    let after = counts();
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(delta, [1, 1, 0], "cached, below_cached, whole");
}

#[test]
fn an_authzen_request_without_a_proper_subject_is_malformed_not_a_decision() {
    let s = Server::start("authzen-subject");
    let c = Cast::new(&s);
    active(&s, &c);
    let (_, root) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let good = search_request(&root);
    for (what, broken) in [
        ("subject", {
            let mut r = good.clone();
            r.as_object_mut().unwrap().remove("subject");
            r
        }),
        ("subject.type", {
            let mut r = good.clone();
            r["subject"].as_object_mut().unwrap().remove("type");
            r
        }),
        ("subject.id", {
            let mut r = good.clone();
            r["subject"]["id"] = json!(7);
            r
        }),
    ] {
        let (st, e) = s.call(
            "POST",
            "/access/v1/evaluation",
            Some(&c.enforcer),
            Some(&broken),
        );
        assert_eq!(st, 400, "{what}: {e}");
        assert!(e["detail"].as_str().unwrap().contains(what), "{e}");
    }
    // In a batch, the malformed item is answered with an error object.
    let mut batch = good.clone();
    batch["evaluations"] = json!([{"subject": {"type": "agent"}}]);
    let (st, r) = s.call(
        "POST",
        "/access/v1/evaluations",
        Some(&c.enforcer),
        Some(&batch),
    );
    assert_eq!(st, 200, "{r}");
    let item = &r["evaluations"][0];
    assert_eq!(item["decision"], false);
    assert_eq!(item["context"]["error"]["status"], 400);
    // Answered with a deny, so audited like one.
    assert!(item["context"]["audit_seq"].as_i64().is_some(), "{item}");
}

#[test]
fn a_request_without_a_mandate_is_denied_and_audited() {
    let s = Server::start("no-mandate");
    let c = Cast::new(&s);
    let req = json!({"subject": {"type": "agent", "id": "urn:agent:x"},
        "action": {"name": "search"}, "resource": {"type": "vendor_portal", "id": "https://vendor-portal.example.com/search"}});
    let (st, d) = s.call(
        "POST",
        "/access/v1/evaluation",
        Some(&c.enforcer),
        Some(&req),
    );
    assert_eq!(st, 200);
    assert_eq!(reasons(&d), ["mandate_missing"]);
    assert!(d["context"]["audit_seq"].as_i64().is_some(), "{d}");
}

#[test]
fn a_business_event_ends_only_mandates_issued_before_it_happened_even_after_a_restart() {
    let s = Server::start("restart-events");
    let c = Cast::new(&s);
    let (_, before) = grant(&s, &c, &pr_request("vp@acme.example", 123));
    let payload = merged(123);
    let (st, r) = github_delivery(&s, "d-1", &payload, Some(WEBHOOK_SECRET));
    assert_eq!(st, 202, "{r}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // A new mission on the same PR (reopened and worked again), issued after.
    let (_, after) = grant(&s, &c, &pr_request("vp@acme.example", 123));
    let decisions = |s: &Server| {
        let c = Cast::new(s);
        (
            reasons(&decide(s, &c, &read_pr(&before, 123))),
            reasons(&decide(s, &c, &read_pr(&after, 123))),
        )
    };
    let (b, a) = decisions(&s);
    assert!(b.contains(&"completed".to_owned()), "{b:?}");
    assert!(!a.contains(&"completed".to_owned()), "{a:?}");
    // The same delivery replayed under a new delivery id is the same event.
    let (st, r) = github_delivery(&s, "d-2-replayed", &payload, Some(WEBHOOK_SECRET));
    assert_eq!((st, &r["replayed"]), (200, &json!(true)), "{r}");
    let dir = s.stop();
    let s = Server::start_in(dir);
    assert_eq!(decisions(&s), (b, a), "a restart changed decisions");
}

#[test]
fn an_event_id_reused_for_another_event_is_a_conflict() {
    let s = Server::start("event-id");
    let c = Cast::new(&s);
    let ev =
        json!({"id": "crm-1", "type": "contingency_program.cancelled", "subject": "program:a"});
    let (st, _) = s.call("POST", "/v1/events", Some(&c.events), Some(&ev));
    assert_eq!(st, 202);
    let (st, r) = s.call("POST", "/v1/events", Some(&c.events), Some(&ev));
    assert_eq!((st, &r["replayed"]), (200, &json!(true)));
    let other =
        json!({"id": "crm-1", "type": "contingency_program.cancelled", "subject": "program:b"});
    let (st, e) = s.call("POST", "/v1/events", Some(&c.events), Some(&other));
    assert_eq!(
        (st, e["code"].as_str()),
        (409, Some("event_id_reused")),
        "{e}"
    );
}

#[test]
fn an_event_source_changes_only_the_facts_its_configuration_names() {
    let s = Server::start("event-facts");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}, "github": {"pulls": {}}}),
    );
    for (id, patch) in [
        (
            "e1",
            json!({"github": {"pulls": {"acme/app#1": {"state": "merged"}}}}),
        ),
        ("e2", json!({"github": null})),
        (
            "e3",
            json!({"procurement": {"contingency_program": {"status": "x"}}, "github": {}}),
        ),
    ] {
        let (st, e) = s.call(
            "POST",
            "/v1/events",
            Some(&c.events),
            Some(&json!({"id": id, "type": "x", "facts": patch})),
        );
        assert_eq!(st, 403, "{id}: {e}");
    }
    let (_, facts) = s.call("GET", "/v1/facts", Some(&c.admin), None);
    assert_eq!(facts["facts"]["github"], json!({"pulls": {}}), "{facts}");
    let (st, e) = s.call(
        "POST",
        "/v1/events",
        Some(&c.events),
        Some(&json!({"id": "e4", "type": "x", "facts": {"procurement": {"contingency_program": {"status": "cancelled"}}}})),
    );
    assert_eq!(st, 202, "{e}");
}

#[test]
fn what_ended_stays_ended() {
    let s = Server::start("stays-ended");
    let c = Cast::new(&s);
    active(&s, &c);
    // A one-time grant revoked with its parent is not consumed.
    let (id, root) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let (st, g) = s.call("POST", &format!("/v1/mandates/{id}/discovery"), Some(&c.agent), Some(&json!({"type": "sanctions_screening", "location": "https://screening.example.net/v2/screen", "action": "screen_entity"})));
    assert_eq!(st, 200, "{g}");
    let gid = g["mandate_id"].as_str().unwrap().to_owned();
    let child = derive(&root, &format!("{id}.late-child"));
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/suspend"),
        Some(&c.admin),
        None,
    );
    assert_eq!(st, 200);
    // Amending a suspended mandate would resume it without a resume.
    let (st, e) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/amend"),
        Some(&c.admin),
        Some(&json!({"hard_expiry": "2097-01-01T00:00:00Z"})),
    );
    assert_eq!(st, 409, "{e}");
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        Some(&c.admin),
        None,
    );
    assert_eq!(st, 200);
    let (st, e) = s.call(
        "POST",
        &format!("/v1/mandates/{gid}/consume"),
        Some(&c.enforcer),
        None,
    );
    assert_eq!((st, e["code"].as_str()), (409, Some("revoked")), "{e}");
    assert_ne!(e["consumed"], true);
    // A child registered under the revoked parent is refused, not recorded active.
    let (st, e) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/children"),
        Some(&c.agent),
        Some(&json!({"mandate": child})),
    );
    assert_eq!(st, 409, "{e}");
    let (st, _) = s.call(
        "GET",
        &format!("/v1/mandates/{id}.late-child"),
        Some(&c.admin),
        None,
    );
    assert_eq!(st, 404);
}

#[test]
fn approve_and_deny_of_one_request_race_to_exactly_one_outcome() {
    let s = Server::start("approve-deny-race");
    let c = Cast::new(&s);
    for round in 0..5 {
        let (st, r) = s.call(
            "POST",
            "/v1/requests",
            Some(&c.agent),
            Some(&procurement_request("vp@acme.example")),
        );
        assert_eq!(st, 201);
        let id = r["id"].as_str().unwrap().to_owned();
        let consent = json!({"consent_sha256": r["consent_sha256"]});
        let (a, d) = std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                s.call(
                    "POST",
                    &format!("/v1/requests/{id}/approve"),
                    Some(&c.principal),
                    Some(&consent),
                )
            });
            let d = scope.spawn(|| {
                s.call(
                    "POST",
                    &format!("/v1/requests/{id}/deny"),
                    Some(&c.principal),
                    None,
                )
            });
            (a.join().unwrap(), d.join().unwrap())
        });
        let wins = [a.0, d.0].iter().filter(|st| **st == 200).count();
        assert_eq!(wins, 1, "round {round}: approve {a:?}, deny {d:?}");
        let (_, shown) = s.call(
            "GET",
            &format!("/v1/requests/{id}"),
            Some(&c.principal),
            None,
        );
        let expected = if a.0 == 200 { "approved" } else { "denied" };
        assert_eq!(shown["state"], expected, "{shown}");
    }
}

#[test]
fn an_enforcer_cannot_write_decisions_into_another_tenants_timeline() {
    let s = Server::start("ship-cross-tenant");
    let c = Cast::new(&s);
    let (victim, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let intruder = s.token(
        "gateway-evil",
        mandate_authority::auth::Role::Enforcer,
        "other",
    );
    let forged: Value = json!({"source": "s1", "first": 0, "records": [
        {"decision": "allow", "at_ms": 1, "chain": [victim], "reasons": []}
    ]});
    let (st, e) = s.call(
        "POST",
        "/v1/audit/decisions",
        Some(&intruder),
        Some(&forged),
    );
    assert_eq!(st, 403, "{e}");
    let conn = open_db(&s.data_dir());
    let tree = mandate_store::audit::records_for_tree(&conn, &victim).unwrap();
    assert!(tree.iter().all(|r| r.kind != "decision"), "{tree:?}");
}

#[test]
fn a_push_destination_is_parsed_before_its_host_is_judged() {
    let s = Server::start("push-dest");
    let c = Cast::new(&s);
    let create = |s: &Server, url: &str| {
        s.call(
            "POST",
            "/ssf/streams",
            Some(&c.enforcer),
            Some(&json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}})),
        )
        .0
    };
    for bad in [
        "http://127.0.0.1:80@evil.example/",
        "http://localhost@evil.example:8080/ssf",
        "http://user:pw@127.0.0.1/ssf",
        "http://10.0.0.8/ssf",
        "http://evil.example/ssf",
        "ftp://127.0.0.1/ssf",
        "not a url",
    ] {
        assert_eq!(create(&s, bad), 400, "{bad}");
    }
    assert_eq!(create(&s, "http://127.0.0.1:9/ssf"), 201);
    assert_eq!(create(&s, "https://gw.example.net/ssf"), 201);
    drop(s);
    // An operator allow-list narrows https too.
    let s = Server::start_configured(temp_dir("push-allow"), |cfg| {
        cfg.push_destinations = vec!["gw1.internal:443".into()];
    });
    let c2 = Cast::new(&s);
    let create = |url: &str| {
        s.call(
            "POST",
            "/ssf/streams",
            Some(&c2.enforcer),
            Some(&json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}})),
        )
        .0
    };
    assert_eq!(create("https://gw1.internal/ssf"), 201);
    assert_eq!(create("https://gw1.internal:8443/ssf"), 400);
    assert_eq!(create("https://internal-db.example:5432/"), 400);
}

#[test]
fn facts_too_deep_for_a_signal_are_refused_where_they_enter() {
    let s = Server::start("facts-depth");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let deep = |n: usize| {
        let mut v = json!("x");
        for _ in 0..n {
            v = json!({ "a": v });
        }
        v
    };
    // Through an event (its patch) and through the facts API, deeper than
    // facts may be: refused, naming the problem, and nothing changes.
    let (st, e) = s.call(
        "POST",
        "/v1/events",
        Some(&c.admin),
        Some(&json!({"id": "deep-1", "type": "x", "facts": {"procurement": deep(26)}})),
    );
    assert!(st == 400 || st == 422, "{st} {e}");
    assert!(e["detail"].as_str().unwrap().contains("deeper"), "{e}");
    let (st, e) = s.call(
        "PUT",
        "/v1/facts",
        Some(&c.admin),
        Some(&json!({"x": deep(125)})),
    );
    assert_eq!(st, 400, "{e}");
    let (_, facts) = s.call("GET", "/v1/facts", Some(&c.admin), None);
    assert_eq!(
        facts["facts"]["procurement"]["contingency_program"]["status"], "active",
        "{facts}"
    );
}

#[test]
fn a_condition_that_would_run_long_denies_instead_of_stalling_the_authority() {
    let s = Server::start("condition-budget");
    let c = Cast::new(&s);
    active(&s, &c);
    let mut req = procurement_request("vp@acme.example");
    req["conditions"].as_array_mut().unwrap().push(
        json!({"id": "items-checked", "evaluation": "per_action", "on_failure": "deny",
            "expression": "context.items.all(i, size(context.items) > i)"}),
    );
    let (_, mandate) = grant(&s, &c, &req);
    let ask = |items: Vec<u32>| {
        let mut r = search_request(&mandate);
        r["context"]["items"] = json!(items);
        reasons(&decide(&s, &c, &r))
    };
    assert!(ask(vec![0, 1, 2]).is_empty(), "a small input is evaluated");
    // Each iteration reads the whole list again: quadratic, over budget, so
    // refused before it runs.
    assert_eq!(
        ask((0..20_000).collect()),
        ["condition_error:items-checked"]
    );
    // Nested comprehensions are refused when the mandate is requested.
    let mut nested = procurement_request("vp@acme.example");
    nested["conditions"] = json!([{"id": "n", "evaluation": "per_action", "on_failure": "deny",
        "expression": "[1,2,3].all(a, [1,2,3].all(b, a + b > 0))"}]);
    let (st, e) = s.call("POST", "/v1/requests", Some(&c.agent), Some(&nested));
    assert!(st == 400 || st == 422, "{st} {e}");
    assert!(
        e["detail"].as_str().unwrap().contains("comprehension"),
        "{e}"
    );
}

#[test]
fn a_child_id_lives_under_its_parent_so_no_tenant_can_squat_or_probe_anothers() {
    let s = Server::start("child-ids");
    let c = Cast::new(&s);
    let (victim_id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    // An agent of another tenant, with a mandate of its own there.
    let other_agent = s.token("agent-7", mandate_authority::auth::Role::Agent, "other");
    let other_principal = s.token(
        "vp@acme.example",
        mandate_authority::auth::Role::Principal,
        "other",
    );
    let (st, r) = s.call(
        "POST",
        "/v1/requests",
        Some(&other_agent),
        Some(&procurement_request("vp@acme.example")),
    );
    assert_eq!(st, 201, "{r}");
    let (st, a) = s.call(
        "POST",
        &format!("/v1/requests/{}/approve", r["id"].as_str().unwrap()),
        Some(&other_principal),
        None,
    );
    assert_eq!(st, 200, "{a}");
    let (own_id, own) = (
        a["mandate_id"].as_str().unwrap(),
        a["mandate"].as_str().unwrap(),
    );
    let register = |child: &str| {
        s.call(
            "POST",
            &format!("/v1/mandates/{own_id}/children"),
            Some(&other_agent),
            Some(&json!({"mandate": child})),
        )
    };
    // Naming the victim's id (or anything outside its own lineage) is refused
    // the same way whether or not the id exists anywhere.
    let squat = register(&derive(own, &victim_id));
    let free = register(&derive(own, "mnd-nobody-has-this"));
    assert_eq!(
        (squat.0, &squat.1["code"]),
        (422, &json!("child_id_not_namespaced")),
        "{:?}",
        squat.1
    );
    assert_eq!((free.0, &free.1["code"]), (squat.0, &squat.1["code"]));
    // Under its own parent, it registers.
    let (st, r) = register(&derive(own, &format!("{own_id}.search-1")));
    assert_eq!(st, 200, "{r}");
}

#[test]
fn authzen_answers_echo_the_request_id_and_a_batch_without_items_is_one_evaluation() {
    use std::io::{Read as _, Write as _};
    let s = Server::start("authzen-conformance");
    let c = Cast::new(&s);
    active(&s, &c);
    let (_, mandate) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let body = search_request(&mandate).to_string();
    let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
    write!(
        conn,
        "POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nX-Request-ID: req-7f3a\r\nContent-Length: {}\r\n\r\n{body}",
        c.enforcer,
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    let head = out.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("x-request-id: req-7f3a"), "{head}");
    // No `evaluations`: answered as the single evaluation, not as a list.
    let (st, d) = s.call(
        "POST",
        "/access/v1/evaluations",
        Some(&c.enforcer),
        Some(&as_leaf(search_request(&mandate))),
    );
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["decision"], true, "{d}");
    assert!(d.get("evaluations").is_none(), "{d}");
}
