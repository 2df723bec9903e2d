//! The enforcement point's client of the authority: stream set-up, snapshot,
//! polling, and consuming one-time mandates. Blocking (it runs on its own
//! thread or in `spawn_blocking`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mandate_core::keys::{Jwks, KeySet};
use mandate_core::state::StateDocument;
use serde_json::{Value, json};

use crate::replica::Replica;

/// A failed call to the authority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authority: {0}")]
pub struct ClientError(pub String);

/// The client. Its caller token is a secret: `Debug` leaves it out.
///
/// It may know several replicas of the authority (a comma-separated list of
/// base URLs): it talks to one, and moves to the next when that one cannot
/// be reached or answers 502, 503 or 504, staying with whichever answered.
#[derive(Clone)]
pub struct AuthorityClient {
    bases: std::sync::Arc<Vec<String>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: std::sync::Arc<std::sync::RwLock<TokenSource>>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for AuthorityClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityClient")
            .field("bases", &self.bases)
            .finish_non_exhaustive()
    }
}

/// Where the caller token comes from: given once, a file read again
/// whenever it changes (a token refreshed by whatever writes the file is
/// used without a restart), or the OAuth client-credentials grant at the
/// identity provider, asked again before the token expires.
#[derive(Default)]
struct TokenSource {
    value: String,
    file: Option<std::path::PathBuf>,
    modified: Option<std::time::SystemTime>,
    grant: Option<ClientCredentials>,
    /// When the token from the grant is to be replaced.
    renew_at: Option<std::time::Instant>,
}

/// An enforcement point's machine identity at the organisation's identity
/// provider: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4),
/// authenticated with a client secret (HTTP Basic) or a signed client
/// assertion (`private_key_jwt`, RFC 7523).
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    /// The provider's token endpoint (`https://`, or `http://` on loopback).
    pub token_endpoint: String,
    /// This enforcement point's client id.
    pub client_id: String,
    /// A file holding the client secret (read at each request for a token).
    #[serde(default)]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// A file holding a private JWK (Ed25519 or P-256) to sign client
    /// assertions with, instead of a secret.
    #[serde(default)]
    pub private_key_file: Option<std::path::PathBuf>,
    /// `scope` to ask for.
    #[serde(default)]
    pub scope: Option<String>,
    /// `resource` to ask for (RFC 8707): the Mandate API's identifier.
    #[serde(default)]
    pub resource: Option<String>,
}

impl ClientCredentials {
    /// Checks the settings (named as `[client_credentials]` fields).
    ///
    /// # Errors
    /// The first wrong setting.
    pub fn validate(&self) -> Result<(), String> {
        let url =
            url::Url::parse(&self.token_endpoint).map_err(|e| format!("token_endpoint: {e}"))?;
        let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
            || url.host_str() == Some("localhost");
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
            return Err("token_endpoint: must be https:// (http:// on loopback only)".into());
        }
        if self.client_id.is_empty() {
            return Err("client_id: empty".into());
        }
        match (&self.client_secret_file, &self.private_key_file) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err("exactly one of client_secret_file and private_key_file".into()),
        }
    }

    /// Asks for a token: (access token, lifetime).
    fn fetch(&self, agent: &ureq::Agent) -> Result<(String, Duration), ClientError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(s) = &self.scope {
            form.append_pair("scope", s);
        }
        if let Some(r) = &self.resource {
            form.append_pair("resource", r);
        }
        let mut req = agent
            .post(&self.token_endpoint)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json");
        if let Some(f) = &self.client_secret_file {
            let secret = std::fs::read_to_string(f)
                .map_err(|e| ClientError(format!("client_secret_file {}: {e}", f.display())))?;
            let enc =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            // RFC 6749 §2.3.1: both parts form-encoded before Basic.
            let basic = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{}:{}", enc(&self.client_id), enc(secret.trim())),
            );
            req = req.header("Authorization", &format!("Basic {basic}"));
        }
        if let Some(f) = &self.private_key_file {
            let text = std::fs::read(f)
                .map_err(|e| ClientError(format!("private_key_file {}: {e}", f.display())))?;
            let jwk: mandate_core::keys::PrivateJwk = serde_json::from_slice(&text)
                .map_err(|e| ClientError(format!("private_key_file {}: {e}", f.display())))?;
            let key = mandate_core::keys::SigningKey::from_private_jwk(&jwk)
                .map_err(|e| ClientError(format!("private_key_file {}: {e}", f.display())))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let claims = json!({"iss": self.client_id, "sub": self.client_id,
                "aud": self.token_endpoint, "iat": now, "exp": now + 60,
                "jti": crate::sdk::random_jti()});
            let assertion = mandate_core::jws::sign(&key, "JWT", claims.to_string().as_bytes());
            form.append_pair("client_id", &self.client_id);
            form.append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            );
            form.append_pair("client_assertion", &assertion);
        }
        let mut resp = req
            .send(form.finish())
            .map_err(|e| ClientError(format!("token_endpoint: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| ClientError(format!("token_endpoint: {e}")))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 200 {
            return Err(ClientError(format!(
                "token_endpoint answered {status}: {}",
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no error code")
            )));
        }
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ClientError("token_endpoint: no access_token".into()))?;
        let ttl = v.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
        Ok((token.to_owned(), Duration::from_secs(ttl.clamp(1, 86_400))))
    }
}

