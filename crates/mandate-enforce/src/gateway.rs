//! The gateway: a reverse proxy in front of upstream resources that decides
//! every request locally against the replica.
//!
//! Routes map a method and a path template to the authorization-detail
//! type, action and resource attributes
//! (`GET /repos/{owner}/{repo}/pulls/{number}` → `github_pull_request`,
//! `read`, `{repo: "{owner}/{repo}", number: "{number:int}"}`); the request's
//! location is `location_base` + its path. The mandate comes from the
//! `Mandate` header, the holder's DPoP proof (RFC 9449) from `DPoP`, and
//! the access token from `Authorization: Bearer` (or `DPoP`). An allowed
//! request is forwarded (minus the `Mandate`, `DPoP`, instance and
//! hop-by-hop headers, with `Via` and `Forwarded` added); a
//! denied one gets 403 problem+json with the reason codes; a request that
//! matches no route is denied. `/_mandate/auth` answers nginx `auth_request`
//! subrequests (204 or 403, reasons in `X-Mandate-Reasons`) from
//! `X-Original-Method` and `X-Original-URI`; `/_mandate/ssf` receives pushed
//! SETs (RFC 8935).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mandate_core::decision::Decision;
use mandate_core::pop::ClientCertificate;
use mandate_core::request::EvaluationRequest;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::point::{Point, PointConfig, denied};
use crate::replica::Replica;

/// One route.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method.
    pub method: String,
    /// Path template with `{name}` segments.
    pub path: String,
    /// Authorization-detail type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Action name.
    pub action: String,
    /// Resource attributes: templates, `{name:int}` for numbers.
    #[serde(default)]
    pub resource: std::collections::BTreeMap<String, String>,
    /// This route's location base, when not the gateway's.
    #[serde(default)]
    pub location_base: Option<String>,
}

pub use crate::point::Delivery;

