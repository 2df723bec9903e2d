//! The audit log: intact after real traffic, and every kind of tampering
//! detected.

use mandate_store::audit;
use serde_json::json;

use crate::support::*;

fn authority_public(dir: &std::path::Path) -> mandate_core::keys::VerifyingKey {
    let jwk: mandate_core::keys::PrivateJwk = serde_json::from_slice(
        &std::fs::read(mandate_authority::state::authority_key_path(dir)).unwrap(),
    )
    .unwrap();
    mandate_core::keys::SigningKey::from_private_jwk(&jwk)
        .unwrap()
        .verifying_key()
        .unwrap()
}

fn traffic(s: &Server) -> String {
    let c = Cast::new(s);
    set_facts(
        s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let (id, mandate) = grant(s, &c, &procurement_request("vp@acme.example"));
    for _ in 0..3 {
        decide(s, &c, &search_request(&mandate));
    }
    s.call(
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        Some(&c.principal),
        None,
    );
    decide(s, &c, &search_request(&mandate));
    id
}

fn verify(dir: &std::path::Path) -> audit::VerifyReport {
    let data = dir.join("data");
    let conn = open_db(&data);
    audit::verify(
        &conn,
        &mandate_store::checkpoint_path(&data),
        &authority_public(&data),
    )
    .unwrap()
}

fn tamper(dir: &std::path::Path, sql: &str) {
    let conn = open_db_rw(&dir.join("data"));
    conn.execute_batch(&drop_append_only("audit")).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn the_log_is_intact_after_traffic_and_records_every_decision_and_transition() {
    let s = Server::start("audit-ok");
    let id = traffic(&s);
    let dir = s.stop();
    let report = verify(&dir);
    assert!(report.intact, "{report:?}");
    let conn = open_db(&dir.join("data"));
    let tree = audit::records_for_tree(&conn, &id).unwrap();
    let kinds: Vec<&str> = tree.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "approved", "issued", "decision", "decision", "decision", "revoked", "decision"
        ]
    );
    let decision = &tree[2].body;
    for field in [
        "chain",
        "principal",
        "grant_ref",
        "agent",
        "agent_instance",
        "purpose",
        "action",
        "resource",
        "decision",
        "reasons",
    ] {
        assert!(
            !decision[field].is_null(),
            "decision record lacks {field}: {decision}"
        );
    }
}

#[test]
fn the_log_cannot_be_appended_to_edited_or_deleted_through_sql() {
    let s = Server::start("audit-triggers");
    traffic(&s);
    let dir = s.stop();
    let conn = open_db_rw(&dir.join("data"));
    let refused = |sql: &str| match conn.execute(sql, mandate_store::params![]) {
        Err(e) => assert!(e.to_string().contains("append-only"), "{sql}: {e}"),
        Ok(n) => panic!("{sql}: changed {n} record(s)"),
    };
    refused("UPDATE audit SET kind = 'x' WHERE seq = 1");
    refused("DELETE FROM audit WHERE seq = 1");
}

#[test]
fn an_edited_record_is_detected() {
    let s = Server::start("audit-edit");
    traffic(&s);
    let dir = s.stop();
    tamper(
        &dir,
        "UPDATE audit SET record = replace(record, '\"deny\"', '\"allow\"') WHERE kind = 'decision' AND record LIKE '%\"deny\"%'",
    );
    let r = verify(&dir);
    assert!(!r.intact);
    assert!(r.first_problem.unwrap().1.contains("edited"));
}

#[test]
fn a_deleted_record_is_detected() {
    let s = Server::start("audit-delete");
    traffic(&s);
    let dir = s.stop();
    tamper(&dir, "DELETE FROM audit WHERE seq = 3");
    let r = verify(&dir);
    assert_eq!(r.first_problem.unwrap().0, 4);
}