/// The public roots (Mozilla's, as ureq uses by default) and the
/// certificates in the PEM file at `ca`.
///
/// # Errors
/// A file that cannot be read or holds no certificate.
pub fn roots_with(ca: &std::path::Path) -> Result<ureq::tls::RootCerts, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut certs: Vec<ureq::tls::Certificate<'static>> = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.map_err(|e| format!("{}: {e}", ca.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", ca.display()));
    }
    certs.extend(
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()),
    );
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// The HTTP agent: public roots (webpki) unless `roots` says otherwise.
fn agent(roots: Option<ureq::tls::RootCerts>) -> ureq::Agent {
    let mut b = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false);
    if let Some(r) = roots {
        b = b.tls_config(ureq::tls::TlsConfig::builder().root_certs(r).build());
    }
    b.build().into()
}

impl AuthorityClient {
    /// A client whose token is the content of `path`, read again whenever
    /// the file's modification time changes.
    ///
    /// # Errors
    /// When the file cannot be read at start.
    pub fn with_token_file(base: &str, path: &std::path::Path) -> Result<Self, ClientError> {
        let value = std::fs::read_to_string(path)
            .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        let client = Self::new(base, &value);
        if let Ok(mut t) = client.token.write() {
            t.file = Some(path.to_owned());
            t.modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        }
        Ok(client)
    }

    /// Trusts the CA certificates in `path` (PEM) for the authority's TLS
    /// certificate, besides the public roots: an authority on a private PKI.
    ///
    /// # Errors
    /// A file that cannot be read or holds no certificate.
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Self, ClientError> {
        self.agent = agent(Some(roots_with(path).map_err(ClientError)?));
        Ok(self)
    }

    /// A client whose token comes from the client-credentials grant: one is
    /// asked for now (a failure stops the start), and again when 80% of its
    /// lifetime has passed.
    ///
    /// # Errors
    /// A wrong setting, or the provider refuses or cannot be reached.
    pub fn with_client_credentials(
        base: &str,
        grant: ClientCredentials,
    ) -> Result<Self, ClientError> {
        Self::new(base, "").with_grant(grant)
    }

    /// This client, its token from the client-credentials grant (asked for
    /// now, through this client's TLS settings: call it after
    /// [`AuthorityClient::with_ca_file`]).
    ///
    /// # Errors
    /// As [`AuthorityClient::with_client_credentials`].
    pub fn with_grant(self, grant: ClientCredentials) -> Result<Self, ClientError> {
        grant.validate().map_err(ClientError)?;
        let client = self;
        let (token, ttl) = grant.fetch(&client.agent)?;
        if let Ok(mut t) = client.token.write() {
            t.value = token;
            t.renew_at = Some(std::time::Instant::now() + ttl.mul_f64(0.8));
            t.grant = Some(grant);
        }
        Ok(client)
    }

