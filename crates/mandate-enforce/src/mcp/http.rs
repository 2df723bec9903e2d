//! Streamable HTTP (MCP 2025-06-18 and later), towards clients and towards
//! upstream servers, as a transparent proxy: the upstream's answers (JSON or
//! an SSE stream), its `Mcp-Session-Id` and the client's
//! `MCP-Protocol-Version` pass through unchanged, so sessions, progress
//! notifications and server-initiated requests work as they would without
//! the proxy. What the proxy changes: a `tools/call` is decided first (a
//! denied one never reaches the upstream), `tools/list` answers are cut to
//! the tools the mandate permits, this proxy's credentials (`Mandate`,
//! `DPoP`, `_meta` keys) stop here, and a call in flight on a mandate that
//! ends is cancelled upstream (`notifications/cancelled`) and answered with
//! the denial.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::message::{self, Kind, Message, RpcError, UPSTREAM_UNAVAILABLE};
use super::{Presented, Proxy, Upstream, denial, filter_tools};

use crate::upstream::Upstreams;

/// The Streamable HTTP side of a proxy.
#[derive(Debug)]
pub struct HttpProxy {
    proxy: Arc<Proxy>,
    client: Upstreams,
}

impl HttpProxy {
    /// Over a started proxy.
    ///
    /// # Errors
    /// An `upstream_ca_file` that cannot be read.
    pub fn new(proxy: Arc<Proxy>) -> Result<Arc<Self>, String> {
        let client = crate::upstream::client(proxy.config.upstream_ca_file.as_deref())?;
        Ok(Arc::new(Self { proxy, client }))
    }

    /// One route per upstream server (`POST`, `GET`, `DELETE`), plus the
    /// enforcement point's `/_mandate/ssf` and `/_mandate/healthz`.
    pub fn router(self: &Arc<Self>) -> Router {
        let mut r = Router::new();
        for i in 0..self.proxy.upstreams.len() {
            let Some(path) = self.proxy.upstreams.get(i).map(|u| u.path.clone()) else {
                continue;
            };
            let (a, b) = (Arc::clone(self), Arc::clone(self));
            r = r.route(
                &path,
                post(move |req: Request| {
                    let h = Arc::clone(&a);
                    async move { h.on_post(i, req).await }
                })
                .get(move |req: Request| {
                    let h = Arc::clone(&b);
                    async move { h.pass_through(i, req).await }
                })
                .delete({
                    let c = Arc::clone(self);
                    move |req: Request| {
                        let h = Arc::clone(&c);
                        async move { h.pass_through(i, req).await }
                    }
                }),
            );
        }
        r.merge(self.proxy.point.router())
    }

    fn upstream(&self, i: usize) -> Option<&Upstream> {
        self.proxy.upstreams.get(i)
    }