#[test]
fn reordered_records_are_detected() {
    let s = Server::start("audit-reorder");
    traffic(&s);
    let dir = s.stop();
    tamper(
        &dir,
        "UPDATE audit SET seq = -seq WHERE seq IN (3, 4); UPDATE audit SET seq = 4 WHERE seq = -3; UPDATE audit SET seq = 3 WHERE seq = -4;",
    );
    assert!(!verify(&dir).intact);
}

#[test]
fn cutting_records_off_the_end_is_detected_by_the_signed_checkpoint() {
    let s = Server::start("audit-truncate");
    traffic(&s);
    let dir = s.stop();
    tamper(
        &dir,
        "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
    );
    let r = verify(&dir);
    assert!(!r.intact);
    assert!(r.first_problem.unwrap().1.contains("truncated"));
}

#[test]
fn an_investigator_can_tell_whether_a_decision_fell_inside_a_valid_mandate() {
    let s = Server::start("audit-inside");
    traffic(&s);
    let dir = s.stop();
    let conn = open_db(&dir.join("data"));
    let decisions: Vec<i64> = audit::all(&conn)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "decision")
        .map(|r| r.seq)
        .collect();
    let (_, first) = audit::decision_validity(&conn, decisions[0], None)
        .unwrap()
        .unwrap();
    assert!(first.is_none(), "the first decision was inside the mandate");
    let (last, ended_by) = audit::decision_validity(&conn, *decisions.last().unwrap(), None)
        .unwrap()
        .unwrap();
    assert_eq!(last.body["decision"], "deny");
    assert_eq!(ended_by.unwrap().kind, "revoked");
    assert!(
        audit::decision_validity(&conn, 1, None).unwrap().is_none(),
        "record 1 is not a decision"
    );
}

fn shipped(at_ms: u64, chain: &[&str], decision: &str) -> serde_json::Value {
    json!({"at_ms": at_ms, "gateway": "127.0.0.1:8081", "method": "GET", "path": "/repos/acme/app/pulls/123",
           "chain": chain, "decision": decision, "reasons": if decision == "deny" { json!(["revoked"]) } else { json!([]) }})
}

fn ship(
    s: &Server,
    c: &Cast,
    source: &str,
    first: u64,
    records: &[serde_json::Value],
) -> (u16, serde_json::Value) {
    s.call(
        "POST",
        "/v1/audit/decisions",
        Some(&c.enforcer),
        Some(&json!({"source": source, "first": first, "records": records})),
    )
}

