//! Push delivery (RFC 8935): one task per push stream POSTs each SET, in
//! order, to the receiver, expecting 202 (or 200); a failure is retried with
//! backoff (100 ms doubling to 5 s) and nothing after it is sent first. When
//! the stream is idle a heartbeat SET (not stored, carrying the current
//! sequence number) goes out every second, so the receiver can tell a quiet
//! stream from a dead one and notice a gap.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::ssf::{self, PUSH};
use crate::service::streams;
use crate::signals::{self, Signal};
use crate::state::AppState;

/// How often an idle push stream sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// What a receiver made of one SET.
enum Delivery {
    /// Accepted (202 or 200).
    Accepted,
    /// Refused as malformed or unusable (400, RFC 8935 §2.3): not sent
    /// again; the receiver's gap detection and snapshot recover it.
    Rejected(String),
    /// Not delivered (network, 401, 5xx): retried with backoff.
    Failed(String),
}

fn post(agent: &ureq::Agent, url: &str, auth: Option<&str>, set: &str) -> Delivery {
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/secevent+jwt")
        .header("Accept", "application/json");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    match req.send(set) {
        Ok(r) if matches!(r.status().as_u16(), 200 | 202) => Delivery::Accepted,
        Ok(r) if r.status().as_u16() == 400 => {
            Delivery::Rejected(format!("receiver answered {}", r.status()))
        }
        Ok(r) => Delivery::Failed(format!("receiver answered {}", r.status())),
        Err(e) => Delivery::Failed(e.to_string()),
    }
}

/// Starts the delivery task of a push stream, unless one runs already.
pub fn spawn(s: Arc<AppState>, stream_id: String, tenant: String) {
    // With replicas, only the lease holder delivers (it picks up streams
    // created anywhere within a second).
    if !s.cluster.may_push() {
        return;
    }
    match s.pushers.lock() {
        Ok(mut running) => {
            if !running.insert(stream_id.clone()) {
                return;
            }
        }
        Err(_) => return,
    }
    tokio::spawn(async move {
        let _running = Running(Arc::clone(&s), stream_id.clone());
        let agent = crate::tls::agent(Duration::from_secs(5));
        let mut backoff = Duration::from_millis(100);
        // Each heartbeat's `beat` is higher than the last (milliseconds of
        // the authority's clock, and at least one more): a receiver counts
        // only a beat it has not seen, so a replayed heartbeat is no news.
        let mut beat: i64 = 0;
        // The status the receiver was last told of.
        let mut told = String::from("enabled");
        loop {
            if !s.cluster.may_push() {
                return;
            }
            let notified = s.signals.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Ok(st) = ssf::load(&s, &tenant, &stream_id) else {
                return;
            };
            if st.method() != Some(PUSH) {
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
            let aud = st.aud().to_owned();
            if st.status != told {
                // Tell the receiver the stream stopped (or resumed) delivering:
                // it treats a paused stream's silence as staleness.
                let head = s
                    .store
                    .read(|c| Ok(signals::head(c, &tenant)?))
                    .unwrap_or(0);
                let update = Signal {
                    seq: head,
                    kind: "stream-updated".into(),
                    mandate_id: None,
                    body: json!({"status": st.status, "reason": st.reason}),
                    at_ms: crate::auth::now_secs() * 1000,
                };
                let set = signals::to_set(&s.authority(), &s.issuer, &aud, &tenant, &update);
                let (a, u, au) = (agent.clone(), url.clone(), auth.clone());
                let told_ok = matches!(
                    tokio::task::spawn_blocking(move || post(&a, &u, au.as_deref(), &set)).await,
                    Ok(Delivery::Accepted | Delivery::Rejected(_))
                );
                if told_ok {
                    told.clone_from(&st.status);
                }
            }
            if st.status != "enabled" {
                let _ = tokio::time::timeout(HEARTBEAT, notified).await;
                continue;
            }
            // A verification the receiver asked for goes out on this stream
            // alone, outside the sequence.
            if let Ok(Some((_, set))) = ssf::take_verification(&s, &stream_id, &aud).await {
                let (a, u, au) = (agent.clone(), url.clone(), auth.clone());
                let _ =
                    tokio::task::spawn_blocking(move || post(&a, &u, au.as_deref(), &set)).await;
            }
            let t = tenant.clone();
            let found = streams::after(&s, &t, st.cursor, 100).unwrap_or_default();
            if found.is_empty() {
                // Idle: a heartbeat with the head sequence, then wait.
                let head = streams::head(&s, &t).unwrap_or(0);
                beat = crate::auth::now_ms().max(beat + 1);
                let hb = Signal {
                    seq: head,
                    kind: "heartbeat".into(),
                    mandate_id: None,
                    body: json!({"head": head, "beat": beat}),
                    at_ms: crate::auth::now_secs() * 1000,
                };
                let set = signals::to_set(&s.authority(), &s.issuer, &aud, &tenant, &hb);
                let (a, u, au) = (agent.clone(), url.clone(), auth.clone());
                let _ =
                    tokio::task::spawn_blocking(move || post(&a, &u, au.as_deref(), &set)).await;
                let _ = tokio::time::timeout(HEARTBEAT, notified).await;
                continue;
            }
            let mut delivered = st.cursor;
            for sig in &found {
                if !ssf::delivers(&st.config, &sig.kind) {
                    // Not requested by the receiver: passed over.
                    delivered = sig.seq;
                    continue;
                }
                let set = signals::to_set(&s.authority(), &s.issuer, &aud, &tenant, sig);
                let (a, u, au) = (agent.clone(), url.clone(), auth.clone());
                let result = tokio::task::spawn_blocking(move || post(&a, &u, au.as_deref(), &set))
                    .await
                    .unwrap_or_else(|e| Delivery::Failed(e.to_string()));
                match result {
                    Delivery::Accepted => {
                        delivered = sig.seq;
                        backoff = Duration::from_millis(100);
                    }
                    Delivery::Rejected(e) => {
                        // Not retried forever, and not in the way of later
                        // SETs: the receiver sees the gap and resynchronises.
                        tracing::warn!(stream = %stream_id, seq = sig.seq, error = %e, "receiver rejected a SET; moving on");
                        delivered = sig.seq;
                    }
                    Delivery::Failed(e) => {
                        tracing::warn!(stream = %stream_id, error = %e, "push delivery failed; retrying");
                        break;
                    }
                }
            }
            if delivered > st.cursor {
                let _ = streams::advance(&s, &stream_id, delivered).await;
            } else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    });
}

/// Marks a stream's delivery task as gone when it ends (however it ends).
struct Running(Arc<AppState>, String);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut running) = self.0.pushers.lock() {
            running.remove(&self.1);
        }
    }
}

/// Starts the delivery tasks of every push stream (at start-up).
pub fn spawn_all(s: &Arc<AppState>) {
    for (id, tenant, config) in streams::all(s).unwrap_or_default() {
        if streams::delivery_method(&config) == Some(PUSH) {
            spawn(Arc::clone(s), id, tenant);
        }
    }
}