/// `gateway.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where to listen.
    pub listen: String,
    /// The authority's base URL, or several (replicas of one authority, as
    /// a list or comma-separated): the first that answers is used.
    #[serde(deserialize_with = "crate::point::authority_urls")]
    pub authority: String,
    /// A file holding an enforcer token for the authority (read again
    /// when it changes). Or `[client_credentials]`.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// The enforcer token from the organisation's identity provider by the
    /// client-credentials grant, renewed before it expires.
    #[serde(default)]
    pub client_credentials: Option<crate::client::ClientCredentials>,
    /// Deny `state_stale` after this long without news from the authority.
    #[serde(default = "default_staleness")]
    pub staleness_ms: u64,
    /// Poll or push.
    #[serde(default)]
    pub delivery: Delivery,
    /// The URL the authority pushes to (default: `http://LISTEN/_mandate/ssf`).
    #[serde(default)]
    pub push_url: Option<String>,
    /// The upstream base URL (`http://127.0.0.1:9000`).
    pub upstream: String,
    /// The base of the locations requests are judged at (`https://api.github.com`).
    pub location_base: String,
    /// Where decisions wait while the authority is unreachable (default:
    /// `gateway-decisions.spool` beside the token file).
    #[serde(default)]
    pub spool_file: Option<std::path::PathBuf>,
    /// The request header that says which agent instance acts
    /// (`context.agent_instance`); it must name the leaf mandate's
    /// `agent.instance`, and a request without it is denied
    /// `agent_instance_missing`. Removed before the request goes upstream.
    #[serde(default = "default_instance_header")]
    pub agent_instance_header: String,
    /// The request header that names the acting agent (`subject.id`); when
    /// present it must be the leaf's `agent.id`.
    #[serde(default = "default_agent_header")]
    pub agent_header: String,
    /// Whether every request must carry a DPoP proof (RFC 9449, the `DPoP`
    /// header) signed by the leaf mandate's holder key (`required`, the
    /// default), or the mandate alone is enough (`bearer`: development
    /// only, logged loudly at start).
    #[serde(default)]
    pub proof_of_possession: mandate_core::pop::Mode,
    /// The URL agents call this gateway at (`https://gw.example.com`): a
    /// proof's `htu` must be this plus the request's path. Default
    /// `http://LISTEN`. Behind nginx, its `X-Original-URL` names it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Whether every proof must carry a nonce this gateway issued (RFC 9449
    /// §8): every answer carries the current one in `DPoP-Nonce`, and a proof
    /// without it is answered 401 `use_dpop_nonce` (`pop_nonce_required`).
    /// Proofs then cannot be made ahead of time.
    #[serde(default)]
    pub dpop_nonce: bool,
    /// The TLS certificate chain (PEM) to serve HTTPS with (read again when
    /// it changes); with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The TLS private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Whether agents are asked for a TLS client certificate: `off` (the
    /// default), `self_signed` (RFC 8705 §2.2: any certificate whose key
    /// signs the handshake) or `pki` (RFC 8705 §2.1: only certificates that
    /// chain to `client_ca_file`); in both, none is also accepted, for
    /// agents with DPoP proofs. A certificate-bound mandate
    /// (`agent.cnf.x5t#S256`) is allowed only on a connection whose
    /// certificate it names, and then needs no per-request proof. Needs
    /// `tls_cert_file`.
    #[serde(default)]
    pub client_certificates: ClientCertificates,
    /// The CA (PEM) agents' certificates must chain to, with
    /// `client_certificates = "pki"` (read at start).
    #[serde(default)]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// Serve plain HTTP on a non-loopback address (behind a proxy that
    /// terminates TLS). Off by default.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// A CA (PEM) trusted for `https://` upstreams besides the system's roots.
    #[serde(default)]
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// The CA (PEM) the authority's certificate is checked against instead
    /// of the public roots (an authority on a private PKI).
    #[serde(default)]
    pub authority_ca_file: Option<std::path::PathBuf>,
    /// How often the authority's keys are fetched again, in seconds
    /// (default 60; a rotated key is published ahead of use for longer).
    #[serde(default = "default_key_refresh")]
    pub key_refresh_secs: u64,
    /// How many DPoP proofs are remembered so each is accepted once (each
    /// for 60 s after its `iat`); when full of proofs that could still be
    /// accepted, new ones are refused `pop_replay_cache_full`. Default
    /// 1,000,000 (~40 MB full: a sustained ~16k proofs/s).
    #[serde(default = "default_replay_capacity")]
    pub replay_capacity: usize,
    /// The routes.
    #[serde(default)]
    pub route: Vec<RouteConfig>,
}

/// Whether a gateway or MCP proxy asks its clients for TLS certificates
/// (see [`GatewayConfig::client_certificates`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificates {
    /// Not asked for.
    #[default]
    Off,
    /// Asked for, optional, not checked against a CA; the handshake proves
    /// the key.
    SelfSigned,
    /// Asked for, optional, and refused at the handshake unless it chains
    /// to `client_ca_file` (and is within its validity period); the
    /// handshake proves the key.
    Pki,
}

fn default_staleness() -> u64 {
    3000
}
fn default_instance_header() -> String {
    "mandate-agent-instance".into()
}
fn default_agent_header() -> String {
    "mandate-agent".into()
}

/// A setting that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct GatewayConfigError {
    /// The setting.
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

fn cerr(setting: impl Into<String>, message: impl Into<String>) -> GatewayConfigError {
    GatewayConfigError {
        setting: setting.into(),
        message: message.into(),
    }
}

/// A setting that names a header, parsed.
fn header_setting(setting: &str, name: &str) -> Result<header::HeaderName, GatewayConfigError> {
    header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| cerr(setting, format!("`{name}` is not a header name")))
}