#[test]
fn shipped_decisions_are_one_record_per_batch_each_decision_recorded_once() {
    let s = Server::start("audit-ship");
    let c = Cast::new(&s);
    let (id, _) = grant(&s, &c, &pr_request("vp@acme.example", 123));
    let batch: Vec<_> = (0..5)
        .map(|i| shipped(1_000 + i, &[&id], "allow"))
        .collect();
    assert_eq!(
        ship(&s, &c, "strm-1", 0, &batch),
        (200, json!({"accepted": 5, "duplicates": 0, "next": 5}))
    );
    // The same batch again (its answer was lost, say), then one overlapping it.
    assert_eq!(
        ship(&s, &c, "strm-1", 0, &batch).1,
        json!({"accepted": 0, "duplicates": 5, "next": 5})
    );
    let more: Vec<_> = (3..8)
        .map(|i| shipped(1_000 + i, &[&id], "allow"))
        .collect();
    assert_eq!(
        ship(&s, &c, "strm-1", 3, &more).1,
        json!({"accepted": 3, "duplicates": 2, "next": 8})
    );
    // Decisions 8 and 9 never arrive.
    assert_eq!(
        ship(&s, &c, "strm-1", 10, &[shipped(2_000, &[&id], "deny")]).1["accepted"],
        1
    );
    // Only enforcers ship.
    assert_eq!(ship(&s, &c, "strm-1", 11, &[]).0, 200);
    assert_eq!(
        ship(&s, &c, "strm-1", 0, &batch).1["next"],
        11,
        "an old batch again: next is where the series is"
    );
    let (st, _) = s.call(
        "POST",
        "/v1/audit/decisions",
        Some(&c.agent),
        Some(&json!({"source": "x", "first": 0, "records": []})),
    );
    assert_eq!(st, 403);
    let dir = s.stop();
    let conn = open_db(&dir.join("data"));
    let batches: Vec<_> = audit::all(&conn)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == audit::DECISIONS)
        .collect();
    assert_eq!(batches.len(), 3, "one audit record per accepted batch");
    assert_eq!(batches[1].body["first"], 5, "the duplicates were dropped");
    assert_eq!(
        batches[2].body["missing"], 2,
        "the log says two decisions never arrived"
    );
    let tree = audit::records_for_tree(&conn, &id).unwrap();
    let ids: Vec<&str> = tree
        .iter()
        .filter(|r| r.kind == "decision")
        .map(|r| r.body["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "strm-1-0",
            "strm-1-1",
            "strm-1-2",
            "strm-1-3",
            "strm-1-4",
            "strm-1-5",
            "strm-1-6",
            "strm-1-7",
            "strm-1-10"
        ]
    );
    let last = tree.last().unwrap();
    assert_eq!(
        (last.mandate_id.as_deref(), last.body["enforcer"].as_str()),
        (Some(id.as_str()), Some("gateway-1"))
    );
    assert_eq!(last.reference(), format!("{}.0", batches[2].seq));
    // An investigator names a shipped decision SEQ.ITEM.
    let (seq, item) = audit::parse_reference(&format!("{}.1", batches[1].seq)).unwrap();
    let (d, invalid) = audit::decision_validity(&conn, seq, item).unwrap().unwrap();
    assert_eq!(
        (d.body["record_id"].as_str(), invalid),
        (Some("strm-1-6"), None)
    );
    assert!(
        audit::decision_validity(&conn, seq, Some(99))
            .unwrap()
            .is_none()
    );
    assert!(
        audit::decision_validity(&conn, seq, None)
            .unwrap()
            .is_none(),
        "a batch is not one decision"
    );
    assert!(audit::parse_reference("12.x").is_err() && audit::parse_reference("0").is_err());
    drop(conn);
    assert!(verify(&dir).intact);
}

#[test]
fn a_shipped_decision_that_is_malformed_is_refused_by_field() {
    let s = Server::start("audit-ship-bad");
    let c = Cast::new(&s);
    let mut bad = shipped(1, &["mnd-1"], "allow");
    bad["decision"] = json!("maybe");
    let (st, body) = ship(&s, &c, "strm-1", 0, &[shipped(1, &["mnd-1"], "allow"), bad]);
    assert_eq!(st, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("records[1].decision"),
        "{body}"
    );
    let mut bad = shipped(1, &["mnd-1"], "allow");
    bad["chain"] = json!("mnd-1");
    assert!(
        ship(&s, &c, "strm-1", 0, &[bad]).1["detail"]
            .as_str()
            .unwrap()
            .contains("records[0].chain")
    );
    let (st, body) = ship(&s, &c, "", 0, &[]);
    assert_eq!(st, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("source"),
        "{body}"
    );
    // Nothing was recorded, and the series still starts at 0.
    assert_eq!(
        ship(&s, &c, "strm-1", 0, &[shipped(1, &["mnd-1"], "allow")]).1["accepted"],
        1
    );
}

#[test]
fn an_edited_mandate_index_is_detected() {
    let s = Server::start("audit-index");
    let c = Cast::new(&s);
    let (id, _) = grant(&s, &c, &pr_request("vp@acme.example", 123));
    assert_eq!(
        ship(&s, &c, "strm-1", 0, &[shipped(1, &[&id], "allow")]).0,
        200
    );
    let dir = s.stop();
    let conn = open_db_rw(&dir.join("data"));
    assert!(
        conn.execute("DELETE FROM audit_refs", mandate_store::params![])
            .is_err(),
        "the index is append-only"
    );
    conn.execute_batch(&format!(
        "{} DELETE FROM audit_refs WHERE seq = (SELECT MAX(seq) FROM audit);",
        drop_append_only("audit_refs")
    ))
    .unwrap();
    drop(conn);
    let r = verify(&dir);
    assert!(!r.intact);
    assert!(r.first_problem.unwrap().1.contains("mandate index"));
}

