//! Three authority replicas on one PostgreSQL database and a gateway, as
//! real processes: a revocation through one replica denies at the others and
//! at the gateway; a replica killed right after acknowledging a revocation
//! loses nothing; the audit log stays one intact chain.
//!
//! Needs `MANDATE_TEST_POSTGRES` (scripts/test starts a throwaway cluster
//! and runs this file with it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, bin, free_port, temp, token, wait_for_port};
use serde_json::{Value, json};

struct Answer {
    status: u16,
    body: Value,
}

/// One HTTP/1.1 request on a fresh connection.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Answer {
        status,
        body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    }
}

fn call(port: u16, method: &str, path: &str, bearer: &str, body: &Value) -> Answer {
    let auth = format!("Bearer {bearer}");
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    http(port, method, path, &[("Authorization", &auth)], &text)
}

/// A fresh, empty database on the test cluster.
fn database() -> Option<String> {
    let base = std::env::var("MANDATE_TEST_POSTGRES").ok()?;
    let name = format!(
        "mandate_replicas_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let admin = mandate_store::connect_postgres(&base).unwrap();
    admin
        .execute_batch(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (head, _) = base.rsplit_once('/').unwrap();
    Some(format!("{head}/{name}"))
}

struct Replica {
    port: u16,
    data: PathBuf,
    log: PathBuf,
    guard: Option<Guard>,
}

impl Replica {
    fn start(dir: &Path, name: &str, db: &str, keys_from: Option<&Path>) -> Self {
        let data = dir.join(name);
        if let Some(src) = keys_from {
            // Replicas sign and verify with the same keys: the data
            // directory's key files are copied to each.
            std::fs::create_dir_all(&data).unwrap();
            for f in ["authority.jwk", "local-issuer.jwk"] {
                until(10, f, || src.join(f).is_file());
                std::fs::copy(src.join(f), data.join(f)).unwrap();
            }
        }
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(bin())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--issuer", "https://mandate.test", "--database", db])
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(&mut child, port, name);
        Replica {
            port,
            data,
            log,
            guard: Some(Guard(child)),
        }
    }

    /// SIGKILL: no graceful anything.
    fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.0.kill().unwrap();
            g.0.wait().unwrap();
        }
    }
}

fn holder() -> mandate_core::keys::SigningKey {
    mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [7; 32])
}

/// Request at one replica, approve at another: (id, mandate).
fn grant(asked_at: u16, approved_at: u16, data: &Path, ticket: &str) -> (String, String) {
    let request = json!({
        "principal": "lead@acme.example",
        "agent": {"id": "ci-agent", "instance": "run-1", "cnf": {"jwk": holder().public_jwk()}},
        "purpose": {"objective": "Read the logs of the failing build", "business_context": ticket},
        "authorization_details": [{"type": "ci_logs", "locations": ["https://ci.example.com/logs"], "actions": ["read"]}],
        "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z", "terminal_events": [{"type": "build.fixed", "subject": ticket}]},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"},
    });
    let asked = call(
        asked_at,
        "POST",
        "/v1/requests",
        &token(data, "ci-agent", "agent"),
        &request,
    );
    assert_eq!(asked.status, 201, "{}", asked.body);
    let id = asked.body["id"].as_str().unwrap();
    let approved = call(
        approved_at,
        "POST",
        &format!("/v1/requests/{id}/approve"),
        &token(data, "lead@acme.example", "principal"),
        &Value::Null,
    );
    assert_eq!(approved.status, 200, "{}", approved.body);
    (
        approved.body["mandate_id"].as_str().unwrap().to_owned(),
        approved.body["mandate"].as_str().unwrap().to_owned(),
    )
}

fn now() -> mandate_core::timestamp::UnixTime {
    mandate_core::timestamp::UnixTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .try_into()
            .unwrap(),
    )
    .unwrap()
}

