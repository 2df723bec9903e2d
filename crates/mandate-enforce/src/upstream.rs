//! The HTTP client enforcement points forward with: `http://` and
//! `https://` upstreams (HTTP/1.1), TLS verified against the system's roots
//! and, when configured, an extra CA (a private PKI in front of internal
//! services).
//!
//! Connections are kept open and reused, as any reverse proxy does: a
//! request takes the connection to its upstream used most recently (and
//! idle), or opens one. The pool is a short list under a mutex, looked up by
//! scheme and authority; a connection goes back to it when the answer's
//! body has been read to its end, and one dropped halfway is closed. A
//! request that never left (the upstream had closed the connection while it
//! sat idle) is tried again on another connection; one that was sent is
//! never sent twice.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tower::ServiceExt as _;

/// How long an idle connection is kept (hyper's own client keeps them 90 s).
const IDLE: Duration = Duration::from_secs(90);
/// Most idle connections kept per upstream.
const MAX_IDLE: usize = 256;

/// The client: connects, and keeps connections to reuse.
#[derive(Clone)]
pub struct Upstreams {
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

/// The idle connections, by upstream (an enforcement point has one or a
/// few: a list beats a hash map).
#[derive(Default)]
struct Pool {
    hosts: Mutex<Vec<Host>>,
}

struct Host {
    scheme: Scheme,
    authority: Authority,
    /// Idle connections, the most recently used last.
    idle: Vec<(SendRequest<Body>, Instant)>,
}

/// Why a request did not get an answer from its upstream.
#[derive(Debug)]
pub struct UpstreamError(String);

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UpstreamError {}

fn fail(what: &str, e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError(format!("{what}: {e}"))
}

/// A client for `http://` and `https://` upstreams; `ca_file` (PEM) is
/// trusted besides the system's roots.
///
/// # Errors
/// A CA file that cannot be read or holds no certificate; no root at all.
pub fn client(ca_file: Option<&Path>) -> Result<Upstreams, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        // A system certificate rustls cannot use is skipped, as a browser would.
        let _ = roots.add(c);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("upstream_ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("upstream_ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "upstream_ca_file {}: no certificate in it",
                path.display()
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("upstream_ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Upstreams {
        connector,
        pool: Arc::default(),
    })
}

impl Upstreams {
    /// Sends `req` (its URI absolute: `http://host:port/path?query`) and
    /// returns the answer's head; its body streams from the connection.
    /// Without a `Host` header the request gets the URI's authority.
    ///
    /// # Errors
    /// The URI names no `http`/`https` upstream; the connection could not
    /// be made; the upstream closed it or answered what is not HTTP/1.1.
    pub async fn request(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(UpstreamError(format!("{uri}: not an absolute URL")));
        };
        if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
            return Err(UpstreamError(format!("{uri}: not http or https")));
        }
        if !req.headers().contains_key(header::HOST) {
            // The host and port, never user information before an `@`.
            let hostport = authority.as_str().rsplit('@').next().unwrap_or_default();
            let host = HeaderValue::from_str(hostport).map_err(|e| fail("host", e))?;
            req.headers_mut().insert(header::HOST, host);
        }
        // On the wire, HTTP/1.1 names the path and query (origin form).
        *req.uri_mut() = uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        // An idle connection, while there is one that takes the request.
        while let Some(mut sender) = self.pool.take(scheme, authority) {
            if sender.ready().await.is_err() {
                continue; // closed while idle
            }
            match sender.try_send_request(req).await {
                Ok(res) => return Ok(self.answer(res, sender, scheme, authority)),
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closing. Another.
                    Some(unsent) => req = unsent,
                    None => return Err(fail("upstream", e.into_error())),
                },
            }
        }
        let io = self
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(|e| fail("connect", e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| fail("handshake", e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection");
            }
        });
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| fail("upstream", e))?;
        Ok(self.answer(res, sender, scheme, authority))
    }

    /// The answer, its body holding the connection until read to the end.
    fn answer(
        &self,
        res: Response<Incoming>,
        sender: SendRequest<Body>,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Response<UpstreamBody> {
        res.map(|body| UpstreamBody {
            body,
            back: Some(Back {
                pool: Arc::clone(&self.pool),
                scheme: scheme.clone(),
                authority: authority.clone(),
                sender,
            }),
        })
    }
}

impl Pool {
    /// The most recently used idle connection to the upstream, if any; the
    /// ones found closed or idle too long are dropped on the way.
    fn take(&self, scheme: &Scheme, authority: &Authority) -> Option<SendRequest<Body>> {
        let mut hosts = self.hosts.lock().ok()?;
        let host = hosts
            .iter_mut()
            .find(|h| h.scheme == *scheme && h.authority == *authority)?;
        while let Some((sender, since)) = host.idle.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE {
                return Some(sender);
            }
        }
        None
    }

    /// A connection whose answer was read to its end, ready for another.
    fn put(&self, scheme: Scheme, authority: Authority, sender: SendRequest<Body>) {
        let Ok(mut hosts) = self.hosts.lock() else {
            return;
        };
        let now = Instant::now();
        match hosts
            .iter_mut()
            .find(|h| h.scheme == scheme && h.authority == authority)
        {
            Some(host) => {
                if host.idle.len() < MAX_IDLE {
                    host.idle.push((sender, now));
                }
            }
            None => hosts.push(Host {
                scheme,
                authority,
                idle: vec![(sender, now)],
            }),
        }
    }
}