    async fn on_post(self: Arc<Self>, i: usize, req: Request) -> Response {
        let Some(up) = self.upstream(i).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let max = self.proxy.config.max_message_bytes;
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, max.saturating_add(1)).await {
            Ok(b) if b.len() <= max => b,
            Ok(_) | Err(_) => {
                let e = RpcError::new(
                    message::INVALID_REQUEST,
                    format!("message: over this proxy's limit of {max} bytes"),
                );
                return rpc(StatusCode::PAYLOAD_TOO_LARGE, &e.response(None));
            }
        };
        let mut m = match message::parse(&bytes, max) {
            Ok(m) => m,
            Err(r) => return rpc(StatusCode::BAD_REQUEST, &r.error.response(r.id.as_ref())),
        };
        let headers = &parts.headers;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        // One proof, in one `DPoP` header (RFC 9449 §4.3 check 1).
        let proof = match headers.get_all("dpop").iter().count() {
            0 => None,
            1 => header("dpop"),
            _ => Some(""),
        };
        let token = header("authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .or_else(|| v.strip_prefix("DPoP "))
        });
        let transport = Presented {
            mandate: header("mandate"),
            proof,
            agent_instance: header(&self.proxy.config.agent_instance_header),
            agent: header(&self.proxy.config.agent_header),
            access_token: token,
            certificate: parts
                .extensions
                .get::<mandate_core::pop::ClientCertificate>()
                .map(|c| c.0.as_ref()),
            held: false,
        };
        let kind = m.kind.clone();
        match kind {
            Kind::Request { id, method } if method == "tools/call" => {
                let (d, detail, mandate) = {
                    let call = match message::tool_call(&m) {
                        Ok(c) => c,
                        Err(e) => return rpc(StatusCode::OK, &e.response(Some(&id))),
                    };
                    let p = transport.with_meta(call.meta);
                    let (d, detail) = self.proxy.decide_call(&up, &call, &p);
                    let tool = format!("{}/{}", up.config.name, call.name);
                    let d = self.proxy.point.fulfil(d).await;
                    self.proxy.point.ship("tools/call", &tool, &d);
                    (d, detail, p.mandate.map(str::to_owned))
                };
                if !d.allow {
                    return rpc(StatusCode::OK, &denial(&d, detail).response(Some(&id)));
                }
                message::strip_meta(&mut m);
                let watch = mandate.map(|mandate| Watch {
                    mandate,
                    id: id.clone(),
                });
                self.forward(&up, &parts.headers, m.to_bytes(), Edit::Call(watch))
                    .await
            }
            Kind::Request { id, method } if method == "tools/list" => {
                let meta = match message::meta(&m) {
                    Ok(x) => x,
                    Err(e) => return rpc(StatusCode::OK, &e.response(Some(&id))),
                };
                let permitted = self.proxy.permitted_tools(&up, &transport.with_meta(meta));
                message::strip_meta(&mut m);
                self.forward(
                    &up,
                    &parts.headers,
                    m.to_bytes(),
                    Edit::List { id, permitted },
                )
                .await
            }
            Kind::Request { id, method } => {
                if !self.proxy.forwards(&method) {
                    return rpc(StatusCode::OK, &not_forwarded(&method).response(Some(&id)));
                }
                message::strip_meta(&mut m);
                self.forward(&up, &parts.headers, m.to_bytes(), Edit::None)
                    .await
            }
            Kind::Notification { method } if !self.proxy.forwards(&method) => {
                tracing::debug!(method, "notification not forwarded");
                StatusCode::ACCEPTED.into_response()
            }
            Kind::Notification { .. } | Kind::Response { .. } => {
                self.forward(&up, &parts.headers, m.to_bytes(), Edit::None)
                    .await
            }
        }
    }

    /// `GET` (the server's SSE stream) and `DELETE` (end of session): passed
    /// through, minus this proxy's credentials.
    async fn pass_through(self: Arc<Self>, i: usize, req: Request) -> Response {
        let Some(up) = self.upstream(i).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let (parts, _) = req.into_parts();
        let Some(uri) = upstream_uri(&up) else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let mut out = Request::new(Body::empty());
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.headers_mut() = self.onward_headers(&parts.headers);
        match self.client.request(out).await {
            Ok(resp) => back(resp.map(Body::new)),
            Err(e) => {
                tracing::warn!(error = %e, "mcp upstream");
                (StatusCode::BAD_GATEWAY, "upstream unavailable").into_response()
            }
        }
    }

    /// The headers that go upstream: the client's, minus this proxy's
    /// credentials and hop-by-hop headers, plus `Via`.
    fn onward_headers(&self, from: &HeaderMap) -> HeaderMap {
        let mut h = from.clone();
        for name in [
            "mandate",
            "dpop",
            self.proxy.config.agent_instance_header.as_str(),
            self.proxy.config.agent_header.as_str(),
        ] {
            h.remove(name);
        }
        h.remove(header::HOST);
        h.remove(header::CONTENT_LENGTH);
        crate::gateway::strip_hop_by_hop(&mut h);
        h.append(header::VIA, HeaderValue::from_static(VIA));
        h
    }

    async fn forward(
        self: &Arc<Self>,
        up: &Upstream,
        headers: &HeaderMap,
        body: Vec<u8>,
        edit: Edit,
    ) -> Response {
        let Some(uri) = upstream_uri(up) else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let id = edit.id().cloned();
        let mut out = Request::new(Body::from(body));
        *out.method_mut() = Method::POST;
        *out.uri_mut() = uri;
        *out.headers_mut() = self.onward_headers(headers);
        let resp = match self.client.request(out).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "mcp upstream");
                let err = RpcError::new(UPSTREAM_UNAVAILABLE, "upstream MCP server unavailable");
                return rpc(StatusCode::BAD_GATEWAY, &err.response(id.as_ref()));
            }
        };
        if matches!(edit, Edit::None) {
            return back(resp.map(Body::new));
        }
        let shape = match resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            Some(t) if t.starts_with("text/event-stream") => Shape::Sse,
            Some(t) if t.starts_with("application/json") => Shape::Json,
            _ => return back(resp.map(Body::new)),
        };
        let (mut parts, upstream_body) = resp.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        let cancel = Cancel {
            http: Arc::clone(self),
            up: up.clone(),
            headers: self.onward_headers(headers),
        };
        let pump = Pump::new(upstream_body, shape, edit, cancel);
        let stream = futures_util::stream::unfold(pump, |mut p| async move {
            p.next_chunk().await.map(|c| (c, p))
        });
        back(axum::http::Response::from_parts(
            parts,
            Body::from_stream(stream),
        ))
    }
}

/// How the gateway and this proxy name themselves in `Via`.
const VIA: &str = "1.1 mandate-mcp";

