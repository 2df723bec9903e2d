//! The signal path and the gateway, attacked with one credential at a time
//! over real sockets.

use super::*;

/// A stream id of the gateway (`gateway-1`), as an admin of the tenant sees it.
fn gateway_stream(dir: &std::path::Path, authority: SocketAddr) -> String {
    let admin = token(dir, "admin@acme.example", Role::Admin);
    let (st, streams) = http(
        authority,
        "GET",
        "/ssf/streams",
        &[("Authorization", format!("Bearer {admin}"))],
        "",
    );
    assert_eq!(st, 200, "{streams}");
    streams[0]["stream_id"].as_str().unwrap().to_owned()
}

#[test]
fn a_genuine_set_replayed_to_the_push_receiver_without_the_streams_authorization_is_refused() {
    let dir = temp("replayed-set");
    let (authority, state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Push,
        "https://api.github.com",
    );
    let stream = gateway_stream(&dir, authority.addr);
    // A heartbeat signed by the authority for this very stream, as a log or
    // a proxied client could have captured it.
    let hb = mandate_authority::signals::Signal {
        seq: 0,
        kind: "heartbeat".into(),
        mandate_id: None,
        body: json!({"head": 0, "beat": i64::MAX - 1}),
        at_ms: mandate_authority::auth::now_ms(),
    };
    let set = mandate_authority::signals::to_set(
        &state.authority(),
        &state.issuer,
        &format!("stream:{stream}"),
        "acme",
        &hb,
    );
    for auth in [None, Some("Bearer guess")] {
        let mut headers = vec![("Content-Type", "application/secevent+jwt".to_owned())];
        if let Some(a) = auth {
            headers.push(("Authorization", a.to_owned()));
        }
        let (st, body) = http(gateway.addr, "POST", "/_mandate/ssf", &headers, &set);
        assert_eq!(st, 401, "{body}");
    }
    gw.stop();
}

#[test]
fn another_enforcer_of_the_tenant_cannot_pause_or_fast_forward_the_gateways_stream() {
    let dir = temp("stream-owner");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
    );
    let stream = gateway_stream(&dir, authority.addr);
    // The enforcer token an agent runtime was handed.
    let runtime = format!("Bearer {}", token(&dir, "agent-runtime-9", Role::Enforcer));
    let attempts = [
        (
            "POST",
            "/ssf/status".to_owned(),
            json!({"stream_id": stream, "status": "paused"}).to_string(),
        ),
        (
            "POST",
            "/ssf/status".to_owned(),
            json!({"stream_id": stream, "status": "disabled"}).to_string(),
        ),
        (
            "POST",
            format!("/ssf/poll/{stream}"),
            json!({"ack": ["sig-1000000"], "returnImmediately": true}).to_string(),
        ),
        (
            "DELETE",
            format!("/ssf/streams?stream_id={stream}"),
            String::new(),
        ),
        (
            "PATCH",
            "/ssf/streams".to_owned(),
            json!({"stream_id": stream, "description": "mine now"}).to_string(),
        ),
    ];
    for (method, path, body) in &attempts {
        let (st, r) = http(
            authority.addr,
            method,
            path,
            &[("Authorization", runtime.clone())],
            body,
        );
        assert_eq!(st, 404, "{method} {path}: {r}");
    }
    let (st, status) = http(
        authority.addr,
        "GET",
        &format!("/ssf/status?stream_id={stream}"),
        &[(
            "Authorization",
            format!("Bearer {}", token(&dir, "admin@acme.example", Role::Admin)),
        )],
        "",
    );
    assert_eq!((st, &status["status"]), (200, &json!("enabled")));
    // Even its owner cannot acknowledge what was never delivered.
    let owner = format!("Bearer {}", token(&dir, "gateway-1", Role::Enforcer));
    let (st, r) = http(
        authority.addr,
        "POST",
        &format!("/ssf/poll/{stream}"),
        &[("Authorization", owner)],
        &json!({"ack": ["sig-1000000"], "returnImmediately": true}).to_string(),
    );
    assert_eq!(st, 400, "{r}");
    assert!(gw.replica.is_fresh());
    gw.stop();
}

