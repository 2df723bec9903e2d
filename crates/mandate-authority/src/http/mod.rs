//! The HTTP API.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::state::AppState;

pub mod authzen;
pub mod events;
pub mod facts;
pub mod lifecycle;
pub mod listing;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod requests;
pub mod ssf;
pub mod wire;

/// The router over shared state.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.body_limit;
    let routes = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route(
            "/.well-known/authzen-configuration",
            get(authzen::configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/access/v1/evaluation", post(authzen::evaluation))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route("/access/v1/search/action", post(authzen::search_action))
        .route("/.well-known/ssf-configuration", get(ssf::configuration))
        .route(
            "/ssf/streams",
            post(ssf::create)
                .get(ssf::read)
                .patch(ssf::update)
                .put(ssf::replace)
                .delete(ssf::delete),
        )
        .route("/ssf/status", get(ssf::status).post(ssf::set_status))
        .route("/ssf/subjects/add", post(ssf::add_subject))
        .route("/ssf/subjects/remove", post(ssf::remove_subject))
        .route("/ssf/verify", post(ssf::verify))
        .route("/ssf/poll/{id}", post(ssf::poll))
        .route("/ssf/streams/{id}/snapshot", get(ssf::snapshot))
        .route(
            "/v1/audit/decisions",
            post(authzen::ship).layer(DefaultBodyLimit::max(state.config.shipment_limit)),
        )
        .route(
            "/v1/requests",
            get(listing::requests).post(requests::create),
        )
        .route("/v1/mandates", get(listing::mandates))
        .route("/v1/audit", get(listing::audit))
        .route("/v1/requests/{id}", get(requests::show))
        .route("/v1/requests/{id}/approve", post(requests::approve))
        .route("/v1/requests/{id}/deny", post(requests::deny))
        .route("/v1/mandates/{id}", get(lifecycle::show))
        .route("/v1/mandates/{id}/suspend", post(lifecycle::suspend))
        .route("/v1/mandates/{id}/resume", post(lifecycle::resume))
        .route("/v1/mandates/{id}/revoke", post(lifecycle::revoke))
        .route("/v1/mandates/{id}/amend", post(lifecycle::amend))
        .route(
            "/v1/mandates/{id}/children",
            post(lifecycle::register_child),
        )
        .route("/v1/mandates/{id}/discovery", post(lifecycle::discovery))
        .route("/v1/mandates/{id}/consume", post(lifecycle::consume))
        .route(
            "/v1/facts",
            get(facts::show).put(facts::replace).patch(facts::patch),
        )
        .route("/v1/events", post(events::create))
        .route("/v1/audit/checkpoint", get(ops::checkpoint))
        .route("/v1/webhooks/github/{source}", post(events::github))
        .merge(crate::console::router())
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            count_http,
        ))
        .with_state(state);
    around(
        routes,
        tower::ServiceBuilder::new()
            .layer(axum::middleware::map_response(problem_for_plain_errors))
            .layer(DefaultBodyLimit::max(limit)),
    )
}

/// Wraps `router` as a whole in `layer`, which then runs once per request
/// around the routing (and around the fallback, as `Router::layer` would).
///
/// `Router::layer` instead wraps every route's service, one boxed service
/// per layer, and every request clones each level of that nesting: with the
/// authority's six layers that was about fifty allocations per request
/// before any handler ran. Wrapped here, a request clones the stack once
/// (an `Arc` and the layers' small values) plus one boxed route per `around`.
pub fn around<L>(router: Router, layer: L) -> Router
where
    L: tower::Layer<Router>,
    L::Service: tower::Service<axum::extract::Request, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Response: axum::response::IntoResponse,
    <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
{
    Router::new().fallback_service(layer.layer(router))
}

/// The tracing layer [`trace_layer`] builds.
pub type RequestTrace = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&axum::http::Request<axum::body::Body>) -> tracing::Span,
    (),
    tower_http::trace::DefaultOnResponse,
>;

/// Wraps a router with request tracing and request ids (the authority's and
/// the gateway's): a request without an `X-Request-ID` gets one (a UUID),
/// which its `debug` span carries; the answer echoes it.
pub fn observed(router: Router) -> Router {
    around(
        router,
        tower::ServiceBuilder::new()
            .layer(RequestIdLayer)
            .layer(trace_layer()),
    )
}

/// Request ids, in one layer: a request without an `X-Request-ID` gets one,
/// a random (v4) UUID drawn from a per-thread CSPRNG (uuid's `fast-rng`:
/// rand's ChaCha, seeded from the OS, so no `getrandom` system call a
/// request); the answer echoes the request's (AuthZEN 1.0 makes that a MUST
/// for the decision endpoints; every route does it). A caller's id longer
/// than 256 bytes is not echoed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIds { inner }
    }
}