impl GatewayConfig {
    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// The first wrong setting.
    pub fn from_file(path: &Path) -> Result<Self, GatewayConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| cerr("config", format!("{}: {e}", path.display())))?;
        let c: Self = toml::from_str(&text)
            .map_err(|e| cerr("config", format!("{}: {}", path.display(), e.message())))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// The first wrong setting.
    pub fn validate(&self) -> Result<(), GatewayConfigError> {
        let listen = self
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| cerr("listen", format!("`{}` is not HOST:PORT", self.listen)))?;
        if !(self.upstream.starts_with("http://") || self.upstream.starts_with("https://")) {
            return Err(cerr("upstream", "must be an http:// or https:// URL"));
        }
        crate::point::check_listener(
            &listen,
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
            self.allow_plain_http,
        )
        .map_err(|(setting, m)| cerr(setting, m))?;
        crate::point::check_client_certificates(
            self.client_certificates,
            self.client_ca_file.as_deref(),
            self.tls_cert_file.as_deref(),
        )
        .map_err(|(setting, m)| cerr(setting, m))?;
        crate::point::check_credentials(
            self.token_file.as_deref(),
            self.client_credentials.as_ref(),
        )
        .map_err(|(setting, m)| cerr(setting, m))?;
        if !(1..=86_400).contains(&self.key_refresh_secs) {
            return Err(cerr("key_refresh_secs", "must be between 1 and 86400"));
        }
        use mandate_core::pop::MAX_REPLAY_CAPACITY;
        if !(1..=MAX_REPLAY_CAPACITY).contains(&self.replay_capacity) {
            return Err(cerr(
                "replay_capacity",
                format!("must be between 1 and {MAX_REPLAY_CAPACITY}"),
            ));
        }
        if !(100..=3_600_000).contains(&self.staleness_ms) {
            return Err(cerr("staleness_ms", "must be between 100 and 3600000"));
        }
        mandate_core::location::Location::parse_grant(&self.location_base)
            .map_err(|e| cerr("location_base", e.to_string()))?;
        header_setting("agent_instance_header", &self.agent_instance_header)?;
        header_setting("agent_header", &self.agent_header)?;
        if let Some(u) = &self.public_url {
            let normal = mandate_core::pop::normalize_htu(u).map_err(|e| cerr("public_url", e))?;
            if normal.trim_end_matches('/').matches('/').count() > 2 {
                return Err(cerr(
                    "public_url",
                    "must be an origin (scheme://host[:port]) with no path",
                ));
            }
        }
        for (i, r) in self.route.iter().enumerate() {
            if r.method.is_empty() || r.method.to_ascii_uppercase().parse::<Method>().is_err() {
                return Err(cerr(
                    format!("route[{i}].method"),
                    format!("`{}` is not a method", r.method),
                ));
            }
            if !r.path.starts_with('/') {
                return Err(cerr(format!("route[{i}].path"), "must start with `/`"));
            }
        }
        Ok(())
    }
}

/// A piece of a resource template: literal text, or a path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Segment(usize),
}

/// A resource attribute's template, compiled against its route's path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    name: String,
    pieces: Vec<Piece>,
    int: bool,
}

impl Template {
    /// `{name}` becomes the path segment of that name; `{name:int}` as the
    /// whole template makes the attribute a number; anything else is text.
    fn compile(name: &str, template: &str, path: &[String]) -> Self {
        let (template, int) = match template.strip_suffix(":int}") {
            Some(t) => (format!("{t}}}"), true),
            None => (template.to_owned(), false),
        };
        let var = |n: &str| {
            path.iter()
                .position(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) == Some(n))
        };
        let mut pieces = Vec::new();
        let mut rest = template.as_str();
        while !rest.is_empty() {
            let found = rest.find('{').and_then(|open| {
                let close = open + rest.get(open..)?.find('}')?;
                Some((open, close, var(rest.get(open + 1..close)?)?))
            });
            let Some((open, close, segment)) = found else {
                pieces.push(Piece::Text(rest.to_owned()));
                break;
            };
            if open > 0 {
                pieces.push(Piece::Text(rest.get(..open).unwrap_or_default().to_owned()));
            }
            pieces.push(Piece::Segment(segment));
            rest = rest.get(close + 1..).unwrap_or_default();
        }
        Self {
            name: name.to_owned(),
            pieces,
            int,
        }
    }

    fn render(&self, parts: &[&str]) -> Option<Value> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Segment(i) => out.push_str(parts.get(*i)?),
            }
        }
        if self.int {
            out.parse::<i64>().map(Value::from).ok()
        } else {
            Some(Value::String(out))
        }
    }
}

struct Route {
    method: Method,
    segments: Vec<String>,
    resource: Vec<Template>,
    /// The location base, without a trailing `/`.
    base: String,
    config: RouteConfig,
}