#[test]
fn a_log_rolled_back_to_an_older_checkpoint_is_caught_by_a_newer_one_kept_elsewhere() {
    let s = Server::start("audit-rollback");
    let c = Cast::new(&s);
    let fetch = |s: &Server| {
        let (st, cp) = s.call("GET", "/v1/audit/checkpoint", Some(&c.enforcer), None);
        assert_eq!(st, 200, "{cp}");
        cp.as_str().unwrap().to_owned()
    };
    set_facts(&s, &c, &json!({"n": 1}));
    let older = fetch(&s);
    let older_file = s.data_dir().join("../older-checkpoint.jws");
    std::fs::write(&older_file, &older).unwrap();
    traffic(&s);
    let newer = fetch(&s);
    // Each checkpoint names the one before it.
    let key = authority_public(&s.data_dir());
    let n = audit::decode_checkpoint(&newer, &key).unwrap();
    let o = audit::decode_checkpoint(&older, &key).unwrap();
    assert!(n.seq > o.seq && n.records == n.seq);
    assert_eq!(o.prev.len(), 64);
    let dir = s.stop();
    // The insider cuts the log back to the older checkpoint and restores it.
    tamper(
        &dir,
        &format!(
            "{} DELETE FROM audit WHERE seq > {}; DELETE FROM audit_refs WHERE seq > {}",
            drop_append_only("audit_refs"),
            o.seq,
            o.seq
        ),
    );
    std::fs::write(mandate_store::checkpoint_path(&dir.join("data")), &older).unwrap();
    assert!(
        verify(&dir).intact,
        "the log agrees with the checkpoint it holds"
    );
    let conn = open_db(&dir.join("data"));
    let caught = audit::verify_against(&conn, &newer, &key).unwrap();
    assert!(caught.unwrap().contains("rolled back"));
    assert_eq!(audit::verify_against(&conn, &older, &key).unwrap(), None);
}

