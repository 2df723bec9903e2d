//! # mandate-authority
//!
//! The mandate service: the one owner of mission state. It records grants
//! (consent), issues signed mandates, keeps each mandate's state, takes the
//! business events and facts that end or suspend missions, grants discovered
//! tools once, answers AuthZEN decisions from memory, and writes every
//! decision and transition to the hash-chained audit log.
//!
//! [`app`] builds the router; [`serve`] runs it with graceful shutdown and
//! the expiry clock.

use std::sync::Arc;
use std::time::Duration;

pub mod auth;
pub mod cluster;
pub mod config;
pub mod console;
pub mod error;
pub mod http;
pub mod idp;
pub mod keyring;
pub mod metrics;
pub mod push;
pub mod registry;
pub mod server;
pub mod service;
pub mod signals;
pub mod state;
pub mod store;
pub mod tls;

pub use config::Config;
pub use state::AppState;

/// The HTTP application.
pub fn app(state: Arc<AppState>) -> axum::Router {
    http::observed(http::router(state))
}

/// Ends every live mandate whose hard expiry has passed, writing an
/// `expired` record (with cascade) when it happens. Returns how many ended.
///
/// # Errors
/// When the store fails.
pub async fn expire_due(state: &AppState) -> Result<usize, error::ApiError> {
    let due = state.with_registry(|r| r.due_for_expiry(auth::now_secs()))?;
    if due.is_empty() {
        return Ok(0);
    }
    let changed = state
        .store
        .write(move |tx| {
            let mut changed = Vec::new();
            for id in due {
                let st: String = tx.conn().query_row(
                    "SELECT state FROM mandates WHERE id = ?1",
                    mandate_store::params![id.as_str()],
                    |r| r.get(0),
                )?;
                if store::is_terminal(mandate_core::state::MandateState::from_name(&st)) {
                    continue;
                }
                changed.extend(store::transition(
                    tx,
                    id.as_str(),
                    mandate_core::state::MandateState::Expired,
                    "authority",
                    "hard_expiry",
                )?);
            }
            Ok(changed)
        })
        .await?;
    for _ in &changed {
        state.metrics.transition("expired");
    }
    state.refresh(&changed)?;
    Ok(changed.len())
}

/// Fetches every JWKS URL again; a failed fetch keeps the keys it had.
pub async fn refresh_issuer_keys(state: &Arc<AppState>) {
    for t in state
        .config
        .trusted_issuer
        .iter()
        .filter(|t| t.jwks_url.is_some())
        .cloned()
    {
        let loaded = tokio::task::spawn_blocking(move || (t.iss.clone(), t.load_keys())).await;
        match loaded {
            Ok((iss, Ok(keys))) => state.issuers.replace_keys(&iss, keys),
            Ok((iss, Err(e))) => {
                tracing::warn!(%iss, error = %e, "JWKS refresh failed; keeping the previous keys")
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refresh task failed"),
        }
    }
}

/// Every `checkpoint_signal_secs`, when the audit log's signed checkpoint
/// changed, sends it as an `audit-checkpoint` signal on the stream of every
/// tenant that has one: receivers keep the latest, and any of them can later
/// catch a log rolled back behind it (`mandate audit verify --against`).
async fn publish_checkpoints(state: &Arc<AppState>) {
    let every = Duration::from_secs(state.config.checkpoint_signal_secs);
    let path = mandate_store::checkpoint_path(state.store.dir());
    let mut last = String::new();
    loop {
        tokio::time::sleep(every).await;
        let Ok(jws) = std::fs::read_to_string(&path) else {
            continue;
        };
        let jws = jws.trim().to_owned();
        if jws == last {
            continue;
        }
        let body = serde_json::json!({"checkpoint": jws});
        let sent = state
            .store
            .write(move |tx| {
                let mut stmt = tx.conn().prepare("SELECT DISTINCT tenant FROM streams")?;
                let tenants: Vec<String> = stmt
                    .query_map(mandate_store::params![], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                drop(stmt);
                for t in &tenants {
                    signals::emit(tx, t, "audit-checkpoint", None, &body)?;
                }
                Ok(())
            })
            .await;
        match sent {
            Ok(()) => {
                last = jws;
                state.signals.notify_waiters();
            }
            Err(e) => tracing::warn!(error = %e, "audit checkpoint not published"),
        }
    }
}

/// Serves on an already-bound listener until `shutdown` resolves, then
/// stops accepting, finishes in-flight requests, and closes the store after
/// every queued write is committed.
///
/// # Errors
/// When serving fails.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let clock_state = Arc::clone(&state);
    let clock = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut ticks: u32 = 0;
        loop {
            tick.tick().await;
            // Once a second: a rotation on the data directory, or a key's
            // signing or retirement time reached.
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(4) {
                let st = Arc::clone(&clock_state);
                let _ = tokio::task::spawn_blocking(move || st.tick_keys()).await;
            }
            // Once a minute with replicas: forget proofs no replica can
            // accept any more.
            if clock_state.cluster.shared && ticks.is_multiple_of(240) {
                let now_ms = auth::now_secs().saturating_mul(1000);
                let _ = clock_state
                    .store
                    .write(move |tx| {
                        tx.conn().execute(
                            "DELETE FROM pop_seen WHERE exp_ms < ?1",
                            mandate_store::params![now_ms],
                        )?;
                        Ok(())
                    })
                    .await;
            }
            if let Err(e) = expire_due(&clock_state).await {
                tracing::error!(detail = %e.detail, "expiry clock");
            }
        }
    });
    if let Some(url) = &state.config.database {
        // Other replicas may commit: follow the log, and deliver push
        // streams only while holding the lease.
        cluster::follow(Arc::clone(&state), url.expose().to_owned());
        cluster::lease(
            Arc::clone(&state),
            url.expose().to_owned(),
            tokio::runtime::Handle::current(),
        );
    }
    push::spawn_all(&state);
    let refresh_state = Arc::clone(&state);
    let refresher = tokio::spawn(async move {
        let every = Duration::from_secs(refresh_state.config.jwks_refresh_secs);
        loop {
            tokio::time::sleep(every).await;
            refresh_issuer_keys(&refresh_state).await;
        }
    });
    let publisher = (state.config.checkpoint_signal_secs > 0).then(|| {
        let st = Arc::clone(&state);
        tokio::spawn(async move { publish_checkpoints(&st).await })
    });
    let tls = match (&state.config.tls_cert_file, &state.config.tls_key_file) {
        (Some(cert), Some(key)) => Some(
            tls::acceptor(&tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .map_err(std::io::Error::other)?,
        ),
        _ => None,
    };
    let result = server::run_with(
        listener,
        app(Arc::clone(&state)),
        server::Limits::of(&state.config),
        tls,
        shutdown,
    )
    .await;
    clock.abort();
    refresher.abort();
    if let Some(p) = publisher {
        p.abort();
    }
    state.store.close();
    result
}
