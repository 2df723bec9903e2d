//! End to end over loopback: the authority, the gateway (poll and push) and
//! a stub GitHub upstream, as separate servers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use hmac::Mac;
use mandate_authority::auth::{Role, mint, now_secs};
use mandate_authority::state::{issuer_key_path, load_or_create_key};
use mandate_enforce::gateway::{Delivery, Gateway, GatewayConfig, RouteConfig};
use serde_json::{Value, json};

const SECRET: &str = "a-webhook-secret-of-some-length";

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mandate-e2e-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server on its own runtime thread; stops when dropped.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_router(addr: &str, make: impl FnOnce() -> axum::Router + Send + 'static) -> Running {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = addr.to_owned();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(
                listener,
                make().into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    Running {
        addr: rx.recv().unwrap(),
        stop: Some(stop),
        thread: Some(thread),
    }
}

fn start_authority(
    dir: &std::path::Path,
    addr: &str,
) -> (Running, Arc<mandate_authority::AppState>) {
    start_authority_with(dir, addr, |_| {})
}

fn start_authority_with(
    dir: &std::path::Path,
    addr: &str,
    edit: impl FnOnce(&mut mandate_authority::Config),
) -> (Running, Arc<mandate_authority::AppState>) {
    std::fs::write(dir.join("github.secret"), SECRET).unwrap();
    let mut config = mandate_authority::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        issuer: Some("https://mandate.test".into()),
        webhook: vec![mandate_authority::config::WebhookSource {
            name: "github".into(),
            tenant: "acme".into(),
            secret_file: dir.join("github.secret"),
        }],
        ..mandate_authority::Config::default()
    };
    edit(&mut config);
    let state = mandate_authority::AppState::open(config).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let st = Arc::clone(&state);
    let addr = addr.to_owned();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            mandate_authority::serve(st, listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    (
        Running {
            addr: rx.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        },
        state,
    )
}

/// The header that says which agent instance acts (the gateway's default).
const INSTANCE: &str = "Mandate-Agent-Instance";

/// The presented chain's leaf instance, read without verifying.
fn leaf_instance(mandate: &str) -> Option<String> {
    let chain = mandate_core::chain::parse_unverified(mandate).ok()?;
    Some(chain.last()?.claims.agent.instance.clone())
}

/// The test agent's holder key (the one its requests bind).
fn holder() -> mandate_core::keys::SigningKey {
    mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [2; 32])
}

/// A header that keeps `http` from adding the agent's proof.
const NO_PROOF: &str = "x-test-no-proof";