    /// The token from the grant, renewed when due (a failed renewal keeps
    /// the last token and is tried again at the next call, at most every 2 s).
    fn granted(&self) -> Option<String> {
        let (grant, due) = {
            let t = self.token.read().ok()?;
            let grant = t.grant.clone()?;
            (
                grant,
                t.renew_at.is_none_or(|r| std::time::Instant::now() >= r),
            )
        };
        if due {
            match grant.fetch(&self.agent) {
                Ok((token, ttl)) => {
                    if let Ok(mut t) = self.token.write() {
                        t.value = token;
                        t.renew_at = Some(std::time::Instant::now() + ttl.mul_f64(0.8));
                    }
                    tracing::info!(client_id = %grant.client_id, "caller token renewed (client credentials)");
                }
                Err(e) => {
                    if let Ok(mut t) = self.token.write() {
                        t.renew_at = Some(std::time::Instant::now() + Duration::from_secs(2));
                    }
                    tracing::warn!(error = %e, "caller token not renewed; the last one is used");
                }
            }
        }
        self.token.read().ok().map(|t| t.value.clone())
    }

    /// The current token (re-read from its file when that changed; a file
    /// that cannot be read keeps the last token).
    fn bearer(&self) -> String {
        if let Some(t) = self.granted() {
            return t;
        }
        let (file, seen) = match self.token.read() {
            Ok(t) => (t.file.clone(), t.modified),
            Err(_) => return String::new(),
        };
        if let Some(path) = file
            && let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified())
            && Some(modified) != seen
            && let Ok(text) = std::fs::read_to_string(&path)
            && !text.trim().is_empty()
            && let Ok(mut t) = self.token.write()
        {
            t.value = text.trim().to_owned();
            t.modified = Some(modified);
            tracing::info!(file = %path.display(), "caller token re-read");
        }
        self.token
            .read()
            .map(|t| t.value.clone())
            .unwrap_or_default()
    }

    /// A client of the authority at `base` (e.g. `http://127.0.0.1:8080`)
    /// calling with an enforcer bearer token.
    #[must_use]
    pub fn new(base: &str, token: &str) -> Self {
        let agent = agent(None);
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        Self {
            bases: std::sync::Arc::new(bases),
            current: std::sync::Arc::default(),
            token: std::sync::Arc::new(std::sync::RwLock::new(TokenSource {
                value: token.trim().to_owned(),
                ..TokenSource::default()
            })),
            agent,
        }
    }

    /// A POST with a JSON body; the status and the JSON answer.
    ///
    /// # Errors
    /// When the authority cannot be reached.
    pub fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), ClientError> {
        self.call("POST", path, Some(body))
    }

    /// A POST of a form (`application/x-www-form-urlencoded`) with extra
    /// headers and no caller token (an OAuth endpoint authenticated by what
    /// the form and headers carry); the status and the JSON answer.
    ///
    /// # Errors
    /// When the authority cannot be reached.
    pub fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value), ClientError> {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            body.append_pair(k, v);
        }
        let body = body.finish();
        let mut resp = self.failover(path, |url| {
            let mut req = self
                .agent
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(&body)
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        self.call_text(method, path, body.map(Value::to_string))
    }

    fn call_text(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Value), ClientError> {
        let auth = format!("Bearer {}", self.bearer());
        let mut resp = self.failover(path, |url| match (method, &body) {
            ("GET", _) => self.agent.get(url).header("Authorization", &auth).call(),
            (_, Some(b)) => self
                .agent
                .post(url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.as_str()),
            (_, None) => self
                .agent
                .post(url)
                .header("Authorization", &auth)
                .send_empty(),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Sends `send` to the current replica, and to each next one while a
    /// replica cannot be reached or answers 502, 503 or 504; stays with the
    /// one that answered.
    fn failover(
        &self,
        path: &str,
        send: impl Fn(&str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        use std::sync::atomic::Ordering;
        let n = self.bases.len().max(1);
        let start = self.current.load(Ordering::Relaxed);
        let mut last = ClientError("no authority URL".into());
        for i in 0..n {
            let at = (start + i) % n;
            let Some(base) = self.bases.get(at) else {
                break;
            };
            let unavailable = match send(&format!("{base}{path}")) {
                Ok(r) if n > 1 && matches!(r.status().as_u16(), 502..=504) => {
                    format!("{base} answered {}", r.status())
                }
                Ok(r) => {
                    if i > 0 {
                        self.current.store(at, Ordering::Relaxed);
                        tracing::warn!(authority = %base, "failed over to another authority replica");
                    }
                    return Ok(r);
                }
                Err(e) => format!("{base}: {e}"),
            };
            last = ClientError(unavailable);
        }
        Err(last)
    }

    /// The authority base URL in use now.
    #[must_use]
    pub fn base(&self) -> &str {
        let at = self.current.load(std::sync::atomic::Ordering::Relaxed);
        self.bases.get(at).map_or("", String::as_str)
    }

    /// The authority's public keys.
    ///
    /// # Errors
    /// When the JWKS cannot be fetched or read.
    pub fn keys(&self) -> Result<KeySet, ClientError> {
        let (st, v) = self.call("GET", "/.well-known/jwks.json", None)?;
        if st != 200 {
            return Err(ClientError(format!("jwks: {st}")));
        }
        let jwks: Jwks = serde_json::from_value(v).map_err(|e| ClientError(e.to_string()))?;
        KeySet::from_jwks(&jwks).map_err(|(i, e)| ClientError(format!("jwks keys[{i}]: {e}")))
    }

    /// The authority's `iss`.
    ///
    /// # Errors
    /// When the metadata cannot be fetched.
    pub fn issuer(&self) -> Result<String, ClientError> {
        let (_, v) = self.call("GET", "/.well-known/ssf-configuration", None)?;
        v.get("issuer")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError("ssf-configuration: no issuer".into()))
    }

    /// Creates a stream: poll, or push to `push_url`. Returns `(id, aud)`.
    ///
    /// # Errors
    /// When the authority refuses.
    /// `push` is the receiver's URL and the `Authorization` value the
    /// transmitter must send with each SET; `None` for poll delivery.
    pub fn create_stream(
        &self,
        push: Option<(&str, &str)>,
    ) -> Result<(String, String), ClientError> {
        let delivery = match push {
            Some((u, auth)) => {
                json!({"method": "urn:ietf:rfc:8935", "endpoint_url": u, "authorization_header": auth})
            }
            None => json!({"method": "urn:ietf:rfc:8936"}),
        };
        let (st, v) = self.call(
            "POST",
            "/ssf/streams",
            Some(&json!({"delivery": delivery, "description": "mandate enforcement point"})),
        )?;
        if st != 201 {
            return Err(ClientError(format!("create stream: {st} {v}")));
        }
        let id = v
            .get("stream_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let aud = v
            .get("aud")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok((id, aud))
    }

    /// A consistent snapshot and the sequence it reflects.
    ///
    /// # Errors
    /// When the authority cannot be reached or refuses.
    pub fn snapshot(&self, stream: &str) -> Result<(i64, StateDocument), ClientError> {
        let (st, v) = self.call("GET", &format!("/ssf/streams/{stream}/snapshot"), None)?;
        if st != 200 {
            return Err(ClientError(format!("snapshot: {st}")));
        }
        let cursor = v.get("cursor").and_then(Value::as_i64).unwrap_or(0);
        let doc: StateDocument =
            serde_json::from_value(v.get("state").cloned().unwrap_or(Value::Null))
                .map_err(|e| ClientError(e.to_string()))?;
        Ok((cursor, doc))
    }

    /// Polls (RFC 8936), acknowledging everything up to `ack`; returns the
    /// SETs in sequence order.
    ///
    /// # Errors
    /// When the authority cannot be reached or refuses.
    pub fn poll(
        &self,
        stream: &str,
        ack: Option<i64>,
        timeout: Duration,
    ) -> Result<Vec<String>, ClientError> {
        // Everything up to the replica's cursor is applied (or covered by
        // the snapshot it installed): acknowledged in one go.
        let mut body = json!({"maxEvents": 500, "timeout_secs": timeout.as_secs_f64()});
        if let (Some(a), Some(o)) = (ack, body.as_object_mut()) {
            o.insert("ack_through".into(), json!(format!("sig-{a}")));
        }
        let (st, v) = self.call("POST", &format!("/ssf/poll/{stream}"), Some(&body))?;
        if st != 200 {
            return Err(ClientError(format!("poll: {st} {v}")));
        }
        let mut sets: Vec<(i64, String)> = v
            .get("sets")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(jti, set)| {
                        Some((
                            // `sig-<seq>.<tenant tag>`: the sequence first.
                            jti.strip_prefix("sig-")?.split('.').next()?.parse().ok()?,
                            set.as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        sets.sort_by_key(|(seq, _)| *seq);
        Ok(sets.into_iter().map(|(_, s)| s).collect())
    }

    /// Consumes a one-time mandate: `Ok(true)` the first time, `Ok(false)`
    /// when it was already used.
    ///
    /// # Errors
    /// When the authority cannot be reached or answers otherwise.
    pub fn consume(&self, mandate_id: &str) -> Result<Consumed, ClientError> {
        let (st, v) = self.call("POST", &format!("/v1/mandates/{mandate_id}/consume"), None)?;
        match (st, v.get("code").and_then(Value::as_str)) {
            (200, _) => Ok(Consumed::Now),
            (409, Some("one_time_used")) => Ok(Consumed::Already),
            // The lineage ended (the authority knows before this replica).
            (409, Some(state)) => Ok(Consumed::Ended(state.to_owned())),
            (other, _) => Err(ClientError(format!("consume: {other} {v}"))),
        }
    }
}

/// What the authority said to consuming a one-time mandate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// Consumed by this call: act.
    Now,
    /// Used already: deny `one_time_used`.
    Already,
    /// It, or an ancestor, is no longer active: deny with that state
    /// (`revoked`, `completed`, ...).
    Ended(String),
}

/// Logs an outage of the authority once when it starts, then at most every
/// [`Outage::EVERY`] saying how long it has lasted, and once when it ends:
/// not the same warning every 100 ms while the authority is down.
#[derive(Debug, Default)]
pub struct Outage {
    since: Option<std::time::Instant>,
    last_log: Option<std::time::Instant>,
}

impl Outage {
    /// How often a continuing outage is logged.
    pub const EVERY: Duration = Duration::from_secs(30);

    /// A failed call (`what`: `poll`, `snapshot`); whether it was logged.
    pub fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) -> bool {
        let now = std::time::Instant::now();
        let since = *self.since.get_or_insert(now);
        let due = self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= Self::EVERY);
        if due {
            self.last_log = Some(now);
            tracing::warn!(
                %error,
                down_for_secs = now.duration_since(since).as_secs(),
                "authority unreachable ({what} failed); deciding from the replica until it goes stale, then denying state_stale"
            );
        }
        due
    }

    /// A call that worked: ends the outage (logged once).
    pub fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                down_for_secs = since.elapsed().as_secs(),
                "authority reachable again"
            );
            self.last_log = None;
        }
    }
}

/// Keeps a replica current by polling, resynchronising from a snapshot at
/// start and after any gap, until `stop` is set.
pub fn run_poller(
    replica: &Arc<Replica>,
    client: &AuthorityClient,
    stream: &str,
    stop: &Arc<AtomicBool>,
    wait: Duration,
) {
    let mut ack: Option<i64> = None;
    let mut backoff = Duration::from_millis(50);
    let mut outage = Outage::default();
    while !stop.load(Ordering::Relaxed) {
        if replica.needs_snapshot() {
            match client.snapshot(stream) {
                Ok((cursor, doc)) => {
                    outage.recovered();
                    if replica.install(cursor, doc).is_ok() {
                        ack = Some(cursor);
                    }
                }
                Err(e) => {
                    outage.failed("snapshot", &e);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        match client.poll(stream, ack, wait) {
            Ok(sets) => {
                backoff = Duration::from_millis(50);
                outage.recovered();
                replica.touch();
                for set in sets {
                    if let Err(e) = replica.apply_set(&set) {
                        // The authority's answer to our own request: a SET
                        // in it that cannot be applied is a missed signal.
                        replica.mark_gap();
                        tracing::warn!(error = %e, "SET refused; resynchronising");
                        break;
                    }
                }
                ack = Some(replica.cursor());
            }
            Err(e) => {
                if e.to_string().contains("stream_not_enabled") {
                    // The stream was paused or disabled: told so, stale now.
                    replica.mark_paused();
                }
                outage.failed("poll", &e);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

impl AuthorityClient {
    /// Posts a shipment of decision records (`{"source", "first",
    /// "records"}`, already serialized) to the authority's audit log;
    /// `Ok(false)` when the authority answers that it is too large.
    ///
    /// # Errors
    /// When the authority cannot be reached or refuses the batch.
    pub fn ship(&self, shipment: String) -> Result<bool, ClientError> {
        let (st, v) = self.call_text("POST", "/v1/audit/decisions", Some(shipment))?;
        if st == 413 {
            return Ok(false);
        }
        if st == 200 {
            Ok(true)
        } else {
            Err(ClientError(format!("ship: {st} {v}")))
        }
    }
}

#[cfg(test)]
mod outage_tests {
    use super::Outage;

    #[test]
    fn an_outage_is_logged_when_it_starts_not_on_every_failure() {
        let mut o = Outage::default();
        assert!(o.failed("poll", &"refused"));
        for _ in 0..100 {
            assert!(!o.failed("poll", &"refused"));
        }
        o.recovered();
        assert!(o.failed("poll", &"refused"), "a new outage is logged again");
    }
}

#[cfg(test)]
mod grant_tests {
    #![allow(clippy::unwrap_used)]
    use super::ClientCredentials;

    fn grant(endpoint: &str) -> ClientCredentials {
        ClientCredentials {
            token_endpoint: endpoint.into(),
            client_id: "gateway-1".into(),
            client_secret_file: Some("s".into()),
            private_key_file: None,
            scope: None,
            resource: None,
        }
    }

    #[test]
    fn the_secret_goes_to_an_https_endpoint_or_to_loopback_only() {
        assert!(grant("https://idp.example.com/token").validate().is_ok());
        assert!(grant("http://127.0.0.1:8080/token").validate().is_ok());
        assert!(grant("http://[::1]:8080/token").validate().is_ok());
        let e = grant("http://idp.example.com/token")
            .validate()
            .unwrap_err();
        assert!(e.starts_with("token_endpoint"), "{e}");
        let e = grant("http://127.0.0.1@evil.example/token")
            .validate()
            .unwrap_err();
        assert!(e.starts_with("token_endpoint"), "{e}");
    }

    #[test]
    fn one_way_of_proving_the_client_exactly() {
        let mut both = grant("https://idp.example.com/token");
        both.private_key_file = Some("k".into());
        assert!(both.validate().unwrap_err().contains("exactly one"));
        let mut neither = grant("https://idp.example.com/token");
        neither.client_secret_file = None;
        assert!(neither.validate().unwrap_err().contains("exactly one"));
    }
}

#[cfg(test)]
mod failover_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::{Read, Write};

    use super::AuthorityClient;

    /// A replica answering every request with `status` and `{"at": name}`;
    /// how many requests it saw.
    fn replica(
        status: u16,
        name: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s2 = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                read_request(&mut c);
                let body = format!("{{\"at\":\"{name}\"}}");
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, seen)
    }

    /// Reads a whole request (head, then `Content-Length` bytes), so that
    /// closing after the answer never resets a connection with unread
    /// bytes (which could lose the answer before the client reads it).
    fn read_request(c: &mut std::net::TcpStream) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let Ok(n) = c.read(&mut buf) else { return };
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return;
            }
        }
    }

    fn closed() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        url
    }

    #[test]
    fn a_replica_that_is_down_or_unavailable_is_passed_over_and_the_one_that_answers_is_kept() {
        let (busy, busy_seen) = replica(503, "busy");
        let (good, good_seen) = replica(200, "good");
        let c = AuthorityClient::new(&format!("{}, {busy},{good}/", closed()), "t");
        let (st, v) = c.post("/x", &serde_json::json!({})).unwrap();
        assert_eq!((st, v["at"].as_str()), (200, Some("good")));
        assert_eq!(c.base(), good);
        // Kept: the next call goes straight to the replica that answered.
        let before = busy_seen.load(std::sync::atomic::Ordering::SeqCst);
        c.post("/y", &serde_json::json!({})).unwrap();
        assert_eq!(busy_seen.load(std::sync::atomic::Ordering::SeqCst), before);
        assert_eq!(good_seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_refusal_is_an_answer_not_a_reason_to_fail_over() {
        let (forbidding, _) = replica(403, "first");
        let (other, other_seen) = replica(200, "second");
        let c = AuthorityClient::new(&format!("{forbidding},{other}"), "t");
        let (st, _) = c.post("/x", &serde_json::json!({})).unwrap();
        assert_eq!(st, 403);
        assert_eq!(other_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn when_every_replica_is_down_the_error_says_so() {
        let c = AuthorityClient::new(&format!("{},{}", closed(), closed()), "t");
        let e = c.post("/x", &serde_json::json!({})).unwrap_err();
        assert!(e.0.contains("127.0.0.1"), "{e}");
    }
}
