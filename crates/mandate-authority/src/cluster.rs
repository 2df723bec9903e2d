//! Several replicas on one PostgreSQL database.
//!
//! **Following.** Every commit that appends to the audit log notifies the
//! `mandate_changes` channel. Each replica listens on its own connection and,
//! on a notification (or every [`CATCH_UP`] without one), reads the audit
//! records after the last one it applied: the mandates they name are read
//! again into memory, a tenant's facts when they changed, and the SSF streams
//! are woken. The log's sequence is the catch-up point, so a notification
//! lost to a dropped connection delays a revocation by at most
//! [`CATCH_UP`]; it never loses one.
//!
//! **Push lease.** Push delivery runs on one replica at a time: the one
//! holding a session-level advisory lock on a connection of its own. When
//! that replica dies, PostgreSQL ends its session and releases the lock, and
//! another replica takes it within [`LEASE_POLL`] and starts the pushers
//! (which resume from each stream's stored cursor).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use mandate_core::id::MandateId;
use postgres::fallible_iterator::FallibleIterator as _;

use crate::state::AppState;

/// Longest a replica goes without reading the log when no notification
/// comes.
pub const CATCH_UP: Duration = Duration::from_millis(250);

/// How often a replica without the push lease tries to take it.
pub const LEASE_POLL: Duration = Duration::from_secs(1);

/// The advisory lock that is the push lease.
pub const PUSH_LEASE: i64 = 0x6d61_6e64_6174_6503;

/// This replica's place among others.
#[derive(Debug)]
pub struct Membership {
    /// Whether other replicas may share the database (PostgreSQL).
    pub shared: bool,
    /// Whether this replica delivers push streams now.
    pub push_lease: AtomicBool,
    /// The last audit sequence whose changes are in memory.
    pub applied: AtomicI64,
}

impl Membership {
    /// Alone on an embedded file: always the pusher, nothing to follow.
    #[must_use]
    pub fn alone() -> Self {
        Self {
            shared: false,
            push_lease: AtomicBool::new(true),
            applied: AtomicI64::new(0),
        }
    }

    /// On a shared database, having loaded memory as of `applied`.
    #[must_use]
    pub fn shared(applied: i64) -> Self {
        Self {
            shared: true,
            push_lease: AtomicBool::new(false),
            applied: AtomicI64::new(applied),
        }
    }

    /// Whether this replica delivers push streams.
    #[must_use]
    pub fn may_push(&self) -> bool {
        self.push_lease.load(Ordering::Acquire)
    }
}