/// A fresh DPoP proof by the test agent for `method url`.
fn proof(method: &str, url: &str, token: Option<&str>) -> String {
    let mut jti = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut jti);
    let now = mandate_core::timestamp::UnixTime::from_secs(now_secs()).unwrap();
    mandate_core::pop::make_proof(&holder(), method, url, token, &hex::encode(jti), now)
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    // As an agent sends it: which instance acts, the presented leaf's holder
    // (unless the test says otherwise, or sends no mandate).
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(INSTANCE))
        && let Some(instance) = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("mandate"))
            .and_then(|(_, m)| leaf_instance(m))
    {
        req.push_str(&format!("{INSTANCE}: {instance}\r\n"));
    }
    // ... and the holder's proof for this call, when the leaf binds the test
    // agent's key (unless the test sends its own, or none).
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let holds = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("mandate"))
        .and_then(|(_, m)| mandate_core::chain::parse_unverified(m).ok())
        .and_then(|c| c.last().and_then(|l| l.claims.agent.cnf.clone()))
        .is_some_and(|cnf| cnf.jwk.thumbprint() == holder().public_jwk().thumbprint());
    if holds && !has("dpop") && !has(NO_PROOF) {
        let token = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.strip_prefix("Bearer "));
        let (m, p) = match (
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-original-method")),
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-original-uri")),
        ) {
            (Some((_, m)), Some((_, u))) => (m.clone(), u.clone()),
            _ => (method.to_owned(), path.to_owned()),
        };
        let p = p.split('?').next().unwrap_or_default();
        req.push_str(&format!(
            "DPoP: {}\r\n",
            proof(&m, &format!("http://{addr}{p}"), token)
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

fn token(dir: &std::path::Path, sub: &str, role: Role) -> String {
    mint(
        &load_or_create_key(&issuer_key_path(&dir.join("data"))).unwrap(),
        sub,
        role,
        "acme",
        now_secs(),
        3600,
    )
}

fn stub_github() -> Running {
    run_router("127.0.0.1:0", || {
        axum::Router::new()
            .route("/repos/{owner}/{repo}/pulls/{number}", get(|axum::extract::Path((o, r, n)): axum::extract::Path<(String, String, u32)>, headers: axum::http::HeaderMap| async move {
                // What reached the upstream, for the tests that look.
                let seen: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
                    .collect();
                axum::Json(json!({"repo": format!("{o}/{r}"), "number": n, "state": "open", "seen_headers": seen}))
            }))
            .route("/v2/entities/screen", post(|| async { axum::Json(json!({"screened": true})) }))
    })
}

fn start_gateway(
    dir: &std::path::Path,
    authority: SocketAddr,
    upstream: SocketAddr,
    delivery: Delivery,
    location_base: &str,
) -> (Running, Arc<Gateway>) {
    start_gateway_with(dir, authority, upstream, delivery, location_base, |_| {})
}

fn start_gateway_with(
    dir: &std::path::Path,
    authority: SocketAddr,
    upstream: SocketAddr,
    delivery: Delivery,
    location_base: &str,
    edit: impl FnOnce(&mut GatewayConfig),
) -> (Running, Arc<Gateway>) {
    std::fs::write(
        dir.join("enforcer.token"),
        token(dir, "gateway-1", Role::Enforcer),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = listener.local_addr().unwrap().to_string();
    drop(listener);
    let config = GatewayConfig {
        listen: listen.clone(),
        authority: format!("http://{authority}"),
        token_file: Some(dir.join("enforcer.token")),
        client_credentials: None,
        staleness_ms: 1500,
        delivery,
        push_url: None,
        upstream: format!("http://{upstream}"),
        location_base: location_base.into(),
        spool_file: Some(dir.join("gateway.spool")),
        agent_instance_header: "mandate-agent-instance".into(),
        agent_header: "mandate-agent".into(),
        proof_of_possession: mandate_core::pop::Mode::Required,
        public_url: None,
        dpop_nonce: false,
        tls_cert_file: None,
        tls_key_file: None,
        allow_plain_http: false,
        client_certificates: mandate_enforce::gateway::ClientCertificates::Off,
        client_ca_file: None,
        upstream_ca_file: None,
        authority_ca_file: None,
        key_refresh_secs: 60,
        replay_capacity: mandate_core::pop::DEFAULT_REPLAY_CAPACITY,
        route: vec![
            RouteConfig {
                method: "GET".into(),
                path: "/repos/{owner}/{repo}/pulls/{number}".into(),
                type_: "github_pull_request".into(),
                action: "read".into(),
                resource: [
                    ("repo".to_owned(), "{owner}/{repo}".to_owned()),
                    ("number".to_owned(), "{number:int}".to_owned()),
                ]
                .into(),
                location_base: None,
            },
            RouteConfig {
                method: "POST".into(),
                path: "/v2/entities/screen".into(),
                type_: "sanctions_screening".into(),
                action: "screen_entity".into(),
                resource: Default::default(),
                location_base: Some("https://screening.example.net".into()),
            },
        ],
    };
    let mut config = config;
    edit(&mut config);
    config.validate().unwrap();
    let gw = Gateway::start(config).unwrap();
    let g = Arc::clone(&gw);
    let running = run_router(&listen, move || g.router());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.replica.is_fresh() {
        assert!(Instant::now() < deadline, "gateway never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }
    (running, gw)
}

fn pr_request(pr: u32) -> Value {
    json!({
        "principal": "vp@acme.example",
        "agent": {"id": "urn:agent:code/pr-watcher@1.0", "instance": "inst-1", "cnf": {"jwk": holder().public_jwk()}},
        "purpose": {"objective": format!("Watch PR #{pr} and announce its merge"), "business_context": "Release 4.2"},
        "authorization_details": [{"type": "github_pull_request", "locations": ["https://api.github.com/repos/acme/app"],
            "resource": {"repo": "acme/app", "number": pr}, "actions": ["read"]}],
        "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z", "terminal_events": [{"type": "pull_request.merged", "subject": format!("github:acme/app#{pr}")}]},
        "token_binding": {"access_token_sha256": mandate_core::hash::sha256_b64(b"gho_still_valid")},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })
}

fn grant(dir: &std::path::Path, authority: SocketAddr, request: &Value) -> (String, String) {
    let (st, r) = http(
        authority,
        "POST",
        "/v1/requests",
        &[(
            "Authorization",
            format!("Bearer {}", token(dir, "agent-7", Role::Agent)),
        )],
        &request.to_string(),
    );
    assert_eq!(st, 201, "{r}");
    let (st, a) = http(
        authority,
        "POST",
        &format!("/v1/requests/{}/approve", r["id"].as_str().unwrap()),
        &[(
            "Authorization",
            format!("Bearer {}", token(dir, "vp@acme.example", Role::Principal)),
        )],
        "",
    );
    assert_eq!(st, 200, "{a}");
    (
        a["mandate_id"].as_str().unwrap().to_owned(),
        a["mandate"].as_str().unwrap().to_owned(),
    )
}

fn merge(authority: SocketAddr, pr: u32, delivery: &str) {
    let body = json!({"action": "closed", "number": pr, "pull_request": {"number": pr, "merged": true, "merged_at": now_rfc3339()}, "repository": {"full_name": "acme/app"}}).to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let (st, r) = http(
        authority,
        "POST",
        "/v1/webhooks/github/github",
        &[
            ("X-GitHub-Event", "pull_request".into()),
            ("X-GitHub-Delivery", delivery.into()),
            ("X-Hub-Signature-256", sig),
        ],
        &body,
    );
    assert_eq!(st, 202, "{r}");
}

fn read_pr(gateway: SocketAddr, mandate: &str, pr: u32) -> (u16, Value) {
    http(
        gateway,
        "GET",
        &format!("/repos/acme/app/pulls/{pr}"),
        &[
            ("Mandate", mandate.to_owned()),
            ("Authorization", "Bearer gho_still_valid".into()),
        ],
        "",
    )
}

fn until_denied(gateway: SocketAddr, mandate: &str, pr: u32) -> (Duration, Value) {
    let start = Instant::now();
    loop {
        let (st, body) = read_pr(gateway, mandate, pr);
        if st == 403 {
            return (start.elapsed(), body);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still allowed after 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ghost_execution(delivery: Delivery) {
    let dir = temp("ghost");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (id, mandate) = grant(&dir, authority.addr, &pr_request(123));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        delivery,
        "https://api.github.com",
    );

    let (st, body) = read_pr(gateway.addr, &mandate, 123);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["number"], 123, "the upstream answered");
    // Out of scope, no mandate, no route, wrong token: denied at the gateway.
    assert_eq!(read_pr(gateway.addr, &mandate, 124).0, 403);
    assert_eq!(
        http(gateway.addr, "GET", "/repos/acme/app/pulls/123", &[], "").1["reasons"],
        json!(["mandate_missing"])
    );
    assert_eq!(
        http(
            gateway.addr,
            "DELETE",
            "/repos/acme/app",
            &[("Mandate", mandate.clone())],
            ""
        )
        .1["reasons"],
        json!(["no_route"])
    );
    let (_, wrong) = http(
        gateway.addr,
        "GET",
        "/repos/acme/app/pulls/123",
        &[
            ("Mandate", mandate.clone()),
            ("Authorization", "Bearer someone-elses".into()),
        ],
        "",
    );
    assert_eq!(wrong["reasons"], json!(["token_binding_mismatch"]));

    merge(authority.addr, 123, "delivery-1");
    let (after, body) = until_denied(gateway.addr, &mandate, 123);
    assert_eq!(body["reasons"], json!(["completed"]), "{body}");
    assert!(after < Duration::from_secs(5));
    gw.stop();
    // The audit shows the merge as the end, and the attempt at the gateway after it.
    let conn = mandate_store::open_read_only(&dir.join("data")).unwrap();
    let (ended, later) = mandate_store::audit::after_end(&conn, &id).unwrap();
    let ended = ended.unwrap();
    assert_eq!(ended.kind.as_str(), "completed");
    assert!(
        ended.body["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("event:github:merge:acme/app#123@")),
        "{}",
        ended.body
    );
    assert_eq!(
        (ended.kind.as_str(), ended.body["by"].is_string()),
        ("completed", true)
    );
    // Decisions made at the gateway are placed by when they were made; an
    // allow can only appear inside the propagation window.
    assert!(
        later
            .iter()
            .any(|r| r.body.get("gateway").is_some() && r.body["reasons"] == json!(["completed"])),
        "{later:?}"
    );
    for r in later.iter().filter(|r| r.body["decision"] == "allow") {
        assert!(
            mandate_store::audit::decided_at(r) - ended.at_ms < 1000,
            "an allow long after the end: {r:?}"
        );
    }
}

#[test]
fn ghost_execution_through_the_gateway_by_poll() {
    ghost_execution(Delivery::Poll);
}

#[test]
fn ghost_execution_through_the_gateway_by_push() {
    ghost_execution(Delivery::Push);
}

#[test]
fn the_gateway_fails_closed_when_the_authority_is_silent_and_catches_up_after() {
    let dir = temp("stale");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fixed = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (authority, state) = start_authority(&dir, &fixed);
    let upstream = stub_github();
    let (id, mandate) = grant(&dir, authority.addr, &pr_request(123));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Poll,
        "https://api.github.com",
    );
    assert_eq!(read_pr(gateway.addr, &mandate, 123).0, 200);
    drop(authority);
    drop(state);
    let start = Instant::now();
    let (_, body) = until_denied(gateway.addr, &mandate, 123);
    assert_eq!(body["reasons"], json!(["state_stale"]));
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "denied before the staleness bound"
    );
    let (authority, _state) = start_authority(&dir, &fixed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_pr(gateway.addr, &mandate, 123).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the gateway did not catch up: {:?} {:?}",
            read_pr(gateway.addr, &mandate, 123),
            http(gateway.addr, "GET", "/_mandate/healthz", &[], "")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What changed while it was away is seen after the catch-up.
    let (st, _) = http(
        authority.addr,
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        &[(
            "Authorization",
            format!("Bearer {}", token(&dir, "vp@acme.example", Role::Principal)),
        )],
        "",
    );
    assert_eq!(st, 200);
    assert_eq!(
        until_denied(gateway.addr, &mandate, 123).1["reasons"],
        json!(["revoked"])
    );
    gw.stop();
    drop(authority);
    // Every decision the gateway made reached the audit log once, including
    // the ones made while the authority was down (spooled, then shipped).
    let data = dir.join("data");
    let conn = mandate_store::open_read_only(&data).unwrap();
    let batches: Vec<_> = mandate_store::audit::all(&conn)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == mandate_store::audit::DECISIONS)
        .collect();
    assert!(
        batches.iter().all(|b| b.body.get("missing").is_none()),
        "the authority saw decisions missing"
    );
    let shipped: Vec<Value> = batches
        .into_iter()
        .flat_map(mandate_store::audit::expand)
        .map(|r| r.body)
        .collect();
    // One series (this run's stream), numbered 0, 1, 2, ... without a hole
    // or a repeat: none lost, none recorded twice.
    let ids: Vec<&str> = shipped
        .iter()
        .map(|b| b["record_id"].as_str().unwrap())
        .collect();
    let series = ids[0].rsplit_once('-').unwrap().0;
    let expected: Vec<String> = (0..ids.len()).map(|n| format!("{series}-{n}")).collect();
    assert_eq!(ids, expected, "a decision was lost or recorded twice");
    assert!(
        shipped
            .iter()
            .any(|b| b["reasons"] == json!(["state_stale"])),
        "the decisions made while the authority was down were lost"
    );
    assert!(shipped.iter().any(|b| b["reasons"] == json!(["revoked"])));
    assert!(
        std::fs::metadata(dir.join("gateway.spool")).map_or(true, |m| m.len() == 0),
        "the spool was not emptied"
    );
    let jwk: mandate_core::keys::PrivateJwk =
        serde_json::from_slice(&std::fs::read(data.join("authority.jwk")).unwrap()).unwrap();
    let key = mandate_core::keys::SigningKey::from_private_jwk(&jwk)
        .unwrap()
        .verifying_key()
        .unwrap();
    assert!(
        mandate_store::audit::verify(&conn, &mandate_store::checkpoint_path(&data), &key)
            .unwrap()
            .intact
    );
}

#[path = "e2e/nginx.rs"]
mod nginx;

fn procurement_request() -> Value {
    let c: Value =
        serde_json::from_str(include_str!("../../../testdata/procurement-mandate.json")).unwrap();
    json!({
        "principal": "vp@acme.example",
        "agent": {"id": c["agent"]["id"], "instance": c["agent"]["instance"],
            "cnf": {"jwk": mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [2; 32]).public_jwk()}},
        "purpose": c["purpose"], "authorization_details": c["authorization_details"], "conditions": c["conditions"],
        "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z",
            "terminal_events": [{"type": "contingency_program.cancelled", "subject": "program:contingency-q4"}]},
        "delegation": c["delegation"],
        "discovery": {"types": ["sanctions_screening"], "locations": ["https://screening.example.net/v2"],
            "actions": ["screen_entity"], "max_lifetime_secs": 300}
    })
}

#[test]
fn the_taxi_a_discovered_tool_is_usable_exactly_once_through_the_gateway() {
    let dir = temp("taxi");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let admin = format!("Bearer {}", token(&dir, "admin@acme.example", Role::Admin));
    let (st, _) = http(
        authority.addr,
        "PUT",
        "/v1/facts",
        &[("Authorization", admin.clone())],
        &json!({"procurement": {"contingency_program": {"status": "active"}}}).to_string(),
    );
    assert_eq!(st, 200);
    let (id, parent) = grant(&dir, authority.addr, &procurement_request());
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Push,
        "https://api.github.com",
    );
    let screen = |mandate: &str| {
        http(
            gateway.addr,
            "POST",
            "/v2/entities/screen",
            &[("Mandate", mandate.to_owned())],
            "{}",
        )
    };

    // The screening API is not in the mandate.
    let (st, body) = screen(&parent);
    assert_eq!(
        (st, &body["reasons"]),
        (403, &json!(["resource_type_not_permitted"]))
    );

    // The authority grants it once, within what the principal pre-approved.
    let agent = format!("Bearer {}", token(&dir, "agent-7", Role::Agent));
    let (st, g) = http(authority.addr, "POST", &format!("/v1/mandates/{id}/discovery"), &[("Authorization", agent)], &json!({"type": "sanctions_screening", "location": "https://screening.example.net/v2/entities/screen", "action": "screen_entity"}).to_string());
    assert_eq!(st, 200, "{g}");
    let once = g["mandate"].as_str().unwrap().to_owned();
    let (st, body) = screen(&once);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["screened"], true);
    let (st, body) = screen(&once);
    assert_eq!((st, &body["reasons"]), (403, &json!(["one_time_used"])));

    // The sub-agent cannot delegate further.
    let spec: mandate_core::chain::ChildSpec = serde_json::from_value(json!({
        "agent": {"id": "urn:agent:sub@1", "instance": "i"},
        "authorization_details": [{"type": "sanctions_screening", "locations": ["https://screening.example.net/v2/entities/screen"], "actions": ["screen_entity"]}],
        "lifecycle": {"hard_expiry": "2098-01-01T00:00:00Z", "one_time": true},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })).unwrap();
    let now = mandate_core::timestamp::UnixTime::from_secs(now_secs()).unwrap();
    let key =
        mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [2; 32]);
    assert!(
        mandate_core::chain::derive_child(
            &once,
            &key,
            &spec,
            mandate_core::id::MandateId::new("mnd-x").unwrap(),
            now
        )
        .is_err()
    );

    // A second grant works once more; then the program is cancelled and both stop at the gateway.
    let agent = format!("Bearer {}", token(&dir, "agent-7", Role::Agent));
    let (_, g2) = http(authority.addr, "POST", &format!("/v1/mandates/{id}/discovery"), &[("Authorization", agent)], &json!({"type": "sanctions_screening", "location": "https://screening.example.net/v2/entities/screen", "action": "screen_entity"}).to_string());
    let second = g2["mandate"].as_str().unwrap().to_owned();
    let events = format!("Bearer {}", token(&dir, "crm", Role::EventSource));
    let (st, _) = http(authority.addr, "POST", "/v1/events", &[("Authorization", events)], &json!({"id": "crm-1", "type": "contingency_program.cancelled", "subject": "program:contingency-q4"}).to_string());
    assert_eq!(st, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, body) = screen(&second);
        if st == 403 {
            assert!(
                body["reasons"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("completed")),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.stop();
}

#[test]
fn the_sdk_checks_delegates_discovers_and_is_told_when_the_mission_ends() {
    use mandate_enforce::sdk::AgentRuntime;
    let dir = temp("sdk");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let admin = format!("Bearer {}", token(&dir, "admin@acme.example", Role::Admin));
    http(
        authority.addr,
        "PUT",
        "/v1/facts",
        &[("Authorization", admin)],
        &json!({"procurement": {"contingency_program": {"status": "active"}}}).to_string(),
    );
    let (id, mandate) = grant(&dir, authority.addr, &procurement_request());
    let holder =
        mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [2; 32]);
    // The runtime is given two authority replicas, the first one down: it
    // fails over to the second for everything below.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sdk = AgentRuntime::connect(
        &format!("http://{down},http://{}", authority.addr),
        &token(&dir, "agent-7", Role::Agent),
        &token(&dir, "runtime", Role::Enforcer),
        holder,
        &mandate,
        Duration::from_secs(3),
    )
    .unwrap();
    let ended = Arc::new(std::sync::Mutex::new(None));
    let e = Arc::clone(&ended);
    sdk.on_end(move |x| *e.lock().unwrap() = Some(x.state));

    let search = mandate_core::request::EvaluationRequest::new("search", "vendor_portal", "https://vendor-portal.example.com/search",
        serde_json::from_value(json!({"category": "logistics", "region": "north-america", "contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"})).unwrap());
    assert!(sdk.check(&search).allow);
    let mut delete = search.clone();
    delete.action.name = "delete_vendor".into();
    assert_eq!(sdk.check(&delete).reasons, ["action_not_permitted"]);

    // Delegation: within the mandate it is derived and registered; beyond it, refused naming the dimension.
    let spec: mandate_core::chain::ChildSpec = serde_json::from_value(json!({
        "agent": {"id": "urn:agent:procurement/search@1", "instance": "inst-s", "cnf": {"jwk": self::holder().public_jwk()}},
        "authorization_details": [{"type": "vendor_portal", "locations": ["https://vendor-portal.example.com/search"],
            "resource": {"category": "logistics", "region": "north-america"}, "actions": ["search"],
            "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}],
        "lifecycle": {"hard_expiry": "2098-01-01T00:00:00Z"},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })).unwrap();
    let child = sdk.delegate(&spec, "sdk-child").unwrap();
    assert!(child.starts_with(&mandate));
    let mut wide = spec.clone();
    wide.authorization_details[0]
        .actions
        .push("initiate_payment".into());
    let err = sdk.delegate(&wide, "sdk-wide").unwrap_err();
    assert!(
        err.to_string().contains("attenuation_violation:actions"),
        "{err}"
    );

    // Discovery: inside the allowance granted, outside refused.
    assert!(
        sdk.discover(
            "sanctions_screening",
            "https://screening.example.net/v2/entities/screen",
            "screen_entity"
        )
        .is_ok()
    );
    assert!(
        sdk.discover("payments", "https://pay.example.net/", "pay")
            .is_err()
    );

    // A mandate-bound access token for a resource server that takes OAuth.
    let at = sdk
        .exchange_token(Some("https://vendor-portal.example.com/search"))
        .unwrap();
    assert!(at.expires_in > 0 && at.expires_in <= 300, "{at:?}");
    let claims = mandate_core::jws::unverified_payload(&at.token).unwrap();
    assert_eq!(
        claims["cnf"]["jkt"],
        json!(self::holder().public_jwk().thumbprint())
    );
    assert!(
        !format!("{at:?}").contains(&at.token),
        "Debug never shows the token"
    );

    // The principal revokes: the runtime is told and every check denies.
    let (st, _) = http(
        authority.addr,
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        &[(
            "Authorization",
            format!("Bearer {}", token(&dir, "vp@acme.example", Role::Principal)),
        )],
        "",
    );
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ended.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the runtime was never told");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        *ended.lock().unwrap(),
        Some(mandate_core::state::MandateState::Revoked)
    );
    assert_eq!(sdk.check(&search).reasons, ["revoked"]);
    assert_eq!(
        sdk.ended().unwrap().state,
        mandate_core::state::MandateState::Revoked
    );
    // ... and no new token comes out of an ended mandate.
    let refused = sdk.exchange_token(None).unwrap_err().to_string();
    assert!(
        refused.contains("invalid_grant") && refused.contains("revoked"),
        "{refused}"
    );
}

/// The current time, RFC 3339: when the merge happened.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    mandate_core::timestamp::UnixTime::from_secs(i64::try_from(secs).unwrap_or(0))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[path = "e2e/insider.rs"]
mod insider;

#[path = "e2e/pop.rs"]
mod pop;