fn upstream_uri(up: &Upstream) -> Option<Uri> {
    up.config.url.as_deref()?.parse().ok()
}

fn back(mut resp: Response) -> Response {
    crate::gateway::strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut()
        .append(header::VIA, HeaderValue::from_static(VIA));
    resp
}

fn rpc(status: StatusCode, body: &Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The error for a method this proxy does not forward.
#[must_use]
pub fn not_forwarded(method: &str) -> RpcError {
    RpcError {
        code: message::METHOD_NOT_FOUND,
        message: format!(
            "method `{}` is not forwarded by this proxy (list it in `forward` to allow it)",
            method.escape_default()
        ),
        data: Some(json!({"method": method})),
    }
}

/// A call in flight, watched until its answer.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The mandate it was allowed under.
    pub mandate: String,
    /// The request's id.
    pub id: Value,
}

/// What the proxy does to an answer.
#[derive(Debug)]
enum Edit {
    None,
    List { id: Value, permitted: Vec<String> },
    Call(Option<Watch>),
}

impl Edit {
    fn id(&self) -> Option<&Value> {
        match self {
            Self::None | Self::Call(None) => None,
            Self::List { id, .. } => Some(id),
            Self::Call(Some(w)) => Some(&w.id),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Json,
    Sse,
}

/// What cancelling a call upstream needs.
struct Cancel {
    http: Arc<HttpProxy>,
    up: Upstream,
    headers: HeaderMap,
}

impl Cancel {
    /// Tells the upstream the call is cancelled (the proxy issued it
    /// there): `notifications/cancelled` in the same session.
    fn send(self, id: &Value, reasons: &[String]) {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": format!("mandate ended: {}", reasons.join(", "))}});
        tokio::spawn(async move {
            let Some(uri) = upstream_uri(&self.up) else {
                return;
            };
            let mut out = Request::new(Body::from(note.to_string()));
            *out.method_mut() = Method::POST;
            *out.uri_mut() = uri;
            let mut h = self.headers;
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            );
            *out.headers_mut() = h;
            if let Err(e) = self.http.client.request(out).await {
                tracing::warn!(error = %e, "mcp upstream: cancellation not delivered");
            }
        });
    }
}

/// Rewrites one JSON-RPC message of the answer, when it is the one `edit`
/// is about. Returns whether it was (the call's answer has arrived).
fn apply(edit: &Edit, msg: &mut Value) -> bool {
    match edit {
        Edit::List { id, permitted } if msg.get("id") == Some(id) => {
            if let Some(result) = msg.get_mut("result") {
                filter_tools(result, permitted);
            }
            true
        }
        Edit::Call(Some(w)) => msg.get("id") == Some(&w.id),
        _ => false,
    }
}

/// Carries the upstream's answer to the client, rewriting the message
/// `edit` is about and, for a call, cancelling it when its mandate ends
/// before the answer. A stream polled by the response itself (no task, no
/// channel between them).
struct Pump {
    body: crate::upstream::UpstreamBody,
    shape: Shape,
    edit: Edit,
    cancel: Option<Cancel>,
    watch: Option<Watch>,
    tick: tokio::time::Interval,
    buf: Vec<u8>,
    answered: bool,
    finished: bool,
    pending: std::collections::VecDeque<Bytes>,
    max: usize,
}

enum Step {
    Frame(Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>),
    Tick,
}

impl Pump {
    fn new(body: crate::upstream::UpstreamBody, shape: Shape, edit: Edit, cancel: Cancel) -> Self {
        let watch = match &edit {
            Edit::Call(Some(w)) => Some(w.clone()),
            _ => None,
        };
        let every = Duration::from_millis(cancel.http.proxy.config.watch_ms);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max = cancel
            .http
            .proxy
            .config
            .max_message_bytes
            .saturating_mul(16);
        Self {
            body,
            shape,
            edit,
            cancel: Some(cancel),
            watch,
            tick,
            buf: Vec::new(),
            answered: false,
            finished: false,
            pending: std::collections::VecDeque::new(),
            max,
        }
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(Ok(b));
            }
            if self.finished {
                return None;
            }
            let watching = self.watch.is_some() && !self.answered;
            let step = tokio::select! {
                frame = self.body.frame() => Step::Frame(frame),
                _ = self.tick.tick(), if watching => Step::Tick,
            };
            match step {
                Step::Frame(None) => self.finish(),
                Step::Frame(Some(Err(_))) => {
                    self.finished = true;
                    return Some(Err(std::io::Error::other("upstream body")));
                }
                Step::Frame(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.buf.extend_from_slice(&data);
                    if self.shape == Shape::Sse {
                        while let Some((end, sep)) = event_end(&self.buf) {
                            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
                            let (out, done) = rewrite_event(&event, &self.edit);
                            self.answered |= done;
                            self.pending.push_back(Bytes::from(out));
                        }
                    }
                    if self.buf.len() > self.max {
                        self.finished = true;
                        return Some(Err(std::io::Error::other("upstream answer too large")));
                    }
                }
                Step::Tick => self.check_watch(),
            }
        }
    }

    /// The upstream's answer is complete.
    fn finish(&mut self) {
        self.finished = true;
        let buf = std::mem::take(&mut self.buf);
        match self.shape {
            Shape::Json => {
                let out = match serde_json::from_slice::<Value>(&buf) {
                    Ok(mut v) => {
                        apply(&self.edit, &mut v);
                        v.to_string().into_bytes()
                    }
                    Err(_) => buf,
                };
                self.pending.push_back(Bytes::from(out));
            }
            Shape::Sse if !buf.is_empty() => {
                let (out, _) = rewrite_event(&buf, &self.edit);
                self.pending.push_back(Bytes::from(out));
            }
            Shape::Sse => {}
        }
    }

    /// A call in flight whose mandate ended: cancelled upstream, answered
    /// with the denial, and nothing more of the upstream's answer is sent.
    fn check_watch(&mut self) {
        let Some(w) = &self.watch else {
            return;
        };
        let Some(cancel) = self.cancel.take() else {
            return;
        };
        let proxy = &cancel.http.proxy;
        if proxy.still_in_force(&w.mandate) {
            self.cancel = Some(cancel);
            return;
        }
        let reasons = proxy.why_ended(&w.mandate);
        let d = mandate_core::decision::Decision {
            allow: false,
            reasons: reasons.clone(),
            chain: proxy
                .point
                .verifier
                .verify(&w.mandate)
                .map(|c| c.shared_ids())
                .unwrap_or_else(|_| std::sync::Arc::from([])),
            obligations: Vec::new(),
        };
        let err = denial(
            &d,
            Some(
                "the mandate ended while the call was in flight; the call was cancelled upstream"
                    .into(),
            ),
        )
        .response(Some(&w.id));
        let out = match self.shape {
            Shape::Json => err.to_string().into_bytes(),
            Shape::Sse => format!("event: message\ndata: {err}\n\n").into_bytes(),
        };
        cancel.send(&w.id, &reasons);
        self.pending.clear();
        self.pending.push_back(Bytes::from(out));
        self.finished = true;
    }
}

