//! The HTTP server loop, with the limits a service facing untrusted clients
//! needs (none of which `axum::serve` sets):
//!
//! - a client has [`Config::header_read_timeout_secs`] to send a request's
//!   headers, and [`Config::request_timeout_secs`] for the whole request;
//!   a half-sent request does not hold a connection (or a file descriptor)
//!   for longer;
//! - at most [`Config::max_connections`] connections are served at once;
//!   one more is closed as soon as it is accepted, so file descriptors run
//!   out for nobody;
//! - on shutdown the listener closes at once, in-flight requests get
//!   [`Config::shutdown_deadline_secs`] to finish, and whatever is still
//!   open then is dropped: no client can keep SIGTERM from stopping the
//!   service.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::config::Config;

/// Serves `app` on `listener` until `shutdown` resolves (see the module docs).
///
/// # Errors
/// Never today: accept errors (such as running out of file descriptors) are
/// logged and retried after a pause.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = Duration::from_secs(config.header_read_timeout_secs);
    let request_timeout = Duration::from_secs(config.request_timeout_secs);
    let deadline = Duration::from_secs(config.shutdown_deadline_secs);
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        within(request_timeout, req, next)
    }));
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!("connection limit reached; closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        // No upgrades (no WebSocket here): a plain HTTP/1.1 connection.
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = watched.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            secs = deadline.as_secs(),
            "shutdown deadline passed; dropping the connections still open"
        );
    }
    Ok(())
}

/// Answers 408 when the request (reading its body included) takes longer
/// than `limit`.
async fn within(
    limit: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => crate::error::ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}