impl Route {
    fn new(config: &RouteConfig, default_base: &str) -> Self {
        let segments: Vec<String> = config
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Self {
            // Methods are case-insensitive in the configuration (`get` is GET).
            method: config
                .method
                .to_ascii_uppercase()
                .parse()
                .unwrap_or(Method::GET),
            resource: config
                .resource
                .iter()
                .map(|(k, t)| Template::compile(k, t, &segments))
                .collect(),
            base: config
                .location_base
                .as_deref()
                .unwrap_or(default_base)
                .trim_end_matches('/')
                .to_owned(),
            segments,
            config: config.clone(),
        }
    }

    fn matches(&self, method: &Method, path: &str) -> Option<Map<String, Value>> {
        if *method != self.method {
            return None;
        }
        let mut parts: Vec<&str> = Vec::with_capacity(self.segments.len());
        for p in path.split('/').filter(|s| !s.is_empty()) {
            let t = self.segments.get(parts.len())?;
            if !t.starts_with('{') && t != p {
                return None;
            }
            parts.push(p);
        }
        if parts.len() != self.segments.len() {
            return None;
        }
        self.resource
            .iter()
            .map(|t| Some((t.name.clone(), t.render(&parts)?)))
            .collect()
    }
}

/// The running gateway.
fn default_replay_capacity() -> usize {
    mandate_core::pop::DEFAULT_REPLAY_CAPACITY
}

fn default_key_refresh() -> u64 {
    crate::point::KEY_REFRESH.as_secs()
}

pub use crate::point::plain_http_check;

/// `https` when the config serves TLS, else `http`.
#[must_use]
pub fn scheme(tls_cert_file: Option<&Path>) -> &'static str {
    if tls_cert_file.is_some() {
        "https"
    } else {
        "http"
    }
}

pub struct Gateway {
    config: GatewayConfig,
    routes: Vec<Route>,
    /// The enforcement point: replica, feed, proofs, audit shipping.
    pub point: Arc<Point>,
    /// The replica decisions read (the point's).
    pub replica: Arc<Replica>,
    upstream: crate::upstream::Upstreams,
    /// `upstream` without a trailing `/`: a forwarded request's path follows.
    upstream_base: String,
    /// The `Host` a forwarded request carries: the upstream's host, and its
    /// port unless the scheme's default (RFC 9110 §7.2), made once.
    upstream_host: Option<HeaderValue>,
    /// Where agents call this gateway (`public_url`, or `http(s)://LISTEN`).
    origin: String,
    /// `agent_instance_header` and `agent_header`, parsed once.
    instance_header: header::HeaderName,
    agent_header: header::HeaderName,
}

