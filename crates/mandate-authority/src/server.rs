//! The HTTP server loop, with the limits a service facing untrusted clients
//! needs (none of which `axum::serve` sets):
//!
//! - a client has [`Limits::header_read_timeout`] to send a request's
//!   headers, and [`Limits::request_timeout`] for the whole request; a
//!   half-sent request does not hold a connection (or a file descriptor)
//!   for longer;
//! - at most [`Limits::max_connections`] connections are served at once;
//!   one more is closed as soon as it is accepted, so file descriptors run
//!   out for nobody;
//! - on shutdown the listener closes at once, in-flight requests get
//!   [`Limits::shutdown_deadline`] to finish, and whatever is still open
//!   then is dropped: no client can keep SIGTERM from stopping the service.
//!
//! The authority takes its limits from its configuration; the gateway
//! serves through the same loop.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use mandate_core::pop::ClientCertificate;

use crate::config::Config;

/// The limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client's time to send a request's headers.
    pub header_read_timeout: Duration,
    /// A whole request's time (reading its body included); then 408. `None`
    /// for no limit (a proxy whose upstream sets its own).
    pub request_timeout: Option<Duration>,
    /// Most connections served at once.
    pub max_connections: usize,
    /// In-flight requests' time to finish on shutdown.
    pub shutdown_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(30)),
            max_connections: 1024,
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The authority's limits, from its configuration.
    #[must_use]
    pub fn of(config: &Config) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            request_timeout: Some(Duration::from_secs(config.request_timeout_secs)),
            max_connections: config.max_connections,
            shutdown_deadline: Duration::from_secs(config.shutdown_deadline_secs),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves (see the module docs).
///
/// # Errors
/// Never today: accept errors (such as running out of file descriptors) are
/// logged and retried after a pause.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, app, limits, None, shutdown).await
}

/// As [`run`], over TLS when `tls` is given: the handshake must complete
/// within the header-read timeout, and a failed one closes the connection.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = limits.header_read_timeout;
    let deadline = limits.shutdown_deadline;
    let app = match limits.request_timeout {
        Some(t) => crate::http::around(
            app,
            axum::middleware::from_fn(move |req, next| within(t, req, next)),
        ),
        None => app,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
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
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        // No upgrades (no WebSocket here): a plain HTTP/1.1 connection.
        match &tls {
            None => {
                let service = connection_service(app.clone(), peer, None);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = watched.await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let app = app.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "tls handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    // The client certificate, when one was presented: the
                    // handshake proved its key (see `tls::ClientCertificates`).
                    let certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(<[_]>::first)
                        .map(|der| {
                            ClientCertificate(Arc::from(
                                mandate_core::model::certificate_thumbprint(der.as_ref()),
                            ))
                        });
                    let service = connection_service(app, peer, certificate);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                    drop(slot);
                });
            }
        }
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

/// `app` for one connection: each request carries the peer's address
/// (`ConnectInfo`: the gateway names it in `X-Forwarded-For` and
/// `Forwarded`) and the connection's client certificate, if any
/// ([`ClientCertificate`], set once per connection after the handshake).
fn connection_service(
    app: axum::Router,
    peer: std::net::SocketAddr,
    certificate: Option<ClientCertificate>,
) -> TowerToHyperService<
    tower::util::MapRequest<
        axum::Router,
        impl FnMut(hyper::Request<hyper::body::Incoming>) -> hyper::Request<hyper::body::Incoming>
        + Clone,
    >,
> {
    TowerToHyperService::new(tower::ServiceExt::map_request(
        app,
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            if let Some(c) = &certificate {
                req.extensions_mut().insert(c.clone());
            }
            req
        },
    ))
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
