//! `mandate serve` as a real process: SIGKILL right after acknowledged
//! changes loses none of them, and the audit log still verifies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, token};
use serde_json::{Value, json};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mandate")
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
    serve(dir, port, None)
}

/// `mandate serve` on `port` with `dir` (and a configuration file), once it
/// accepts connections.
fn serve(dir: &Path, port: u16, config: Option<&Path>) -> Child {
    let mut cmd = Command::new(bin());
    cmd.arg("serve");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let child = cmd
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            // A server that never listens is not left behind.
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
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
        "agent": {"id": "urn:agent:test@1", "instance": format!("inst-{i}"), "cnf": {"jwk": mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [5; 32]).public_jwk()}},
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
    // Killed (SIGKILL, the point of the test) on purpose below, and by the
    // guard if an assertion fails first: no server outlives the test.
    let mut server = Guard(start(&data, port));
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
    server.0.kill().unwrap();
    server.0.wait().unwrap();

    let port = free_port();
    let mut server = Guard(start(&data, port));
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
    server.0.kill().unwrap();
    server.0.wait().unwrap();

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

/// A server process that is stopped (SIGKILL, then reaped) if the test
/// ends without stopping it, a failed assertion included.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Stops a server gracefully (SIGTERM) and waits for it.
fn stop(mut guard: Guard) {
    let child = &mut guard.0;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn the_data_directory_and_everything_in_it_are_readable_by_the_owner_only() {
    let data = temp().join("data");
    let port = free_port();
    let child = Guard(start(&data, port));
    let admin = token(&data, "admin@acme.example", "admin");
    let (st, _) = call(port, "PUT", "/v1/facts", &admin, &json!({"x": 1}));
    assert_eq!(st, 200);
    assert_eq!(mode(&data), 0o700, "data dir");
    for f in [
        "mandate.sqlite3",
        "mandate.sqlite3-wal",
        "mandate.sqlite3-shm",
        "authority.jwk",
        "local-issuer.jwk",
    ] {
        let p = data.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        } else {
            assert_ne!(f, "mandate.sqlite3", "the database is where it should be");
        }
    }
    stop(child);
}

#[test]
fn a_client_that_connects_the_moment_the_port_answers_finds_the_keys_in_force() {
    // The port is only listened on once the data directory is open: the
    // first connection finds the local issuer's key in the file, and a token
    // minted from that file at that moment is accepted (before, `mandate
    // token` could make a second key while the server made its own, and the
    // server refused the token: "unknown kid").
    for _ in 0..3 {
        let data = temp().join("data");
        let port = free_port();
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "serve exited");
            assert!(Instant::now() < deadline, "serve did not listen");
            std::thread::sleep(Duration::from_millis(1));
        }
        let child = Guard(child);
        assert!(
            data.join("local-issuer.jwk").exists() && data.join("authority.jwk").exists(),
            "the port answered before the keys were in place"
        );
        let admin = token(&data, "admin@acme.example", "admin");
        let (st, body) = call(port, "PUT", "/v1/facts", &admin, &json!({"x": 1}));
        assert_eq!(st, 200, "{body}");
        stop(child);
    }
}

#[test]
fn an_empty_key_file_left_by_an_interrupted_first_start_does_not_wedge_the_next() {
    let data = temp().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("authority.jwk"), b"").unwrap();
    let port = free_port();
    let child = Guard(start(&data, port));
    let (st, jwks) = call(port, "GET", "/.well-known/jwks.json", "", &json!(null));
    assert_eq!(st, 200);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert!(std::fs::metadata(data.join("authority.jwk")).unwrap().len() > 0);
    stop(child);
}

