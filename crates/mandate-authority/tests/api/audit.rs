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
    let conn = mandate_store::open_read_only(&data).unwrap();
    audit::verify(
        &conn,
        &mandate_store::checkpoint_path(&data),
        &authority_public(&data),
    )
    .unwrap()
}

fn tamper(dir: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(mandate_store::database_path(&dir.join("data"))).unwrap();
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn the_log_is_intact_after_traffic_and_records_every_decision_and_transition() {
    let s = Server::start("audit-ok");
    let id = traffic(&s);
    let dir = s.stop();
    let report = verify(&dir);
    assert!(report.intact, "{report:?}");
    let conn = mandate_store::open_read_only(&dir.join("data")).unwrap();
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
    let conn = rusqlite::Connection::open(mandate_store::database_path(&dir.join("data"))).unwrap();
    assert!(
        conn.execute("UPDATE audit SET kind = 'x' WHERE seq = 1", [])
            .is_err()
    );
    assert!(conn.execute("DELETE FROM audit WHERE seq = 1", []).is_err());
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
    let conn = mandate_store::open_read_only(&dir.join("data")).unwrap();
    let decisions: Vec<i64> = audit::all(&conn)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "decision")
        .map(|r| r.seq)
        .collect();
    let (_, first) = audit::decision_validity(&conn, decisions[0])
        .unwrap()
        .unwrap();
    assert!(first.is_none(), "the first decision was inside the mandate");
    let (last, ended_by) = audit::decision_validity(&conn, *decisions.last().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(last.body["decision"], "deny");
    assert_eq!(ended_by.unwrap().kind, "revoked");
    assert!(
        audit::decision_validity(&conn, 1).unwrap().is_none(),
        "record 1 is not a decision"
    );
}