/// The headers an agent's request carries its mandate and its proof in.
const MANDATE: header::HeaderName = header::HeaderName::from_static("mandate");
const DPOP: header::HeaderName = header::HeaderName::from_static("dpop");

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Connects to the authority (keys, issuer, a stream) and starts keeping
    /// the replica current. Blocking.
    ///
    /// # Errors
    /// When the token cannot be read or the authority cannot be reached.
    pub fn start(config: GatewayConfig) -> Result<Arc<Self>, String> {
        let instance_header =
            header_setting("agent_instance_header", &config.agent_instance_header)
                .map_err(|e| e.to_string())?;
        let agent_header =
            header_setting("agent_header", &config.agent_header).map_err(|e| e.to_string())?;
        let scheme = scheme(config.tls_cert_file.as_deref());
        let upstream = crate::upstream::client(config.upstream_ca_file.as_deref())?;
        let push_url = match config.delivery {
            Delivery::Push => Some(
                config
                    .push_url
                    .clone()
                    .unwrap_or_else(|| format!("{scheme}://{}/_mandate/ssf", config.listen)),
            ),
            Delivery::Poll => None,
        };
        let spool = config.spool_file.clone().unwrap_or_else(|| {
            config
                .token_file
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or_else(|| Path::new("."))
                .join("gateway-decisions.spool")
        });
        let point = Point::start(PointConfig {
            name: config.listen.clone(),
            authority: config.authority.clone(),
            token_file: config.token_file.clone(),
            client_credentials: config.client_credentials.clone(),
            staleness: Duration::from_millis(config.staleness_ms),
            push_url,
            spool,
            proof_of_possession: config.proof_of_possession,
            dpop_nonce: config.dpop_nonce,
            authority_ca_file: config.authority_ca_file.clone(),
            key_refresh: Duration::from_secs(config.key_refresh_secs),
            replay_capacity: config.replay_capacity,
        })?;
        let routes = config
            .route
            .iter()
            .map(|r| Route::new(r, &config.location_base))
            .collect();
        let upstream_base = config.upstream.trim_end_matches('/').to_owned();
        let upstream_host = upstream_host(&upstream_base);
        Ok(Arc::new(Self {
            routes,
            replica: Arc::clone(&point.replica),
            point,
            upstream,
            upstream_base,
            upstream_host,
            origin: config.public_url.as_deref().map_or_else(
                || format!("{scheme}://{}", config.listen),
                |u| u.trim_end_matches('/').to_owned(),
            ),
            config,
            instance_header,
            agent_header,
        }))
    }

    /// Stops the feed thread and ships (or spools) the pending decisions.
    pub fn stop(&self) {
        self.point.stop();
    }

    fn ship(&self, method: &Method, uri: &Uri, d: &Decision) {
        self.point.ship(method.as_str(), uri.path(), d);
    }

    /// The router.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_mandate/auth", get(auth_request))
            .fallback(proxy)
            .with_state(Arc::clone(self))
            .merge(self.point.router())
    }

    /// Decides a request described by method, path, headers; `url` is the
    /// URL the agent called (what its DPoP proof must name); `certificate`
    /// the `x5t#S256` of the client certificate its TLS connection to this
    /// gateway presented, if any.
    async fn decide(
        &self,
        method: &Method,
        uri: &Uri,
        url: &str,
        headers: &HeaderMap,
        certificate: Option<&str>,
    ) -> Decision {
        let path = uri.path();
        let Some((route, props)) = self
            .routes
            .iter()
            .find_map(|r| r.matches(method, path).map(|p| (r, p)))
        else {
            return denied("no_route");
        };
        let Some(mandate) = headers.get(&MANDATE).and_then(|v| v.to_str().ok()) else {
            return denied("mandate_missing");
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .or_else(|| v.strip_prefix("DPoP "))
            });
        let mut location = String::with_capacity(route.base.len() + path.len());
        location.push_str(&route.base);
        location.push_str(path);
        let mut request =
            EvaluationRequest::new(&route.config.action, &route.config.type_, &location, props);
        // Who acts, as the proxied request says; the decision requires it.
        if let Some(instance) = headers
            .get(&self.instance_header)
            .and_then(|v| v.to_str().ok())
        {
            request = request.with_agent_instance(instance);
        }
        if let Some(agent) = headers
            .get(&self.agent_header)
            .and_then(|v| v.to_str().ok())
        {
            request.subject = Some(serde_json::json!({"type": "agent", "id": agent}));
        }
        // One proof, in one `DPoP` header (RFC 9449 §4.3 check 1).
        let proof = match headers.get_all(&DPOP).iter().count() {
            1 => headers.get(&DPOP).and_then(|v| v.to_str().ok()),
            0 => None,
            _ => Some(""),
        };
        let possession = self
            .point
            .possession(proof, method.as_str(), url, token, certificate);
        self.point
            .decide_batched(mandate, &request, token, possession)
            .await
    }
}

impl Gateway {
    /// Adds the current `DPoP-Nonce` when this gateway requires nonces; a
    /// deny for want of one becomes 401 with `WWW-Authenticate: DPoP
    /// error="use_dpop_nonce"` (RFC 9449 §9) so the client retries with it.
    fn with_nonce(&self, mut res: Response, d: &Decision) -> Response {
        let Some(nonce) = self.point.current_nonce() else {
            return res;
        };
        if let Ok(v) = HeaderValue::from_str(&nonce) {
            res.headers_mut().insert("dpop-nonce", v);
        }
        if d.reasons.iter().any(|r| r == "pop_nonce_required") {
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\"",
                ),
            );
        }
        res
    }
}