/// Where the first complete SSE event in `buf` ends: the index of its blank
/// line and the separator's length.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        match (buf.get(i), buf.get(i + 1), buf.get(i + 2), buf.get(i + 3)) {
            (Some(b'\n'), Some(b'\n'), ..) => return Some((i, 2)),
            (Some(b'\r'), Some(b'\n'), Some(b'\r'), Some(b'\n')) => return Some((i, 4)),
            (Some(b'\r'), Some(b'\r'), ..) => return Some((i, 2)),
            _ => i += 1,
        }
    }
    None
}

/// One SSE event, its `data` rewritten when it is the message `edit` is
/// about; other events unchanged. Whether it was.
fn rewrite_event(event: &[u8], edit: &Edit) -> (Vec<u8>, bool) {
    let Ok(text) = std::str::from_utf8(event) else {
        return (event.to_vec(), false);
    };
    let mut data = String::new();
    let mut others = Vec::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if !line.is_empty() {
            others.push(line);
        }
    }
    let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
        return (event.to_vec(), false);
    };
    if !apply(edit, &mut v) {
        return (event.to_vec(), false);
    }
    let mut out = String::new();
    for l in others {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
    (out.into_bytes(), true)
}

/// Whether a parsed message is the kind a client may send (for the fuzz
/// target: every parse result either refuses or yields one of these).
#[must_use]
pub fn is_forwardable(m: &Message) -> bool {
    matches!(
        m.kind,
        Kind::Request { .. } | Kind::Notification { .. } | Kind::Response { .. }
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn an_sse_answer_to_tools_list_is_cut_to_the_permitted_tools() {
        let edit = Edit::List {
            id: json!(2),
            permitted: vec!["search_vendors".into()],
        };
        let event = b"event: message\r\nid: e1\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"search_vendors\"},{\"name\":\"delete_vendor\"}]}}\r\n\r\n";
        let (end, sep) = event_end(event).unwrap();
        assert_eq!(end + sep, event.len());
        let (out, done) = rewrite_event(event, &edit);
        assert!(done);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("event: message\nid: e1\ndata: "), "{out}");
        assert!(out.contains("search_vendors") && !out.contains("delete_vendor"));
        // Another message (a progress notification) passes unchanged.
        let other = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        assert_eq!(rewrite_event(other, &edit), (other.to_vec(), false));
    }
}