#[test]
fn a_paused_stream_makes_its_gateway_deny_as_stale_instead_of_going_quiet() {
    for delivery in [Delivery::Push, Delivery::Poll] {
        let dir = temp(&format!("paused-{delivery:?}"));
        let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
        let upstream = stub_github();
        let (_, mandate) = grant(&dir, authority.addr, &pr_request(123));
        let (gateway, gw) = start_gateway(
            &dir,
            authority.addr,
            upstream.addr,
            delivery,
            "https://api.github.com",
        );
        assert_eq!(read_pr(gateway.addr, &mandate, 123).0, 200);
        let stream = gateway_stream(&dir, authority.addr);
        let admin = format!("Bearer {}", token(&dir, "admin@acme.example", Role::Admin));
        let (st, r) = http(
            authority.addr,
            "POST",
            "/ssf/status",
            &[("Authorization", admin)],
            &json!({"stream_id": stream, "status": "paused", "reason": "maintenance"}).to_string(),
        );
        assert_eq!(st, 200, "{r}");
        let start = Instant::now();
        loop {
            let (st, body) = read_pr(gateway.addr, &mandate, 123);
            if st == 403 {
                assert_eq!(
                    body["reasons"],
                    json!(["state_stale"]),
                    "{delivery:?}: {body}"
                );
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{delivery:?}: still allowed while paused"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw.stop();
    }
}

#[test]
fn the_gateway_requires_the_acting_agent_and_it_must_be_the_leaf() {
    let dir = temp("gateway-agent");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(123));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
    );
    let path = "/repos/acme/app/pulls/123";
    let bearer = ("Authorization", "Bearer gho_still_valid".to_owned());
    let (st, body) = http(
        gateway.addr,
        "GET",
        path,
        &[
            ("Mandate", mandate.clone()),
            bearer.clone(),
            (INSTANCE, String::new()),
        ],
        "",
    );
    assert_eq!(
        (st, &body["reasons"]),
        (403, &json!(["agent_instance_mismatch"])),
        "{body}"
    );
    let (st, body) = http(
        gateway.addr,
        "GET",
        path,
        &[
            ("Mandate", mandate.clone()),
            bearer.clone(),
            (INSTANCE, "inst-someone-else".into()),
        ],
        "",
    );
    assert_eq!(
        (st, &body["reasons"]),
        (403, &json!(["agent_instance_mismatch"])),
        "{body}"
    );
    let (st, body) = http(
        gateway.addr,
        "GET",
        path,
        &[
            ("Mandate", mandate.clone()),
            bearer.clone(),
            ("Mandate-Agent", "urn:agent:other".into()),
        ],
        "",
    );
    assert_eq!(
        (st, &body["reasons"]),
        (403, &json!(["agent_mismatch"])),
        "{body}"
    );
    // Without the header at all (a raw client, not this test's helper).
    let mut s = TcpStream::connect(gateway.addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nMandate: {mandate}\r\nAuthorization: Bearer gho_still_valid\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("agent_instance_missing"), "{out}");
    gw.stop();
}

/// A small deterministic generator (xorshift), so a failing history can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The authority's answer for one mandate reading its PR.
fn authority_reasons(
    authority: SocketAddr,
    dir: &std::path::Path,
    mandate: &str,
    pr: u32,
) -> Value {
    let enforcer = format!("Bearer {}", token(dir, "gateway-2", Role::Enforcer));
    // As an enforcement point forwards it: with the agent's proof for the
    // call it received.
    let url = format!("https://pep.example/repos/acme/app/pulls/{pr}");
    let req = json!({
        "subject": {"type": "agent", "id": "urn:agent:code/pr-watcher@1.0", "properties": {"mandate": mandate, "access_token": "gho_still_valid"}},
        "context": {"agent_instance": "inst-1", "htm": "GET", "htu": url,
            "dpop": proof("GET", &url, Some("gho_still_valid"))},
        "action": {"name": "read"},
        "resource": {"type": "github_pull_request", "id": format!("https://api.github.com/repos/acme/app/pulls/{pr}"),
            "properties": {"repo": "acme/app", "number": pr}}
    });
    let (st, d) = http(
        authority,
        "POST",
        "/access/v1/evaluation",
        &[("Authorization", enforcer)],
        &req.to_string(),
    );
    assert_eq!(st, 200, "{d}");
    d["context"]["reasons"].clone()
}