#[test]
fn a_checkpoint_that_cannot_be_written_does_not_wedge_the_writer() {
    let data = temp().join("data");
    let port = free_port();
    let child = Guard(start(&data, port));
    let admin = token(&data, "admin@acme.example", "admin");
    let (st, _) = call(port, "PUT", "/v1/facts", &admin, &json!({"n": 0}));
    assert_eq!(st, 200);
    // The checkpoint's temporary file cannot be created (as on a full disk).
    // The checkpoint of the write above may still be in flight (it is
    // written after the answer): wait until its temporary file is renamed.
    let blocker = data.join("audit-checkpoint.tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while let Err(e) = std::fs::create_dir(&blocker) {
        assert!(std::time::Instant::now() < deadline, "{e}");
        std::thread::sleep(Duration::from_millis(10));
    }
    for n in 1..=3 {
        let (st, r) = call(port, "PUT", "/v1/facts", &admin, &json!({"n": n}));
        assert_eq!(st, 200, "a committed change is answered as committed: {r}");
    }
    // The checkpoint is written after the commit is answered (within
    // `CHECKPOINT_EVERY`), so health reports its failure moments later.
    let health_becomes = |want: u16| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (st, h) = call(port, "GET", "/healthz", "", &json!(null));
            if st == want || std::time::Instant::now() > deadline {
                return (st, h);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (st, h) = health_becomes(503);
    assert_eq!(st, 503, "{h}");
    assert!(
        h["problem"]
            .as_str()
            .is_some_and(|p| p.contains("checkpoint")),
        "{h}"
    );
    // Space returns: the writer catches up without a restart.
    std::fs::remove_dir(&blocker).unwrap();
    let (st, _) = call(port, "PUT", "/v1/facts", &admin, &json!({"n": 4}));
    assert_eq!(st, 200);
    let (st, h) = health_becomes(200);
    assert_eq!(st, 200, "{h}");
    let (st, facts) = call(port, "GET", "/v1/facts", &admin, &json!(null));
    assert_eq!((st, &facts["facts"]["n"]), (200, &json!(4)));
    stop(child);
    let out = Command::new(bin())
        .args(["--output", "json", "audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["intact"], true, "{report}");
    // Checked against a checkpoint kept elsewhere (this one), too.
    let kept = data.with_extension("kept.jws");
    std::fs::copy(data.join("audit-checkpoint.jws"), &kept).unwrap();
    let out = Command::new(bin())
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .arg("--against")
        .arg(&kept)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("INTACT"));
}

fn start_with_config(dir: &Path, port: u16, toml: &str) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.with_extension("toml");
    std::fs::write(&cfg, toml).unwrap();
    serve(dir, port, Some(&cfg))
}

/// Whether the server closed this connection (EOF, or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn half_sent_requests_are_cut_off_and_cannot_hold_the_service_or_its_shutdown() {
    let data = temp().join("data");
    let port = free_port();
    let mut child = Guard(start_with_config(
        &data,
        port,
        "header_read_timeout_secs = 1\nmax_connections = 16\nshutdown_deadline_secs = 2\n",
    ));
    // Slowloris: connections that never finish their headers.
    let mut slow: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Past the connection limit, one more is closed at once.
    let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        closed_within(&mut extra, Duration::from_secs(1)),
        "over the limit, served anyway"
    );
    // The header timeout closes every half-sent request.
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "a half-sent request was held"
        );
    }
    // And the service answers again.
    let (st, _) = call(port, "GET", "/healthz", "", &json!(null));
    assert_eq!(st, 200);
    // A client holding a request open cannot keep SIGTERM from stopping it.
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.write_all(b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "SIGTERM did not stop the authority"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn local_console_identities_need_a_loopback_listen_address() {
    let data = temp().join("data");
    let cfg = data.with_extension("toml");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        &cfg,
        "[[console_identity]]\nsub = \"admin@example.com\"\nrole = \"admin\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--data-dir"])
        .arg(&data)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("console_identity"));
}

#[test]
fn with_log_format_json_every_request_is_one_structured_line_with_its_request_id() {
    let dir = temp();
    let port = free_port();
    let log = dir.join("serve.log");
    let child = Command::new(bin())
        .args(["serve", "--log-format", "json", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // One request names its id; one does not and is given one.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: trace-me-42\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.to_ascii_lowercase()
            .contains("x-request-id: trace-me-42"),
        "{out}"
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.to_ascii_lowercase().contains("x-request-id: "),
        "an id is given: {out}"
    );
    stop(guard);
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let traced = records
        .iter()
        .find(|r| r["span"]["request_id"] == "trace-me-42");
    let traced = traced.unwrap_or_else(|| panic!("no record of the request: {text}"));
    assert_eq!(traced["span"]["path"], "/healthz");
    assert!(traced["level"].is_string() && traced["timestamp"].is_string());
}