/// Reads the log after `from` (up to its current head) and applies it to
/// memory; returns the new head.
///
/// # Errors
/// When the database cannot be read.
pub fn catch_up(state: &AppState, client: &mut postgres::Client, from: i64) -> Result<i64, String> {
    let head: i64 = client
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM audit", &[])
        .map_err(|e| e.to_string())?
        .get(0);
    if head <= from {
        return Ok(from);
    }
    let rows = client
        .query(mandate_store::schema::CATCH_UP, &[&from, &head])
        .map_err(|e| e.to_string())?;
    let mut ids: Vec<MandateId> = Vec::new();
    let mut tenants = std::collections::BTreeSet::new();
    // Business events, with when they happened: decisions on mandates issued
    // at or before an event consult it (as on the replica that took it).
    let mut events: Vec<(String, String, Option<String>, i64)> = Vec::new();
    for r in &rows {
        let kind: String = r.get(0);
        let tenant: Option<String> = r.get(1);
        let mandate: Option<String> = r.get(2);
        if kind == "event" {
            let record: Option<String> = r.get(3);
            let body = record
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("body").cloned())
                .unwrap_or_default();
            let text = |k: &str| {
                body.get(k)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            if let (Some(t), Some(ty), Some(at)) = (
                tenant.clone(),
                text("type"),
                body.get("occurred_ms").and_then(serde_json::Value::as_i64),
            ) {
                events.push((t, ty, text("subject"), at));
            }
        } else if kind == "facts_changed" {
            tenants.extend(tenant);
        } else if let Some(id) = mandate.and_then(|m| MandateId::new(m).ok())
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    if !events.is_empty() {
        state
            .with_registry_mut(|r| {
                for (t, ty, subject, at) in &events {
                    crate::registry::add_event(r, t, ty, subject.as_deref(), *at);
                }
            })
            .map_err(|e| e.detail)?;
    }
    if !ids.is_empty() {
        state.refresh(&ids).map_err(|e| e.detail)?;
    }
    for tenant in tenants {
        let (doc, _) = state
            .store
            .read(|c| Ok(crate::service::facts::read_facts(c, &tenant)?))
            .map_err(|e| e.to_string())?;
        if let Ok(facts) = mandate_core::condition::Facts::from_json(doc) {
            state
                .with_registry_mut(|r| crate::registry::set_facts(r, &tenant, facts))
                .map_err(|e| e.detail)?;
        }
    }
    state.signals.notify_waiters();
    Ok(head)
}

/// Follows the other replicas' commits until the process ends (a thread of
/// its own: PostgreSQL's client does not run inside the async runtime).
pub fn follow(state: Arc<AppState>, url: String) {
    let spawned = std::thread::Builder::new()
        .name("mandate-follower".into())
        .spawn(move || {
            loop {
                let mut client = match postgres::Client::connect(&url, postgres::NoTls) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "follower: database unreachable; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                if let Err(e) = client.batch_execute("LISTEN mandate_changes") {
                    tracing::warn!(error = %e, "follower: LISTEN failed; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                loop {
                    let from = state.cluster.applied.load(Ordering::Acquire);
                    match catch_up(&state, &mut client, from) {
                        Ok(head) => state.cluster.applied.store(head, Ordering::Release),
                        Err(e) => {
                            tracing::warn!(error = %e, "follower: catch-up failed; reconnecting");
                            break;
                        }
                    }
                    // Wait for the next commit (or the catch-up period), then
                    // take every notification already queued.
                    let mut n = client.notifications();
                    if let Err(e) = n.timeout_iter(CATCH_UP).next() {
                        tracing::warn!(error = %e, "follower: connection lost; reconnecting");
                        break;
                    }
                    while let Ok(Some(_)) = n.iter().next() {}
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "follower thread not started");
    }
}

/// Holds (or waits for) the push lease until the process ends. While held,
/// the pushers run here; when the lease's connection is lost, they stop.
pub fn lease(state: Arc<AppState>, url: String, runtime: tokio::runtime::Handle) {
    let spawned = std::thread::Builder::new()
        .name("mandate-push-lease".into())
        .spawn(move || {
            loop {
                let mut client = match postgres::Client::connect(&url, postgres::NoTls) {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(LEASE_POLL);
                        continue;
                    }
                };
                loop {
                    let held = state.cluster.may_push();
                    let ok = if held {
                        client.query_one("SELECT 1", &[]).is_ok()
                    } else {
                        match client.query_one("SELECT pg_try_advisory_lock($1)", &[&PUSH_LEASE]) {
                            Ok(r) => {
                                if r.get::<_, bool>(0) {
                                    tracing::info!(
                                        "push lease taken: this replica delivers push streams"
                                    );
                                    state.cluster.push_lease.store(true, Ordering::Release);
                                }
                                true
                            }
                            Err(_) => false,
                        }
                    };
                    if !ok {
                        // The session (and the lock with it) is gone.
                        if state.cluster.push_lease.swap(false, Ordering::AcqRel) {
                            tracing::warn!("push lease lost");
                        }
                        break;
                    }
                    if state.cluster.may_push() {
                        // Streams created at any replica are delivered here.
                        let st = Arc::clone(&state);
                        runtime.spawn(async move { crate::push::spawn_all(&st) });
                    }
                    std::thread::sleep(LEASE_POLL);
                }
                std::thread::sleep(LEASE_POLL);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "push lease thread not started");
    }
}