/// What returns a connection to the pool.
struct Back {
    pool: Arc<Pool>,
    scheme: Scheme,
    authority: Authority,
    sender: SendRequest<Body>,
}

/// An answer's body, streamed from its upstream connection. Read to its end,
/// it returns the connection to the pool; dropped before, the connection
/// closes (what is left of the answer would be read as the next one's).
pub struct UpstreamBody {
    body: Incoming,
    back: Option<Back>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
    }
}

impl UpstreamBody {
    fn give_back(&mut self) {
        if let Some(b) = self.back.take() {
            b.pool.put(b.scheme, b.authority, b.sender);
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            // An error ends the connection: it is not given back.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A server that wrote all of a known length need not ask for the
        // end: a body with nothing left to read returns its connection too.
        // One dropped before its end is not given back (hyper closes that
        // connection, and the pool would only find it dead).
        if hyper::body::Body::is_end_stream(&self.body) {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An HTTP/1.1 upstream, one task per connection, numbering its
    /// connections. Each answer's body is `conn-N PATH HOST`. `/close`
    /// answers with `Connection: close` and closes; `/drop` answers as if
    /// to keep the connection, then closes it; `/big` sends a megabyte.
    async fn upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&count);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let n = accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(read) = s.read(&mut chunk).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..read]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap().to_owned();
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("host: "))
                            .unwrap_or("-")
                            .to_owned();
                        let body = if path == "/big" {
                            "x".repeat(1 << 20)
                        } else {
                            format!("conn-{n} {path} {host}")
                        };
                        let close = if path == "/close" {
                            "connection: close\r\n"
                        } else {
                            ""
                        };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n",
                            body.len()
                        );
                        if s.write_all(head.as_bytes()).await.is_err()
                            || s.write_all(body.as_bytes()).await.is_err()
                        {
                            return;
                        }
                        if path == "/close" || path == "/drop" {
                            return;
                        }
                    }
                });
            }
        });
        (addr, count)
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> Request<Body> {
        Request::get(format!("http://{addr}{path}"))
            .body(Body::empty())
            .unwrap()
    }

    async fn text(client: &Upstreams, req: Request<Body>) -> String {
        let res = client.request(req).await.unwrap();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_answer_is_read() {
        let (addr, count) = upstream().await;
        let client = client(None).unwrap();
        assert_eq!(
            text(&client, get(addr, "/a")).await,
            format!("conn-0 /a {addr}")
        );
        assert_eq!(
            text(&client, get(addr, "/b")).await,
            format!("conn-0 /b {addr}")
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // A request that names its own host keeps it.
        let mut req = get(addr, "/c");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("api.example"));
        assert_eq!(text(&client, req).await, "conn-0 /c api.example");
    }

    #[tokio::test]
    async fn an_answer_dropped_halfway_closes_its_connection() {
        let (addr, count) = upstream().await;
        let client = client(None).unwrap();
        let mut res = client.request(get(addr, "/big")).await.unwrap();
        let first = res.body_mut().frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| d.len() < 1 << 20));
        drop(res);
        // The rest of the megabyte is not read as the next answer.
        assert_eq!(
            text(&client, get(addr, "/next")).await,
            format!("conn-1 /next {addr}")
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        let (addr, count) = upstream().await;
        let client = client(None).unwrap();
        assert_eq!(
            text(&client, get(addr, "/close")).await,
            format!("conn-0 /close {addr}")
        );
        assert_eq!(
            text(&client, get(addr, "/drop")).await,
            format!("conn-1 /drop {addr}")
        );
        // conn-1 said nothing of closing, then closed while idle.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            text(&client, get(addr, "/after")).await,
            format!("conn-2 /after {addr}")
        );
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_each_get_their_own_answer() {
        let (addr, count) = upstream().await;
        let client = client(None).unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..20 {
                    let path = format!("/{i}-{j}");
                    let body = text(&client, get(addr, &path)).await;
                    assert!(
                        body.ends_with(&format!(" {path} {addr}")),
                        "{path} got {body}"
                    );
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Reused: far fewer connections than the 1,280 requests.
        assert!(count.load(Ordering::SeqCst) <= 64, "{count:?}");
    }

    #[tokio::test]
    async fn a_relative_or_non_http_uri_is_refused() {
        let client = client(None).unwrap();
        let relative = Request::get("/x").body(Body::empty()).unwrap();
        assert!(
            client
                .request(relative)
                .await
                .unwrap_err()
                .to_string()
                .contains("not an absolute URL")
        );
        let ftp = Request::get("ftp://127.0.0.1/x")
            .body(Body::empty())
            .unwrap();
        assert!(
            client
                .request(ftp)
                .await
                .unwrap_err()
                .to_string()
                .contains("not http or https")
        );
    }
}