/// A child of `parent` (a chain string) for the search agent, derived
/// offline; `hops` more delegations allowed below it (each hop ends a
/// year before its parent).
fn search_child(parent: &str, id: &str, hops: u32) -> String {
    let expiry = format!("{}-01-01T00:00:00Z", 2097 + hops);
    let spec: mandate_core::chain::ChildSpec = serde_json::from_value(json!({
        "agent": {"id": "urn:agent:procurement/search@1", "instance": "inst-s", "cnf": {"jwk": agent_key().public_jwk()}},
        "authorization_details": [{"type": "vendor_portal", "locations": ["https://vendor-portal.example.com/search"],
            "resource": {"category": "logistics", "region": "north-america"}, "actions": ["search"],
            "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}],
        "lifecycle": {"hard_expiry": expiry},
        "delegation": {"permitted": hops > 0, "max_additional_hops": hops, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    }))
    .unwrap();
    let now =
        mandate_core::timestamp::UnixTime::from_secs(mandate_authority::auth::now_secs()).unwrap();
    mandate_core::chain::derive_child(
        parent,
        &agent_key(),
        &spec,
        mandate_core::id::MandateId::new(id).unwrap(),
        now,
    )
    .unwrap()
}

/// The mandates the index files record `seq` under.
fn indexed(conn: &mandate_store::sql::Connection, seq: i64) -> Vec<String> {
    conn.query(
        "SELECT mandate_id FROM audit_refs WHERE seq = ?1 ORDER BY mandate_id",
        mandate_store::params![seq],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_decision_is_indexed_under_its_deepest_registered_mandate_and_every_offline_hop_after_it() {
    let s = Server::start("audit-refs-registered");
    let c = Cast::new(&s);
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let mut request = procurement_request("vp@acme.example");
    request["delegation"]["max_additional_hops"] = json!(2);
    let (root_id, root) = grant(&s, &c, &request);
    // The child is registered with the authority; its own child is not.
    let child_id = format!("{root_id}.child");
    let child = search_child(&root, &child_id, 1);
    let (st, r) = s.call(
        "POST",
        &format!("/v1/mandates/{root_id}/children"),
        Some(&c.agent),
        Some(&json!({"mandate": child})),
    );
    assert_eq!(st, 200, "{r}");
    let offline_id = format!("{child_id}.offline");
    let offline = search_child(&child, &offline_id, 0);
    let seq = |d: &serde_json::Value| {
        assert_eq!(d["decision"], true, "{d}");
        d["context"]["audit_seq"].as_i64().unwrap()
    };
    let by_root = seq(&decide(&s, &c, &search_request(&root)));
    let by_child = seq(&decide(&s, &c, &search_request(&child)));
    let by_offline = seq(&decide(&s, &c, &search_request(&offline)));
    // The root ends; the sub-agents keep trying.
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{root_id}/revoke"),
        Some(&c.principal),
        None,
    );
    assert_eq!(st, 200);
    let denied = |d: &serde_json::Value| {
        assert_eq!(d["decision"], false, "{d}");
        d["context"]["audit_seq"].as_i64().unwrap()
    };
    let late = [
        denied(&decide(&s, &c, &search_request(&child))),
        denied(&decide(&s, &c, &search_request(&offline))),
    ];
    let dir = s.stop();
    assert!(verify(&dir).intact);
    let conn = open_db(&dir.join("data"));
    // Each record says how much of its chain was registered, and is filed
    // under the deepest registered mandate and what follows it only.
    assert_eq!(indexed(&conn, by_root), [root_id.as_str()]);
    assert_eq!(indexed(&conn, by_child), [child_id.as_str()]);
    assert_eq!(
        indexed(&conn, by_offline),
        [child_id.clone(), offline_id.clone()]
    );
    // Asked about any mandate of a chain, the log still finds every
    // decision that chain was presented in.
    let found = |id: &str| -> Vec<i64> {
        audit::records_for_tree(&conn, id)
            .unwrap()
            .iter()
            .filter(|r| r.kind == "decision")
            .map(|r| r.seq)
            .collect()
    };
    assert_eq!(
        found(&root_id),
        [by_root, by_child, by_offline, late[0], late[1]]
    );
    assert_eq!(found(&child_id), [by_child, by_offline, late[0], late[1]]);
    assert_eq!(found(&offline_id), [by_offline, late[1]]);
    // And what was attempted after the end, asked of the root.
    let (end, after) = audit::after_end(&conn, &root_id).unwrap();
    assert_eq!(end.map(|r| r.kind), Some("revoked".to_owned()));
    let after: Vec<i64> = after.iter().map(|r| r.seq).collect();
    assert_eq!(after, late);
    let tree = audit::records_for_tree(&conn, &offline_id).unwrap();
    let body = &tree.iter().find(|r| r.seq == by_offline).unwrap().body;
    assert_eq!(body["registered"], 2, "{body}");
    assert_eq!(body["chain"], json!([root_id, child_id, offline_id]));
    drop(conn);
    // The one entry that leads to a registered chain's decision is checked
    // like any other: deleting it is caught.
    let conn = open_db_rw(&dir.join("data"));
    conn.execute_batch(&format!(
        "{} DELETE FROM audit_refs WHERE seq = {by_child};",
        drop_append_only("audit_refs")
    ))
    .unwrap();
    drop(conn);
    let r = verify(&dir);
    assert!(!r.intact);
    assert_eq!(
        r.first_problem.as_ref().map(|p| p.0),
        Some(by_child),
        "{r:?}"
    );
}
