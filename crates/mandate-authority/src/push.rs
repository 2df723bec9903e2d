//! Push delivery (RFC 8935): one task per push stream POSTs each SET, in
//! order, to the receiver, expecting 202 (or 200); a failure is retried with
//! backoff (100 ms doubling to 5 s) and nothing after it is sent first. When
//! the stream is idle a heartbeat SET (not stored, carrying the current
//! sequence number) goes out every second, so the receiver can tell a quiet
//! stream from a dead one and notice a gap.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use serde_json::{Value, json};

use crate::routes::ssf::{self, PUSH};
use crate::signals::{self, Signal};
use crate::state::AppState;

/// How often an idle push stream sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

fn post(agent: &ureq::Agent, url: &str, auth: Option<&str>, set: &str) -> Result<(), String> {
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/secevent+jwt")
        .header("Accept", "application/json");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    match req.send(set) {
        Ok(r) if matches!(r.status().as_u16(), 200 | 202) => Ok(()),
        Ok(r) => Err(format!("receiver answered {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// Starts the delivery task of a push stream.
pub fn spawn(s: Arc<AppState>, stream_id: String, tenant: String) {
    tokio::spawn(async move {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut backoff = Duration::from_millis(100);
        loop {
            let notified = s.signals.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Ok(st) = ssf::load(&s, &tenant, &stream_id) else {
                return;
            };
            if st
                .config
                .pointer("/delivery/method")
                .and_then(Value::as_str)
                != Some(PUSH)
            {
                return;
            }
            let url = st
                .config
                .pointer("/delivery/endpoint_url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let auth = st
                .config
                .pointer("/delivery/authorization_header")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let aud = st
                .config
                .get("aud")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if st.status != "enabled" {
                let _ = tokio::time::timeout(HEARTBEAT, notified).await;
                continue;
            }
            let t = tenant.clone();
            let found = s
                .store
                .read(|c| Ok(signals::after(c, &t, st.cursor, 100)?))
                .unwrap_or_default();
            if found.is_empty() {
                // Idle: a heartbeat with the head sequence, then wait.
                let head = s.store.read(|c| Ok(signals::head(c, &t)?)).unwrap_or(0);
                let hb = Signal {
                    seq: head,
                    kind: "heartbeat".into(),
                    mandate_id: None,
                    body: json!({"head": head}),
                    at_ms: crate::auth::now_secs() * 1000,
                };
                let set = signals::to_set(&s.authority, &s.issuer, &aud, &tenant, &hb);
                let (a, u, au) = (agent.clone(), url.clone(), auth.clone());
                let _ =
                    tokio::task::spawn_blocking(move || post(&a, &u, au.as_deref(), &set)).await;
                let _ = tokio::time::timeout(HEARTBEAT, notified).await;
                continue;
            }
            let mut delivered = st.cursor;
            for sig in &found {
                let set = signals::to_set(&s.authority, &s.issuer, &aud, &tenant, sig);
                let (a, u, au) = (agent.clone(), url.clone(), auth.clone());
                let result = tokio::task::spawn_blocking(move || post(&a, &u, au.as_deref(), &set))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                match result {
                    Ok(()) => {
                        delivered = sig.seq;
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(stream = %stream_id, error = %e, "push delivery failed; retrying");
                        break;
                    }
                }
            }
            if delivered > st.cursor {
                let sid = stream_id.clone();
                let _ = s
                    .store
                    .write(move |tx| {
                        tx.conn().execute(
                            "UPDATE streams SET cursor = MAX(cursor, ?2) WHERE id = ?1",
                            params![sid, delivered],
                        )?;
                        Ok(())
                    })
                    .await;
            } else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    });
}

/// Starts the delivery tasks of every push stream (at start-up).
pub fn spawn_all(s: &Arc<AppState>) {
    let streams: Vec<(String, String, String)> = s
        .store
        .read(|c| {
            let mut st = c.prepare("SELECT id, tenant, config FROM streams")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap_or_default();
    for (id, tenant, config) in streams {
        if config.contains(PUSH) {
            spawn(Arc::clone(s), id, tenant);
        }
    }
}
