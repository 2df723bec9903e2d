//! The ghost-execution window and the cascade, measured on loopback.
//!
//! - Window: for each trial, a mandate is revoked at the authority; the time
//!   from the authority's acknowledgement to the first moment each gateway
//!   (one subscribed by push, one by poll) denies it.
//! - Cascade: the root of a tree of N mandates is revoked; the time until a
//!   gateway denies every one of them.
//!
//!     cargo run --release -p mandate-enforce --example signals_bench [TRIALS=1000] [TREE=10000]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    reason = "a benchmark"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_authority::auth::{Role, mint, now_secs};
use mandate_authority::state::{issuer_key_path, load_or_create_key};
use mandate_core::id::MandateId;
use mandate_core::keys::{Algorithm, SigningKey};
use mandate_core::request::EvaluationRequest;
use mandate_core::state::MandateState;
use mandate_enforce::gateway::{Delivery, Gateway, GatewayConfig};
use serde_json::{Value, json};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let trials: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let tree: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("mandate-signals-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = mandate_authority::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
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
    let key = load_or_create_key(&issuer_key_path(&dir.join("data"))).map_err(|e| e.to_string())?;
    let token = |sub: &str, role: Role| mint(&key, sub, role, "acme", now_secs(), 7200);
    std::fs::write(dir.join("enforcer.token"), token("gateway", Role::Enforcer))?;
    let (agent, principal) = (
        token("agent-7", Role::Agent),
        token("vp@acme.example", Role::Principal),
    );
    let http = ureq::Agent::new_with_defaults();
    let post = |path: &str, bearer: &str, body: &Value| -> Value {
        let mut r = http
            .post(&format!("{authority}{path}"))
            .header("Authorization", &format!("Bearer {bearer}"))
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null)
    };

    // Two gateways: one by push (its receiver served here), one by poll.
    let mut gateways = Vec::new();
    for delivery in [Delivery::Push, Delivery::Poll] {
        let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let listen = l.local_addr()?.to_string();
        let cfg = GatewayConfig {
            listen: listen.clone(),
            authority: authority.clone(),
            token_file: Some(dir.join("enforcer.token")),
            client_credentials: None,
            staleness_ms: 5000,
            delivery,
            push_url: None,
            upstream: "http://127.0.0.1:9".into(),
            location_base: "https://api.example.com".into(),
            spool_file: Some(dir.join(format!("{delivery:?}.spool"))),
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
            route: Vec::new(),
        };
        let gw = Gateway::start(cfg).map_err(|e| e.to_string())?;
        let router = gw.router();
        rt.spawn(async move { axum::serve(l, router).await });
        while !gw.replica.is_fresh() {
            std::thread::sleep(Duration::from_millis(5));
        }
        gateways.push((delivery, gw));
    }

    let holder = SigningKey::from_seed(Algorithm::EdDSA, [2; 32]);
    let request = |n: usize| {
        json!({
            "principal": "vp@acme.example",
            "agent": {"id": "urn:agent:bench@1", "instance": format!("inst-{n}"), "cnf": {"jwk": holder.public_jwk()}},
            "purpose": {"objective": "Benchmark", "business_context": "Ghost-execution window"},
            "authorization_details": [{"type": "api", "locations": ["https://api.example.com"], "actions": ["read"]}],
            "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z"},
            "delegation": {"permitted": true, "max_additional_hops": 1, "attenuation": "subset_of_parent", "cascade_revocation": "immediate"}
        })
    };
    let grant = |n: usize| -> (String, String) {
        let r = post("/v1/requests", &agent, &request(n));
        let a = post(
            &format!("/v1/requests/{}/approve", r["id"].as_str().unwrap()),
            &principal,
            &json!({}),
        );
        (
            a["mandate_id"].as_str().unwrap().to_owned(),
            a["mandate"].as_str().unwrap().to_owned(),
        )
    };

    // The window.
    println!("granting {trials} mandates ...");
    let granted: Vec<(String, String)> = (0..trials).map(grant).collect();
    let mut windows: Vec<(Delivery, Vec<Duration>)> =
        gateways.iter().map(|(d, _)| (*d, Vec::new())).collect();
    for (id, _) in &granted {
        let mid = MandateId::new(id.clone())?;
        let r = post(&format!("/v1/mandates/{id}/revoke"), &principal, &json!({}));
        assert_eq!(r["state"], "revoked");
        let acked = Instant::now();
        let mut pending: Vec<usize> = (0..gateways.len()).collect();
        while !pending.is_empty() {
            pending.retain(|&g| {
                if gateways[g].1.replica.state_of(&mid) == Some(MandateState::Revoked) {
                    windows[g].1.push(acked.elapsed());
                    false
                } else {
                    true
                }
            });
            if acked.elapsed() > Duration::from_secs(30) {
                return Err("a gateway never saw a revocation".into());
            }
            std::hint::spin_loop();
        }
    }
    for (d, w) in &mut windows {
        w.sort();
        println!(
            "window {d:?}: n={} p50={:.2?} p99={:.2?} max={:.2?}",
            w.len(),
            percentile(w, 0.5),
            percentile(w, 0.99),
            w.last().unwrap()
        );
    }

    // The cascade: a root and tree-1 children registered under it.
    println!("building a tree of {tree} mandates ...");
    let (root_id, root) = grant(trials);
    let now = mandate_core::timestamp::UnixTime::from_secs(now_secs())?;
    let spec: mandate_core::chain::ChildSpec = serde_json::from_value(json!({
        "agent": {"id": "urn:agent:bench/child@1", "instance": "c"},
        "authorization_details": [{"type": "api", "locations": ["https://api.example.com/data"], "actions": ["read"]}],
        "lifecycle": {"hard_expiry": "2098-01-01T00:00:00Z"},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "subset_of_parent", "cascade_revocation": "immediate"}
    }))?;
    let mut chains = Vec::with_capacity(tree);
    for i in 1..tree {
        let id = MandateId::new(format!("mnd-tree-{i}"))?;
        chains.push(mandate_core::chain::derive_child(
            &root, &holder, &spec, id, now,
        )?);
    }
    let (s2, root2) = (Arc::clone(&state), root_id.clone());
    let children = chains.clone();
    rt.block_on(s2.store.write(move |tx| {
        for chain in &children {
            let m = mandate_core::chain::parse_unverified(chain).unwrap();
            let claims = &m.last().unwrap().claims;
            mandate_authority::store::insert_mandate(
                tx,
                &mandate_authority::store::NewMandate {
                    tenant: "acme",
                    principal: "vp@acme.example",
                    agent_sub: "agent-7",
                    parent: Some(&root2),
                    chain,
                    claims,
                    kind: "child_registered",
                    details: json!({}),
                },
            )?;
        }
        Ok(())
    }))?;
    chains.push(root.clone());
    let ids: Vec<MandateId> = chains
        .iter()
        .map(|c| {
            mandate_core::chain::parse_unverified(c)
                .unwrap()
                .last()
                .unwrap()
                .claims
                .mandate_id
                .clone()
        })
        .collect();
    state.refresh(&ids).map_err(|e| e.detail)?;
    let (_, push_gw) = &gateways[0];
    // Let the gateways catch up with the tree's own signals first.
    let head = state
        .store
        .read(|c| Ok(mandate_authority::signals::head(c, "acme")?))
        .map_err(|e| e.to_string())?;
    while gateways.iter().any(|(_, g)| g.replica.cursor() < head) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let read = EvaluationRequest::new(
        "read",
        "api",
        "https://api.example.com/data/x",
        Default::default(),
    );
    // Warm: every chain verified once and allowed.
    let verifier = mandate_core::chain::Verifier::new(
        mandate_core::keys::KeySet::from_jwks(&serde_json::from_value(
            json!({"keys": [state.authority().public_jwk()]}),
        )?)
        .map_err(|(_, e)| e.to_string())?,
    );
    let t = mandate_core::timestamp::UnixTime::from_secs(now_secs())?;
    // Propagation is measured here, not possession: decided as the holder.
    let cache = mandate_core::pop::ReplayCache::new(1);
    let held = mandate_enforce::replica::Proved {
        possession: mandate_core::pop::Possession::Held,
        cache: &cache,
    };
    let allowed = chains
        .iter()
        .filter(|c| {
            mandate_enforce::replica::decide_with(
                &verifier,
                &push_gw.replica,
                c,
                &for_leaf(&read, c),
                None,
                &held,
                t,
            )
            .allow
        })
        .count();
    println!(
        "tree ready: {allowed} of {} allowed at the push gateway",
        chains.len()
    );
    let r = post(
        &format!("/v1/mandates/{root_id}/revoke"),
        &principal,
        &json!({}),
    );
    let acked = Instant::now();
    let changed = r["changed"].as_array().map_or(0, Vec::len);
    loop {
        let still = chains
            .iter()
            .filter(|c| {
                mandate_enforce::replica::decide_with(
                    &verifier,
                    &push_gw.replica,
                    c,
                    &for_leaf(&read, c),
                    None,
                    &held,
                    t,
                )
                .allow
            })
            .count();
        if still == 0 {
            break;
        }
        if acked.elapsed() > Duration::from_secs(60) {
            return Err("the cascade never completed".into());
        }
    }
    let all_denied = acked.elapsed();
    println!(
        "cascade: revoking the root of {} mandates ({changed} transitions recorded): every one denied at the push gateway {all_denied:.2?} after the acknowledgement",
        chains.len()
    );
    for (_, gw) in &gateways {
        gw.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `request` as the chain's leaf holder sends it (its agent instance).
fn for_leaf(request: &EvaluationRequest, chain: &str) -> EvaluationRequest {
    let instance = mandate_core::chain::parse_unverified(chain)
        .ok()
        .and_then(|c| c.last().map(|l| l.claims.agent.instance.clone()))
        .unwrap_or_default();
    request.clone().with_agent_instance(&instance)
}