/// The `Host` of requests to `upstream` (an `http://` or `https://` URL):
/// its host, and its port when that is not the scheme's default.
fn upstream_host(upstream: &str) -> Option<HeaderValue> {
    let uri: Uri = upstream.parse().ok()?;
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

/// How the gateway names itself in `Via` (RFC 9110 §7.6.3).
const VIA: &str = "1.1 mandate-gateway";

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every
/// header it names, `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`,
/// `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
/// They concern one connection, not the one the gateway opens onward.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, compared as text with no hashing, finds the
    // hop-by-hop headers present: most requests carry none, most responses
    // only `Connection: keep-alive`. Only those are removed.
    let mut gone: Vec<header::HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n.as_str()))
        .cloned()
        .collect();
    if gone.is_empty() {
        return;
    }
    // The names `Connection` lists, read before it is removed.
    gone.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| header::HeaderName::from_bytes(n.trim().as_bytes()).ok()),
    );
    for n in gone {
        headers.remove(n);
    }
}

/// Whether a header name (lower case, as `HeaderName` keeps it) is one of
/// the hop-by-hop headers of RFC 9110 §7.6.1 (and the old `Keep-Alive` and
/// `Proxy-Connection`).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// `X-Forwarded-For`.
const X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");

/// Adds what a proxy adds on the way in: `Via`, the client's address to
/// `X-Forwarded-For`, and an RFC 7239 `Forwarded` element (`for`, `proto`,
/// `host`), keeping what earlier proxies wrote.
fn forwarded(headers: &mut HeaderMap, peer: Option<std::net::IpAddr>, host: Option<&str>) {
    use std::fmt::Write as _;
    headers.append(header::VIA, HeaderValue::from_static(VIA));
    let Some(ip) = peer else {
        return;
    };
    // The address is formatted once, for both headers.
    let mut text = String::with_capacity(96);
    if let Some(prior) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        text.push_str(prior);
        text.push_str(", ");
    }
    let address = text.len();
    let _ = write!(text, "{ip}");
    if let Ok(v) = HeaderValue::from_str(&text) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let node = text.split_off(address);
    text.clear();
    text.push_str("for=");
    match ip {
        std::net::IpAddr::V4(_) => text.push_str(&node),
        std::net::IpAddr::V6(_) => {
            let _ = write!(text, "\"[{node}]\"");
        }
    }
    text.push_str(";proto=http");
    if let Some(h) = host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"')) {
        let _ = write!(text, ";host=\"{h}\"");
    }
    if let Ok(v) = HeaderValue::from_str(&text) {
        headers.append(header::FORWARDED, v);
    }
}

fn problem(d: &Decision) -> Response {
    let body = json!({
        "type": "urn:mandate:problem:mandate_denied",
        "title": "Forbidden",
        "status": 403,
        "code": "mandate_denied",
        "detail": format!("denied: {}", d.reasons.join(", ")),
        "reasons": d.reasons,
        "chain": d.chain,
    });
    let mut res = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

async fn proxy(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let _in_flight = gw.point.request();
    let mut url = String::with_capacity(gw.origin.len() + req.uri().path().len());
    url.push_str(&gw.origin);
    url.push_str(req.uri().path());
    let certificate = req
        .extensions()
        .get::<ClientCertificate>()
        .map(|c| c.0.as_ref());
    let d = gw
        .decide(req.method(), req.uri(), &url, req.headers(), certificate)
        .await;
    let d = gw.point.fulfil(d).await;
    gw.ship(req.method(), req.uri(), &d);
    if !d.allow {
        return gw.with_nonce(problem(&d), &d);
    }
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut target = String::with_capacity(gw.upstream_base.len() + pq.len());
    target.push_str(&gw.upstream_base);
    target.push_str(pq);
    let Ok(uri) = Uri::try_from(target) else {
        return (StatusCode::BAD_GATEWAY, "bad upstream URI").into_response();
    };
    parts.uri = uri;
    parts.headers.remove(&MANDATE);
    // The proof was for this gateway's URL: of no use upstream.
    parts.headers.remove(&DPOP);
    strip_hop_by_hop(&mut parts.headers);
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    forwarded(&mut parts.headers, peer, host.as_deref());
    parts.headers.remove(&gw.instance_header);
    // The upstream's `Host`, not the agent's (which named this gateway).
    match &gw.upstream_host {
        Some(h) => parts.headers.insert(header::HOST, h.clone()),
        None => parts.headers.remove(header::HOST),
    };
    match gw.upstream.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let mut resp = resp.map(Body::new).into_response();
            strip_hop_by_hop(resp.headers_mut());
            resp.headers_mut()
                .append(header::VIA, HeaderValue::from_static(VIA));
            gw.with_nonce(resp, &d)
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream");
            (StatusCode::BAD_GATEWAY, "upstream unavailable").into_response()
        }
    }
}