/// The service [`RequestIdLayer`] makes.
#[derive(Clone, Debug)]
pub struct RequestIds<S> {
    inner: S,
}

const X_REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// A new request id: a hyphenated v4 UUID, written without the formatter.
fn new_request_id() -> Option<axum::http::HeaderValue> {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    axum::http::HeaderValue::from_str(id).ok()
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for RequestIds<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
{
    type Response = axum::http::Response<R>;
    type Error = S::Error;
    type Future = EchoId<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) => Some(v.clone()),
            None => new_request_id().inspect(|v| {
                req.headers_mut().insert(X_REQUEST_ID, v.clone());
            }),
        };
        EchoId {
            inner: self.inner.call(req),
            id: id.filter(|v| v.len() <= 256),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`RequestIds`]: the inner one, with the request id.
    #[derive(Debug)]
    pub struct EchoId<F> {
        #[pin]
        inner: F,
        id: Option<axum::http::HeaderValue>,
    }
}

impl<F, E, R> std::future::Future for EchoId<F>
where
    F: std::future::Future<Output = Result<axum::http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            res.headers_mut().insert(X_REQUEST_ID, id);
        }
        std::task::Poll::Ready(Ok(res))
    }
}

/// A `debug` span per request (method, path, request id) and a `debug`
/// event with its status and latency: `RUST_LOG=debug` (and
/// `--log-format json`) shows every request, structured.
pub fn trace_layer() -> RequestTrace {
    fn span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
    }
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(span as fn(&axum::http::Request<axum::body::Body>) -> tracing::Span)
        .on_request(())
        .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG))
}

/// Counts every routed request by method, route pattern and status, with
/// its latency (the pattern, never the raw path: label values stay few).
async fn count_http(
    axum::extract::State(s): axum::extract::State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let res = next.run(req).await;
    s.metrics.http(
        &method,
        &route,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

/// Rejections produced by axum itself (413 body too large, 405, 415, ...)
/// come as plain text; every error of this API is problem+json, except the
/// protocols' own JSON error shapes (OAuth's `{error, error_description}`,
/// RFC 8935's `{err, description}`), which pass as they are.
async fn problem_for_plain_errors(res: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let status = res.status();
    let is_problem = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/problem+json")
                || v.starts_with("application/json")
                || v.starts_with("text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return res;
    }
    let code = match status.as_u16() {
        413 => "too_large",
        405 => "method_not_allowed",
        415 => "unsupported_media_type",
        404 => "not_found",
        _ => "invalid_request",
    };
    crate::error::ApiError::new(status, code, status.canonical_reason().unwrap_or("error"))
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tower::{Service as _, ServiceExt as _};

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                let id = super::new_request_id().expect("an id");
                let text = id.to_str().expect("ASCII").to_owned();
                let uuid = uuid::Uuid::parse_str(&text).expect("a UUID");
                assert_eq!(uuid.get_version_num(), 4, "{text}");
                assert_eq!(text.len(), 36, "hyphenated: {text}");
                text
            })
            .collect();
        assert_eq!(ids.len(), 1000, "every id is new");
    }

    /// What the handler saw as the request's id, and the answer's.
    async fn ids(given: Option<&str>) -> (Option<String>, Option<String>) {
        let seen = |req: axum::http::Request<axum::body::Body>| async move {
            let id = req
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok::<_, std::convert::Infallible>(axum::response::IntoResponse::into_response(
                id.unwrap_or_default(),
            ))
        };
        let mut svc = tower::Layer::layer(&super::RequestIdLayer, tower::service_fn(seen));
        let mut req = axum::http::Request::new(axum::body::Body::empty());
        if let Some(g) = given {
            req.headers_mut().insert("x-request-id", g.parse().unwrap());
        }
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        let echoed = res
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        let seen = String::from_utf8(body.to_vec()).unwrap();
        ((!seen.is_empty()).then_some(seen), echoed)
    }

    #[tokio::test]
    async fn a_request_keeps_its_id_or_gets_one_and_the_answer_echoes_it() {
        assert_eq!(
            ids(Some("req-7f3a")).await,
            (Some("req-7f3a".to_owned()), Some("req-7f3a".to_owned()))
        );
        let (seen, echoed) = ids(None).await;
        assert!(
            seen.as_deref()
                .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
            "{seen:?}"
        );
        assert_eq!(
            seen, echoed,
            "the id made for the request is the one echoed"
        );
        let long = "x".repeat(257);
        assert_eq!(
            ids(Some(&long)).await,
            (Some(long.clone()), None),
            "a caller's id over 256 bytes reaches the handler but is not echoed"
        );
    }
}
