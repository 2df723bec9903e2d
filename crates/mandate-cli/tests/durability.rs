//! `mandate serve` as a real process: SIGKILL right after acknowledged
//! changes loses none of them, and the audit log still verifies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mandate")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn call(port: u16, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn start(dir: &Path, port: u16) -> Child {
    let child = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn token(dir: &Path, sub: &str, role: &str) -> String {
    let out = Command::new(bin())
        .args([
            "token",
            "--sub",
            sub,
            "--role",
            role,
            "--tenant",
            "acme",
            "--data-dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn temp() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mandate-durability-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn request(i: usize) -> Value {
    json!({
        "principal": "vp@acme.example",
        "agent": {"id": "urn:agent:test@1", "instance": format!("inst-{i}")},
        "purpose": {"objective": "Durability", "business_context": "Test"},
        "authorization_details": [{"type": "api", "locations": ["https://api.example.com"], "actions": ["read"]}],
        "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z", "terminal_events": [{"type": "job.done", "subject": format!("job:{i}")}]},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })
}

#[test]
fn sigkill_after_acknowledged_revocations_and_events_loses_none_of_them() {
    let dir = temp();
    let data = dir.join("data");
    let port = free_port();
    let mut server = start(&data, port);
    let (agent, principal, events, admin) = (
        token(&data, "agent-1", "agent"),
        token(&data, "vp@acme.example", "principal"),
        token(&data, "crm", "event_source"),
        token(&data, "admin@acme.example", "admin"),
    );
    let mut ids = Vec::new();
    for i in 0..6 {
        let (st, r) = call(port, "POST", "/v1/requests", &agent, &request(i));
        assert_eq!(st, 201, "{r}");
        let (st, a) = call(
            port,
            "POST",
            &format!("/v1/requests/{}/approve", r["id"].as_str().unwrap()),
            &principal,
            &json!({}),
        );
        assert_eq!(st, 200, "{a}");
        ids.push(a["mandate_id"].as_str().unwrap().to_owned());
    }
    // Acknowledged changes, then SIGKILL at once.
    for id in &ids[0..3] {
        assert_eq!(
            call(
                port,
                "POST",
                &format!("/v1/mandates/{id}/revoke"),
                &principal,
                &json!({})
            )
            .0,
            200
        );
    }
    for i in 3..6 {
        assert_eq!(
            call(
                port,
                "POST",
                "/v1/events",
                &events,
                &json!({"id": format!("ev-{i}"), "type": "job.done", "subject": format!("job:{i}")})
            )
            .0,
            202
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();

    let port = free_port();
    let mut server = start(&data, port);
    for (i, id) in ids.iter().enumerate() {
        let (st, m) = call(
            port,
            "GET",
            &format!("/v1/mandates/{id}"),
            &admin,
            &json!({}),
        );
        assert_eq!(st, 200);
        assert_eq!(
            m["state"],
            if i < 3 { "revoked" } else { "completed" },
            "{id}"
        );
    }
    // A replayed event after the restart still changes nothing.
    let (st, r) = call(
        port,
        "POST",
        "/v1/events",
        &events,
        &json!({"id": "ev-3", "type": "job.done", "subject": "job:3"}),
    );
    assert_eq!((st, &r["replayed"]), (200, &json!(true)));
    server.kill().unwrap();
    server.wait().unwrap();

    let out = Command::new(bin())
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("INTACT"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_configuration_exits_non_zero_naming_the_setting_before_binding() {
    let dir = temp();
    std::fs::write(
        dir.join("bad.toml"),
        "listen = \"127.0.0.1:1\"\nbody_limit = 5\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(dir.join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("body_limit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("typo.toml"), "lissen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(dir.join("typo.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lissen"));
    let _ = std::fs::remove_dir_all(&dir);
}
