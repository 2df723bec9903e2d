//! A real server on a loopback port, a minimal HTTP/1.1 client, and the
//! mandates the scenarios use.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use mandate_authority::auth::{Role, mint, now_secs};
use mandate_authority::config::WebhookSource;
use mandate_authority::state::{issuer_key_path, load_or_create_key};
use mandate_authority::{AppState, Config};
use mandate_core::keys::{Algorithm, SigningKey};
use serde_json::{Value, json};

pub const WEBHOOK_SECRET: &str = "a-webhook-secret-of-some-length";

pub struct Server {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Whether this run tests the PostgreSQL backend
/// (`MANDATE_TEST_POSTGRES=postgres://USER@HOST:PORT/postgres`).
pub fn on_postgres() -> bool {
    std::env::var_os("MANDATE_TEST_POSTGRES").is_some()
}

/// On the PostgreSQL run: the database of the server whose scratch
/// directory is `dir`, created (empty) the first time and the same one when
/// the server is started again in `dir`.
pub fn test_database(dir: &std::path::Path) -> Option<mandate_authority::config::DatabaseUrl> {
    let base = std::env::var("MANDATE_TEST_POSTGRES").ok()?;
    let file = dir.join("database-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(mandate_authority::config::DatabaseUrl::parse(url.trim()).unwrap());
    }
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "mandate_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let admin = mandate_store::connect_postgres(&base).unwrap();
    admin
        .execute_batch(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    std::fs::write(&file, url.as_str()).unwrap();
    Some(mandate_authority::config::DatabaseUrl::parse(url.as_str()).unwrap())
}

/// The store of the server whose data directory is `data`, for a test to
/// read directly: the SQLite file, or on the PostgreSQL run its database.
pub fn open_db(data: &std::path::Path) -> mandate_store::sql::Connection {
    match data.parent().and_then(test_database) {
        Some(url) => mandate_store::connect_postgres(url.expose()).unwrap(),
        None => mandate_store::open_read_only(data).unwrap(),
    }
}

/// As [`open_db`], writable: for the tests that play an attacker with
/// direct access to the database.
pub fn open_db_rw(data: &std::path::Path) -> mandate_store::sql::Connection {
    match data.parent().and_then(test_database) {
        Some(url) => mandate_store::connect_postgres(url.expose()).unwrap(),
        None => mandate_store::sql::Connection::sqlite(
            rusqlite::Connection::open(mandate_store::database_path(data)).unwrap(),
        ),
    }
}

/// The statement that drops the append-only triggers of `table` (`audit`
/// or `audit_refs`) on this run's backend.
pub fn drop_append_only(table: &str) -> String {
    match (on_postgres(), table) {
        (true, "audit") => {
            "DROP TRIGGER audit_append_only ON audit; DROP TRIGGER audit_truncate ON audit;".into()
        }
        (true, _) => "DROP TRIGGER audit_refs_append_only ON audit_refs;".into(),
        (false, "audit") => "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;".into(),
        (false, _) => "DROP TRIGGER audit_refs_no_delete;".into(),
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mandate-authority-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Server {
    pub fn start(name: &str) -> Self {
        Self::start_in(temp_dir(name))
    }

    pub fn start_in(dir: PathBuf) -> Self {
        Self::start_configured(dir, |_| {})
    }

    pub fn start_configured(dir: PathBuf, edit: impl FnOnce(&mut Config)) -> Self {
        let secret = dir.join("github.secret");
        std::fs::write(&secret, WEBHOOK_SECRET).unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.join("data"),
            issuer: Some("https://mandate.test".into()),
            webhook: vec![WebhookSource {
                name: "github".into(),
                tenant: "acme".into(),
                secret_file: secret,
            }],
            // The CRM changes the procurement program's facts, nothing else.
            event_source: vec![mandate_authority::config::EventSourceFacts {
                sub: "crm".into(),
                tenant: "acme".into(),
                facts: vec!["procurement".into()],
            }],
            ..Config::default()
        };
        config.database = test_database(&dir);
        edit(&mut config);
        let state = AppState::open(config).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                mandate_authority::serve(st, listener, async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Server {
            addr,
            dir,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn token(&self, sub: &str, role: Role, tenant: &str) -> String {
        let key = load_or_create_key(&issuer_key_path(&self.data_dir())).unwrap();
        mint(&key, sub, role, tenant, now_secs(), 600)
    }

    pub fn stop(mut self) -> PathBuf {
        self.shutdown();
        self.dir.clone()
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let body = body.map(Value::to_string);
        let mut extra = Vec::new();
        if let Some(t) = token {
            extra.push(("Authorization".to_owned(), format!("Bearer {t}")));
        }
        self.raw(method, path, &extra, body.as_deref().unwrap_or(""))
    }

    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> (u16, Value) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
        (status, value)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn agent_key() -> SigningKey {
    SigningKey::from_seed(Algorithm::EdDSA, [2; 32])
}

/// The procurement mandate as an agent's request, addressed to `principal`.
pub fn procurement_request(principal: &str) -> Value {
    let c: Value = serde_json::from_str(include_str!(
        "../../../../testdata/procurement-mandate.json"
    ))
    .unwrap();
    json!({
        "principal": principal,
        "agent": {"id": c["agent"]["id"], "instance": c["agent"]["instance"], "cnf": {"jwk": agent_key().public_jwk()}},
        "purpose": c["purpose"],
        "authorization_details": c["authorization_details"],
        "conditions": c["conditions"],
        "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z",
            "terminal_events": [{"type": "contingency_program.cancelled", "subject": "program:contingency-q4"}]},
        "delegation": c["delegation"],
        "discovery": {"types": ["sanctions_screening"], "locations": ["https://screening.example.net/v2"],
            "actions": ["screen_entity"], "max_lifetime_secs": 300}
    })
}

/// The code agent's PR-watching request.
pub fn pr_request(principal: &str, pr: u32) -> Value {
    json!({
        "principal": principal,
        "agent": {"id": "urn:agent:code/pr-watcher@1.0", "instance": "inst-1", "cnf": {"jwk": agent_key().public_jwk()}},
        "purpose": {"objective": format!("Watch PR #{pr} and announce its merge"), "business_context": "Release 4.2"},
        "authorization_details": [{"type": "github_pull_request", "locations": ["https://api.github.com/repos/acme/app"],
            "resource": {"repo": "acme/app", "number": pr}, "actions": ["read"]}],
        "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z",
            "terminal_events": [{"type": "pull_request.merged", "subject": format!("github:acme/app#{pr}")}]},
        "token_binding": {"access_token_sha256": mandate_core::hash::sha256_b64(b"gho_still_valid")},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
    })
}

/// The presented chain's leaf `agent.instance`, read without verifying
/// (what the acting agent says about itself).
pub fn leaf_instance(mandate: &str) -> String {
    mandate_core::chain::parse_unverified(mandate)
        .ok()
        .and_then(|c| c.last().map(|l| l.claims.agent.instance.clone()))
        .unwrap_or_default()
}

/// `req` as the presented leaf's holder sends it: its `subject.id` and
/// `context.agent_instance` (unless the request already says).
pub fn as_leaf(mut req: Value) -> Value {
    let mandate = req["subject"]["properties"]["mandate"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Ok(chain) = mandate_core::chain::parse_unverified(&mandate)
        && let Some(leaf) = chain.last()
    {
        if req["subject"]["id"] == "a" {
            req["subject"]["id"] = json!(leaf.claims.agent.id);
        }
        if req["context"]["agent_instance"].is_null() {
            req["context"]["agent_instance"] = json!(leaf.claims.agent.instance);
        }
        // The enforcement point passes the holder's DPoP proof for the call
        // it received (here: a GET of the resource's URL), when the leaf's
        // holder is the test agent.
        let holds = leaf.claims.agent.cnf.as_ref().map(|c| c.jwk.thumbprint())
            == Some(agent_key().public_jwk().thumbprint());
        if holds && req["context"]["dpop"].is_null() {
            let htu = req["resource"]["id"]
                .as_str()
                .unwrap_or("https://pep.example/")
                .to_owned();
            let token = req["subject"]["properties"]["access_token"]
                .as_str()
                .map(str::to_owned);
            req["context"]["htm"] = json!("GET");
            req["context"]["htu"] = json!(htu);
            req["context"]["dpop"] = json!(proof("GET", &htu, token.as_deref()));
        }
    }
    req
}

/// A fresh DPoP proof by the test agent's holder key.
pub fn proof(htm: &str, htu: &str, token: Option<&str>) -> String {
    let mut jti = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut jti);
    let now = mandate_core::timestamp::UnixTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
    .unwrap();
    mandate_core::pop::make_proof(&agent_key(), htm, htu, token, &hex::encode(jti), now)
}

/// The current time, RFC 3339 (events that happen now).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    mandate_core::timestamp::UnixTime::from_secs(secs as i64)
        .unwrap()
        .to_string()
}

/// The presented chain's leaf `agent.id`, read without verifying.
pub fn leaf_agent(mandate: &str) -> String {
    mandate_core::chain::parse_unverified(mandate)
        .ok()
        .and_then(|c| c.last().map(|l| l.claims.agent.id.to_string()))
        .unwrap_or_else(|| "urn:agent:procurement/vendor-sourcing@3.2".into())
}

pub fn search_request(mandate: &str) -> Value {
    json!({
        "context": {"agent_instance": leaf_instance(mandate)},
        "subject": {"type": "agent", "id": leaf_agent(mandate), "properties": {"mandate": mandate}},
        "action": {"name": "search"},
        "resource": {"type": "vendor_portal", "id": "https://vendor-portal.example.com/search",
            "properties": {"category": "logistics", "region": "north-america",
                "contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}
    })
}

pub fn read_pr(mandate: &str, pr: u32) -> Value {
    json!({
        "context": {"agent_instance": leaf_instance(mandate)},
        "subject": {"type": "agent", "id": "urn:agent:code/pr-watcher@1.0", "properties": {"mandate": mandate, "access_token": "gho_still_valid"}},
        "action": {"name": "read"},
        "resource": {"type": "github_pull_request", "id": format!("https://api.github.com/repos/acme/app/pulls/{pr}"),
            "properties": {"repo": "acme/app", "number": pr}}
    })
}

/// Tokens for the usual cast in tenant `acme`.
pub struct Cast {
    pub agent: String,
    pub principal: String,
    pub admin: String,
    pub enforcer: String,
    pub events: String,
}

impl Cast {
    pub fn new(s: &Server) -> Self {
        Cast {
            agent: s.token("agent-7", Role::Agent, "acme"),
            principal: s.token("vp@acme.example", Role::Principal, "acme"),
            admin: s.token("admin@acme.example", Role::Admin, "acme"),
            enforcer: s.token("gateway-1", Role::Enforcer, "acme"),
            events: s.token("crm", Role::EventSource, "acme"),
        }
    }
}

/// Request, approve; returns (mandate id, mandate).
pub fn grant(s: &Server, c: &Cast, request: &Value) -> (String, String) {
    let (st, r) = s.call("POST", "/v1/requests", Some(&c.agent), Some(request));
    assert_eq!(st, 201, "{r}");
    let id = r["id"].as_str().unwrap();
    let (st, a) = s.call(
        "POST",
        &format!("/v1/requests/{id}/approve"),
        Some(&c.principal),
        Some(&json!({"consent_sha256": r["consent_sha256"]})),
    );
    assert_eq!(st, 200, "{a}");
    (
        a["mandate_id"].as_str().unwrap().to_owned(),
        a["mandate"].as_str().unwrap().to_owned(),
    )
}

pub fn set_facts(s: &Server, c: &Cast, facts: &Value) {
    let (st, r) = s.call("PUT", "/v1/facts", Some(&c.admin), Some(facts));
    assert_eq!(st, 200, "{r}");
}

pub fn decide(s: &Server, c: &Cast, req: &Value) -> Value {
    let (st, r) = s.call(
        "POST",
        "/access/v1/evaluation",
        Some(&c.enforcer),
        Some(&as_leaf(req.clone())),
    );
    assert_eq!(st, 200, "{r}");
    r
}

pub fn reasons(d: &Value) -> Vec<String> {
    d["context"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

pub fn github_delivery(
    s: &Server,
    delivery: &str,
    payload: &Value,
    secret: Option<&str>,
) -> (u16, Value) {
    use hmac::Mac;
    let body = payload.to_string();
    let mut headers = vec![
        ("X-GitHub-Event".to_owned(), "pull_request".to_owned()),
        ("X-GitHub-Delivery".to_owned(), delivery.to_owned()),
    ];
    if let Some(secret) = secret {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        headers.push((
            "X-Hub-Signature-256".to_owned(),
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        ));
    }
    s.raw("POST", "/v1/webhooks/github/github", &headers, &body)
}

/// A merged pull request's delivery. The merge happened when this test
/// (its thread) first asked for one, after its mandates were issued; every
/// delivery of it in the test names that same time, so a redelivery is the
/// same event even when the clock has moved on to the next second.
pub fn merged(pr: u32) -> Value {
    thread_local! {
        static MERGED_AT: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
    }
    let merged_at = MERGED_AT.with(|m| m.get_or_init(now_rfc3339).clone());
    json!({"action": "closed", "number": pr,
        "pull_request": {"number": pr, "merged": true, "merged_at": merged_at},
        "repository": {"full_name": "acme/app"}})
}

/// Runs an independent peer (a Python script of `tests/interop`) with
/// `args`; its standard output, once it exited 0 (else the test fails with
/// what it printed).
pub fn run_peer(script: &str, args: &[&str]) -> Vec<u8> {
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 with the interop packages (scripts/test installs them)");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
