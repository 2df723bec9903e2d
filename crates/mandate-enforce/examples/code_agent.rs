//! The code-agent case study, run for real on loopback: an authority, a fake
//! GitHub API, and an agent that watches PR #123 through the SDK. The agent
//! checks its mandate before every call; GitHub reports the merge through a
//! signed webhook; the authority ends the mandate; the SDK tells the agent,
//! which stops — although its access token is still valid.
//!
//!     cargo run -p mandate-enforce --example code_agent

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "an example"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use axum::routing::get;
use hmac::Mac;
use mandate_authority::auth::{Role, mint, now_secs};
use mandate_authority::state::{issuer_key_path, load_or_create_key};
use mandate_core::keys::{Algorithm, SigningKey};
use mandate_core::request::EvaluationRequest;
use mandate_enforce::sdk::AgentRuntime;
use serde_json::{Value, json};

const SECRET: &str = "example-webhook-secret-0123456789";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("mandate-code-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("github.secret"), SECRET)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // The authority.
    let config = mandate_authority::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        webhook: vec![mandate_authority::config::WebhookSource {
            name: "github".into(),
            tenant: "acme".into(),
            secret_file: dir.join("github.secret"),
        }],
        ..mandate_authority::Config::default()
    };
    let state = mandate_authority::AppState::open(config).map_err(|e| e.to_string())?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let authority = format!("http://{}", listener.local_addr()?);
    rt.spawn(mandate_authority::serve(
        Arc::clone(&state),
        listener,
        std::future::pending(),
    ));

    // A fake GitHub API: PR #123 is open until `merged` is set.
    let merged = Arc::new(AtomicBool::new(false));
    let m = Arc::clone(&merged);
    let github = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let github_url = format!("http://{}", github.local_addr()?);
    rt.spawn(async move {
        let app = axum::Router::new().route(
            "/repos/acme/app/pulls/123",
            get(move || {
                let state = if m.load(Ordering::Relaxed) {
                    "merged"
                } else {
                    "open"
                };
                async move { axum::Json(json!({"number": 123, "state": state})) }
            }),
        );
        axum::serve(github, app).await
    });

    let key = load_or_create_key(&issuer_key_path(&dir.join("data"))).map_err(|e| e.to_string())?;
    let token = |sub: &str, role: Role| mint(&key, sub, role, "acme", now_secs(), 3600);
    let (agent_token, principal_token, enforcer_token) = (
        token("agent-7", Role::Agent),
        token("lead@acme.example", Role::Principal),
        token("agent-runtime", Role::Enforcer),
    );
    let holder = SigningKey::generate(Algorithm::EdDSA, &mut rand_core::OsRng);
    let http = ureq::Agent::new_with_defaults();
    let post = |path: &str, bearer: &str, body: Value| -> Value {
        let mut resp = http
            .post(&format!("{authority}{path}"))
            .header("Authorization", &format!("Bearer {bearer}"))
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
    };

    println!(
        "agent: asking lead@acme.example for a mandate to watch PR #123 and announce its merge"
    );
    let req = post(
        "/v1/requests",
        &agent_token,
        json!({
            "principal": "lead@acme.example",
            "agent": {"id": "urn:agent:code/pr-watcher@1.0", "instance": "inst-1", "cnf": {"jwk": holder.public_jwk()}},
            "purpose": {"objective": "Watch PR #123 and announce its merge", "business_context": "Release 4.2"},
            "authorization_details": [{"type": "github_pull_request", "locations": ["https://api.github.com/repos/acme/app"],
                "resource": {"repo": "acme/app", "number": 123}, "actions": ["read"]}],
            "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z", "terminal_events": [{"type": "pull_request.merged", "subject": "github:acme/app#123"}]},
            "delegation": {"permitted": true, "max_additional_hops": 1, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
        }),
    );
    let approved = post(
        &format!("/v1/requests/{}/approve", req["id"].as_str().unwrap()),
        &principal_token,
        json!({"consent_sha256": req["consent_sha256"]}),
    );
    println!(
        "principal: approved; mandate {} issued",
        approved["mandate_id"].as_str().unwrap()
    );

    let sdk = AgentRuntime::connect(
        &authority,
        &agent_token,
        &enforcer_token,
        holder,
        approved["mandate"].as_str().unwrap(),
        Duration::from_secs(3),
    )?;
    let stopped = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stopped);
    sdk.on_end(move |e| {
        println!(
            "runtime: mandate {} is {:?}: stopping work",
            e.mandate_id, e.state
        );
        s.store(true, Ordering::Relaxed);
    });

    // For APIs that take OAuth tokens rather than mandates: a token bound to
    // the holder key, short-lived, and dead with the mission.
    let at = sdk.exchange_token(Some("https://api.github.com/repos/acme/app"))?;
    println!(
        "agent: exchanged its mandate for a DPoP-bound access token (expires in {} s)",
        at.expires_in
    );

    let read = EvaluationRequest::new(
        "read",
        "github_pull_request",
        "https://api.github.com/repos/acme/app/pulls/123",
        serde_json::from_value(json!({"repo": "acme/app", "number": 123}))?,
    );
    let polls = AtomicU32::new(0);
    loop {
        let d = sdk.check(&read);
        if !d.allow {
            println!(
                "agent: next call refused before it was made: {}",
                d.reasons.join(", ")
            );
            break;
        }
        let pr: Value = serde_json::from_str(
            &http
                .get(&format!("{github_url}/repos/acme/app/pulls/123"))
                .call()?
                .body_mut()
                .read_to_string()?,
        )?;
        let n = polls.fetch_add(1, Ordering::Relaxed) + 1;
        println!(
            "agent: poll {n}: PR #123 is {}",
            pr["state"].as_str().unwrap_or("?")
        );
        if n == 3 {
            println!("github: PR #123 merged; webhook delivered to the authority");
            merged.store(true, Ordering::Relaxed);
            let body = json!({"action": "closed", "number": 123, "pull_request": {"number": 123, "merged": true, "merged_at": now_rfc3339()}, "repository": {"full_name": "acme/app"}}).to_string();
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes())?;
            mac.update(body.as_bytes());
            let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            http.post(&format!("{authority}/v1/webhooks/github/github"))
                .header("X-GitHub-Event", "pull_request")
                .header("X-GitHub-Delivery", "example-1")
                .header("X-Hub-Signature-256", &sig)
                .content_type("application/json")
                .send(body)?;
        }
        std::thread::sleep(Duration::from_millis(100));
        if stopped.load(Ordering::Relaxed) && n > 10 {
            break;
        }
    }
    assert!(
        stopped.load(Ordering::Relaxed),
        "the runtime was told the mission ended"
    );
    match sdk.exchange_token(None) {
        Ok(_) => return Err("a token came out of an ended mandate".into()),
        Err(e) => println!("agent: {e}"),
    }
    println!("done: the access token was never revoked; the mandate ended the mission");
    sdk.close();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
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