fn proof(htm: &str, htu: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let jti = format!(
        "r-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    mandate_core::pop::make_proof(&holder(), htm, htu, None, &jti, now())
}

/// An AuthZEN request for reading log 42 with `mandate`, with a fresh proof.
fn evaluation(mandate: &str) -> Value {
    let htu = "https://ci.example.com/logs/42";
    json!({
        "subject": {"type": "agent", "id": "ci-agent", "properties": {"mandate": mandate}},
        "action": {"name": "read"},
        "resource": {"type": "ci_logs", "id": htu},
        "context": {"agent_instance": "run-1", "htm": "GET", "htu": htu, "dpop": proof("GET", htu)},
    })
}

fn evaluate(port: u16, data: &Path, req: &Value) -> Value {
    let a = call(
        port,
        "POST",
        "/access/v1/evaluation",
        &token(data, "gateway-1", "enforcer"),
        req,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

/// The AuthZEN decision at a replica for reading log 42 with `mandate`.
fn decide(port: u16, data: &Path, mandate: &str) -> Value {
    evaluate(port, data, &evaluation(mandate))
}

/// The granting principal revokes `id` through replica `port`.
fn revoke(port: u16, data: &Path, id: &str, reason: &str) {
    let a = call(
        port,
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        &token(data, "lead@acme.example", "principal"),
        &json!({"reason": reason}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

/// The mandate's state as replica `port` holds it in memory.
fn state_at(port: u16, data: &Path, id: &str) -> String {
    let a = call(
        port,
        "GET",
        &format!("/v1/mandates/{id}"),
        &token(data, "admin@acme.example", "admin"),
        &Value::Null,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["state"].as_str().unwrap().to_owned()
}

/// Polls `f` every 5 ms until it holds (at most `secs`); how long it took.
fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// A plain upstream that answers 200 to everything it is sent.
fn upstream() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

fn through_gateway(port: u16, mandate: &str) -> u16 {
    let p = proof("GET", &format!("http://127.0.0.1:{port}/logs/42"));
    http(
        port,
        "GET",
        "/logs/42",
        &[
            ("Mandate", mandate),
            ("DPoP", &p),
            ("mandate-agent-instance", "run-1"),
        ],
        "",
    )
    .status
}

/// A gateway (as a process) in front of the upstream, knowing these
/// replicas in this order: its guard and port.
fn gateway(dir: &Path, data: &Path, name: &str, replicas: &[u16], extra: &str) -> (Guard, u16) {
    let port = free_port();
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, token(data, "gateway-1", "enforcer")).unwrap();
    let authority: Vec<String> = replicas
        .iter()
        .map(|p| format!("\"http://127.0.0.1:{p}\""))
        .collect();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
authority = [{authority}]
token_file = "{token}"
spool_file = "{dir}/{name}.spool"
upstream = "http://127.0.0.1:{up}"
location_base = "https://ci.example.com"
{extra}

[[route]]
method = "GET"
path = "/logs/{{id}}"
type = "ci_logs"
action = "read"
"#,
            authority = authority.join(", "),
            token = token_file.display(),
            up = upstream(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    let mut gw = Command::new(bin())
        .args(["gateway", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(&mut gw, port, name);
    (Guard(gw), port)
}

/// The gateway's answer body for a call with `mandate`.
fn gateway_answer(port: u16, mandate: &str) -> Answer {
    let p = proof("GET", &format!("http://127.0.0.1:{port}/logs/42"));
    http(
        port,
        "GET",
        "/logs/42",
        &[
            ("Mandate", mandate),
            ("DPoP", &p),
            ("mandate-agent-instance", "run-1"),
        ],
        "",
    )
}

fn log_says(path: &Path, what: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|l| l.contains(what))
}

#[test]
fn push_delivery_moves_to_another_replica_when_the_lease_holder_dies() {
    let Some(db) = database() else {
        eprintln!(
            "MANDATE_TEST_POSTGRES is not set: scripts/test runs this with a throwaway cluster"
        );
        return;
    };
    let dir = temp("replicas", "lease");
    let mut r1 = Replica::start(&dir, "r1", &db, None);
    until(10, "replica 1 takes the push lease", || {
        log_says(&r1.log, "push lease taken")
    });
    let r2 = Replica::start(&dir, "r2", &db, Some(&r1.data));
    let data = r1.data.clone();
    // The gateway sets its push stream up through replica 2; replica 1,
    // holding the lease, delivers it.
    let (_gw, gw) = gateway(
        &dir,
        &data,
        "pushed",
        &[r2.port, r1.port],
        "delivery = \"push\"",
    );
    let (_, first) = grant(r2.port, r2.port, &data, "ticket:P-1");
    until(20, "the gateway allows (pushed by replica 1)", || {
        through_gateway(gw, &first) == 200
    });
    assert!(
        !log_says(&r2.log, "push lease taken"),
        "one pusher at a time"
    );

    r1.kill();
    until(10, "replica 2 takes the push lease", || {
        log_says(&r2.log, "push lease taken")
    });
    let (id, second) = grant(r2.port, r2.port, &data, "ticket:P-2");
    until(20, "the gateway allows what replica 2 pushed", || {
        through_gateway(gw, &second) == 200
    });
    revoke(r2.port, &data, &id, "done");
    let mut last = Value::Null;
    // While the lease moves, a heartbeat naming the new head can arrive
    // before the revocation's own SET: the gateway then denies
    // `state_stale` (fail closed) until its snapshot, and must end up
    // denying for the revocation itself.
    until(20, "the gateway denies the revoked mandate", || {
        let a = gateway_answer(gw, &second);
        let stale = a.body.to_string().contains("state_stale");
        last = a.body;
        a.status == 403 && !stale
    });
    assert!(
        last.to_string().contains("revoked"),
        "denied for the revocation, not staleness: {last}"
    );
}

#[test]
fn three_replicas_agree_a_killed_replica_loses_nothing_and_the_log_stays_one_chain() {
    let Some(db) = database() else {
        eprintln!(
            "MANDATE_TEST_POSTGRES is not set: scripts/test runs this with a throwaway cluster"
        );
        return;
    };
    let dir = temp("replicas", "three");
    let r1 = Replica::start(&dir, "r1", &db, None);
    let r2 = Replica::start(&dir, "r2", &db, Some(&r1.data));
    let mut r3 = Replica::start(&dir, "r3", &db, Some(&r1.data));
    let data = r1.data.clone();

    // A gateway that knows replicas 3 and 2 (it polls 3 while 3 answers).
    let (_gw, gw_port) = gateway(&dir, &data, "gateway", &[r3.port, r2.port], "");

    // Requested at replica 3, approved at replica 1: replica 2 and the gateway know it.
    let (id, mandate) = grant(r3.port, r1.port, &data, "ticket:CI-1");
    until(5, "replica 2 learns of the grant", || {
        state_at(r2.port, &data, &id) == "active"
    });
    assert_eq!(decide(r2.port, &data, &mandate)["decision"], true);
    // A proof accepted by one replica is a replay at every other.
    let once = evaluation(&mandate);
    assert_eq!(evaluate(r1.port, &data, &once)["decision"], true);
    let again = evaluate(r3.port, &data, &once);
    assert_eq!(again["decision"], false, "{again}");
    assert!(again.to_string().contains("pop_replayed"), "{again}");
    until(20, "the gateway allows", || {
        through_gateway(gw_port, &mandate) == 200
    });

    // Revoked through replica 1: replica 2 and 3 deny, and the gateway.
    revoke(r1.port, &data, &id, "build fixed");
    let seen = until(5, "replica 2 sees the revocation", || {
        state_at(r2.port, &data, &id) == "revoked"
    });
    eprintln!("revocation at replica 1 visible at replica 2 after {seen:?}");
    let d = decide(r3.port, &data, &mandate);
    assert_eq!(d["decision"], false, "{d}");
    assert!(d.to_string().contains("revoked"), "{d}");
    assert_eq!(decide(r2.port, &data, &mandate)["decision"], false);
    until(20, "the gateway denies", || {
        through_gateway(gw_port, &mandate) == 403
    });

    // Replica 3 answers a revocation and is killed at once: the revocation
    // was durable before its answer.
    let (id2, mandate2) = grant(r1.port, r2.port, &data, "ticket:CI-2");
    until(5, "replica 3 learns of the second grant", || {
        state_at(r3.port, &data, &id2) == "active"
    });
    revoke(r3.port, &data, &id2, "ticket closed");
    r3.kill();
    until(5, "replica 1 sees the killed replica's revocation", || {
        state_at(r1.port, &data, &id2) == "revoked"
    });
    assert_eq!(decide(r1.port, &data, &mandate2)["decision"], false);
    assert_eq!(decide(r2.port, &data, &mandate2)["decision"], false);

    // The gateway's replica is gone: it moves to replica 2 and keeps
    // following (a grant and its revocation, both after the failover).
    let (id3, mandate3) = grant(r1.port, r2.port, &data, "ticket:CI-3");
    until(30, "the gateway allows after failing over", || {
        through_gateway(gw_port, &mandate3) == 200
    });
    revoke(r2.port, &data, &id3, "done");
    until(20, "the gateway denies after failing over", || {
        through_gateway(gw_port, &mandate3) == 403
    });

    // A replica started now loads the state as it is.
    let r4 = Replica::start(&dir, "r4", &db, Some(&data));
    assert_eq!(state_at(r4.port, &data, &id), "revoked");
    assert_eq!(state_at(r4.port, &data, &id2), "revoked");

    // One chain, no fork, across every replica's appends.
    drop(r4);
    drop(r2);
    drop(r1);
    let out = Command::new(bin())
        .args(["audit", "verify", "--database", &db, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("INTACT"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::read_to_string(&r3.log);
}