/// On the PostgreSQL run (`MANDATE_TEST_POSTGRES`): a fresh database.
fn fresh_database() -> Option<mandate_authority::config::DatabaseUrl> {
    let base = std::env::var("MANDATE_TEST_POSTGRES").ok()?;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "mandate_history_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    mandate_store::connect_postgres(&base)
        .unwrap()
        .execute_batch(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (head, _) = base.rsplit_once('/').unwrap();
    Some(mandate_authority::config::DatabaseUrl::parse(&format!("{head}/{name}")).unwrap())
}

#[test]
fn for_random_histories_every_decision_is_the_same_after_a_restart_and_at_a_gateway() {
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 0xdead_beef_1234_5678, 42] {
        let mut rng = Rng(seed);
        let dir = temp(&format!("history-{seed:x}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fixed = listener.local_addr().unwrap().to_string();
        drop(listener);
        // On PostgreSQL, the history is also decided at a second replica.
        let database = fresh_database();
        let on = |c: &mut mandate_authority::Config| c.database.clone_from(&database);
        let (authority, state) = start_authority_with(&dir, &fixed, on);
        // The second replica follows the history as it is written.
        let replica = database.as_ref().map(|db| {
            let other = temp(&format!("history-{seed:x}-replica"));
            std::fs::create_dir_all(other.join("data")).unwrap();
            for f in ["authority.jwk", "local-issuer.jwk"] {
                std::fs::copy(dir.join("data").join(f), other.join("data").join(f)).unwrap();
            }
            start_authority_with(&other, "127.0.0.1:0", |c| c.database = Some(db.clone()))
        });
        let upstream = stub_github();
        let admin = format!("Bearer {}", token(&dir, "admin@acme.example", Role::Admin));
        let mut mandates: Vec<(String, String, u32)> = Vec::new();
        for step in 0..14u32 {
            if step == 7 {
                // A second epoch: events from here on can come after, or
                // (dated back) before, the mandates issued so far.
                std::thread::sleep(Duration::from_millis(1100));
            }
            let pr = u32::try_from(rng.below(3)).unwrap() + 1;
            match rng.below(5) {
                0 | 1 => {
                    let (id, m) = grant(&dir, authority.addr, &pr_request(pr));
                    mandates.push((id, m, pr));
                }
                2 => {
                    let at = match rng.below(3) {
                        0 => None,
                        1 => Some(now_secs()),
                        _ => Some(now_secs() - 30),
                    };
                    let mut ev = json!({"id": format!("ev-{step}"), "type": "pull_request.merged", "subject": format!("github:acme/app#{pr}")});
                    if let Some(t) = at {
                        ev["occurred_at"] = json!(
                            mandate_core::timestamp::UnixTime::from_secs(t)
                                .unwrap()
                                .to_string()
                        );
                    }
                    let (st, r) = http(
                        authority.addr,
                        "POST",
                        "/v1/events",
                        &[("Authorization", admin.clone())],
                        &ev.to_string(),
                    );
                    assert!(st == 202 || st == 200, "{r}");
                }
                3 if !mandates.is_empty() => {
                    let (id, _, _) =
                        &mandates[usize::try_from(rng.below(mandates.len() as u64)).unwrap()];
                    let op =
                        ["suspend", "resume", "revoke"][usize::try_from(rng.below(3)).unwrap()];
                    let _ = http(
                        authority.addr,
                        "POST",
                        &format!("/v1/mandates/{id}/{op}"),
                        &[("Authorization", admin.clone())],
                        "",
                    );
                }
                _ => {}
            }
        }
        let before: Vec<Value> = mandates
            .iter()
            .map(|(_, m, pr)| authority_reasons(authority.addr, &dir, m, *pr))
            .collect();
        // A gateway fed by signals, by poll or by push, agrees with the authority.
        for delivery in [Delivery::Poll, Delivery::Push] {
            let (gateway, gw) = start_gateway(
                &dir,
                authority.addr,
                upstream.addr,
                delivery,
                "https://api.github.com",
            );
            for ((_, m, pr), want) in mandates.iter().zip(&before) {
                let (st, body) = read_pr(gateway.addr, m, *pr);
                let got = if st == 200 {
                    json!([])
                } else {
                    body["reasons"].clone()
                };
                assert_eq!(
                    &got, want,
                    "seed {seed:x}: the {delivery:?} gateway disagrees with the authority"
                );
            }
            gw.stop();
            drop(gateway);
        }
        // The other replica, once it has applied the log this far, decides
        // the same.
        if let Some((replica, rs)) = &replica {
            let head = state.store.read(mandate_store::audit::head).unwrap().seq;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while rs
                .cluster
                .applied
                .load(std::sync::atomic::Ordering::Acquire)
                < head
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "seed {seed:x}: the replica did not catch up"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let there: Vec<Value> = mandates
                .iter()
                .map(|(_, m, pr)| authority_reasons(replica.addr, &dir, m, *pr))
                .collect();
            assert_eq!(
                before, there,
                "seed {seed:x}: another replica decides differently"
            );
        }
        // And a restart changes nothing.
        drop(authority);
        drop(state);
        let (authority, _state) = start_authority_with(&dir, &fixed, on);
        let after: Vec<Value> = mandates
            .iter()
            .map(|(_, m, pr)| authority_reasons(authority.addr, &dir, m, *pr))
            .collect();
        assert_eq!(before, after, "seed {seed:x}: a restart changed decisions");
        assert!(!mandates.is_empty());
    }
}

#[test]
fn a_set_the_receiver_rejects_is_not_sent_forever_and_does_not_stall_the_ones_after() {
    let dir = temp("push-400");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    // A receiver that refuses the first data SET (400) and takes the rest.
    let seen: Arc<std::sync::Mutex<Vec<(u16, i64)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let receiver = run_router("127.0.0.1:0", move || {
        axum::Router::new().route(
            "/ssf",
            post(move |body: String| {
                let log = Arc::clone(&log);
                async move {
                    let claims: Value =
                        mandate_core::jws::unverified_payload(body.trim()).unwrap_or_default();
                    let heartbeat = claims["events"].as_object().is_some_and(|e| {
                        e.keys()
                            .any(|k| k.ends_with("/heartbeat") || k.ends_with("/stream-updated"))
                    });
                    let seq: i64 = claims["txn"].as_str().unwrap_or("0").parse().unwrap_or(0);
                    let mut log = log.lock().unwrap();
                    let status = if !heartbeat && !log.iter().any(|(st, _)| *st == 400) {
                        400
                    } else {
                        202
                    };
                    if !heartbeat {
                        log.push((status, seq));
                    }
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        )
    });
    let enforcer = format!("Bearer {}", token(&dir, "gateway-9", Role::Enforcer));
    let (st, r) = http(
        authority.addr,
        "POST",
        "/ssf/streams",
        &[("Authorization", enforcer)],
        &json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": format!("http://{}/ssf", receiver.addr)}}).to_string(),
    );
    assert_eq!(st, 201, "{r}");
    let admin = format!("Bearer {}", token(&dir, "admin@acme.example", Role::Admin));
    for n in 0..3 {
        let (st, _) = http(
            authority.addr,
            "PUT",
            "/v1/facts",
            &[("Authorization", admin.clone())],
            &json!({"n": n}).to_string(),
        );
        assert_eq!(st, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = seen.lock().unwrap().clone();
        let accepted: Vec<i64> = log
            .iter()
            .filter(|(st, _)| *st == 202)
            .map(|(_, s)| *s)
            .collect();
        if accepted.len() >= 2 {
            // The rejected one was sent once, and the later ones went through.
            assert_eq!(
                log.iter().filter(|(st, _)| *st == 400).count(),
                1,
                "{log:?}"
            );
            let rejected = log.iter().find(|(st, _)| *st == 400).unwrap().1;
            assert!(
                !accepted.contains(&rejected),
                "the rejected SET was sent again: {log:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream stalled on a rejected SET: {log:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_gateway_receives_the_audit_checkpoint_to_keep() {
    let dir = temp("checkpoint-signal");
    let (authority, state) =
        start_authority_with(&dir, "127.0.0.1:0", |c| c.checkpoint_signal_secs = 1);
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(7));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Push,
        "https://api.github.com",
    );
    assert_eq!(read_pr(gateway.addr, &mandate, 7).0, 200);
    let key = state.authority().verifying_key().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        if let Some(cp) = gw.replica.audit_checkpoint() {
            break cp;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint reached the gateway"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Signed by the authority, naming a record the log has.
    let cp = mandate_store::audit::decode_checkpoint(&kept, &key).unwrap();
    assert!(cp.seq > 0);
    let conn = mandate_store::open_read_only(&dir.join("data")).unwrap();
    assert_eq!(
        mandate_store::audit::verify_against(&conn, &kept, &key).unwrap(),
        None
    );
    let (_, health) = http(gateway.addr, "GET", "/_mandate/healthz", &[], "");
    assert!(health["audit_checkpoint"].is_string(), "{health}");
    gw.stop();
}