async fn auth_request(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let _in_flight = gw.point.request();
    let method = headers
        .get("x-original-method")
        .and_then(|v| v.to_str().ok())
        .and_then(|m| m.parse().ok())
        .unwrap_or(Method::GET);
    let uri: Uri = headers
        .get("x-original-uri")
        .and_then(|v| v.to_str().ok())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    // The URL the agent called: nginx names it (`X-Original-URL`, which the
    // shipped configuration writes from its public origin); else this
    // gateway's origin and the original path.
    let url = match (&gw.config.public_url, headers.get("x-original-url")) {
        (None, Some(v)) => v.to_str().unwrap_or_default().to_owned(),
        _ => format!("{}{}", gw.origin, uri.path()),
    };
    let d = gw
        .point
        // No client certificate: nginx ended the agent's TLS connection, and
        // its word on a certificate is not the handshake (a
        // certificate-bound mandate is refused, `pop_certificate_missing`).
        .fulfil(gw.decide(&method, &uri, &url, &headers, None).await)
        .await;
    gw.ship(&method, &uri, &d);
    let status = if d.allow {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::FORBIDDEN
    };
    let mut res = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&d.reasons.join(",")) {
        res.headers_mut().insert("x-mandate-reasons", v);
    }
    // The same as a JSON array, for nginx to put in its 403 body as is.
    if let Ok(v) = HeaderValue::from_str(&Value::from(d.reasons.clone()).to_string()) {
        res.headers_mut().insert("x-mandate-reasons-json", v);
    }
    gw.with_nonce(res, &d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(path: &str, resource: &[(&str, &str)]) -> Route {
        Route::new(
            &RouteConfig {
                method: "GET".into(),
                path: path.into(),
                type_: "github_pull_request".into(),
                action: "read".into(),
                resource: resource
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                location_base: None,
            },
            "https://api.github.com/",
        )
    }

    #[test]
    fn a_forwarded_request_names_the_client_as_rfc_7239_and_x_forwarded_for_do() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        forwarded(
            &mut h,
            Some("127.0.0.1".parse().unwrap()),
            Some("gw.example:8081"),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=http;host=\"gw.example:8081\""
        );
        assert_eq!(h["via"], VIA);
        // IPv6 is quoted and bracketed in `Forwarded`, bare in the other;
        // a host that would break out of its quotes is left out.
        let mut h = HeaderMap::new();
        forwarded(&mut h, Some("2001:db8::7".parse().unwrap()), Some("a\"b"));
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        assert_eq!(h["forwarded"], "for=\"[2001:db8::7]\";proto=http");
        // No peer: only `Via`.
        let mut h = HeaderMap::new();
        forwarded(&mut h, None, Some("gw.example"));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_forwarded_request_names_the_upstream_as_its_host() {
        let host = |u: &str| upstream_host(u).map(|h| h.to_str().unwrap().to_owned());
        assert_eq!(
            host("http://127.0.0.1:9000").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            host("http://api.example:80/v1").as_deref(),
            Some("api.example")
        );
        assert_eq!(
            host("https://api.example:443").as_deref(),
            Some("api.example")
        );
        assert_eq!(
            host("https://api.example:80").as_deref(),
            Some("api.example:80")
        );
        assert_eq!(host("https://[::1]:8443").as_deref(), Some("[::1]:8443"));
        assert_eq!(host("not a url"), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["accept"], "application/json");
        // Each of them, alone, in any case.
        for name in [
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} was kept: {h:?}");
            assert!(h.contains_key("x-kept"));
        }
    }

    #[test]
    fn a_route_turns_path_segments_into_resource_attributes() {
        let r = route(
            "/repos/{owner}/{repo}/pulls/{number}",
            &[
                ("repo", "{owner}/{repo}"),
                ("number", "{number:int}"),
                ("kind", "pr-{x}"),
            ],
        );
        let props = r
            .matches(&Method::GET, "/repos/acme/app/pulls/123")
            .unwrap();
        assert_eq!(
            Value::Object(props),
            json!({"repo": "acme/app", "number": 123, "kind": "pr-{x}"})
        );
        assert_eq!(r.base, "https://api.github.com");
        let literal_braces = r
            .matches(&Method::GET, "/repos/{owner}/app/pulls/1")
            .unwrap();
        assert_eq!(
            literal_braces["repo"], "{owner}/app",
            "a segment's text is not substituted again"
        );
    }

    #[test]
    fn a_route_matches_only_its_method_literals_and_length() {
        let r = route(
            "/repos/{owner}/{repo}/pulls/{number}",
            &[("number", "{number:int}")],
        );
        assert!(
            r.matches(&Method::POST, "/repos/acme/app/pulls/1")
                .is_none()
        );
        assert!(
            r.matches(&Method::GET, "/repos/acme/app/issues/1")
                .is_none()
        );
        assert!(r.matches(&Method::GET, "/repos/acme/app/pulls").is_none());
        assert!(
            r.matches(&Method::GET, "/repos/acme/app/pulls/1/files")
                .is_none()
        );
        assert!(
            r.matches(&Method::GET, "/repos/acme/app/pulls/one")
                .is_none(),
            "a number that is not a number matches no route"
        );
        assert!(
            r.matches(&Method::GET, "//repos/acme/app/pulls/7/")
                .is_some()
        );
    }

    #[test]
    fn the_replay_cache_capacity_is_a_setting_with_a_default_and_bounds() {
        let config = |extra: &str| {
            let text = format!(
                "listen = \"127.0.0.1:8081\"\nauthority = \"http://127.0.0.1:8080\"\n\
                 token_file = \"enforcer.token\"\nupstream = \"http://127.0.0.1:9000\"\n\
                 location_base = \"https://api.github.com\"\n{extra}"
            );
            toml::from_str::<GatewayConfig>(&text).unwrap()
        };
        let default = config("");
        assert_eq!(
            default.replay_capacity,
            mandate_core::pop::DEFAULT_REPLAY_CAPACITY
        );
        assert_eq!(default.validate(), Ok(()));
        assert_eq!(config("replay_capacity = 5000").validate(), Ok(()));
        for wrong in ["replay_capacity = 0", "replay_capacity = 100000001"] {
            let e = config(wrong).validate().unwrap_err();
            assert_eq!(e.setting, "replay_capacity", "{wrong}: {e}");
        }
        // The header names it reads the agent's identity from are names.
        assert_eq!(config("agent_header = \"x-agent\"").validate(), Ok(()));
        for (wrong, setting) in [
            (
                "agent_instance_header = \"agent instance\"",
                "agent_instance_header",
            ),
            ("agent_header = \"\"", "agent_header"),
        ] {
            let e = config(wrong).validate().unwrap_err();
            assert_eq!(e.setting, setting, "{wrong}: {e}");
            assert!(e.message.contains("not a header name"), "{e}");
        }
    }

    #[test]
    fn a_route_method_written_in_lower_case_still_matches() {
        let r = Route::new(
            &RouteConfig {
                method: "get".into(),
                path: "/repos/{owner}".into(),
                type_: "t".into(),
                action: "read".into(),
                resource: std::collections::BTreeMap::new(),
                location_base: None,
            },
            "https://api.github.com/",
        );
        assert!(r.matches(&Method::GET, "/repos/acme").is_some());
        assert!(r.matches(&Method::POST, "/repos/acme").is_none());
    }
}
