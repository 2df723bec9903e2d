//! Configuration: flags and an optional TOML file, validated before the port
//! is bound. Every error names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The local identity issuer's `iss`.
pub const LOCAL_ISSUER: &str = "mandate-local";
/// The audience every caller token must carry.
pub const AUDIENCE: &str = "mandate";

/// An identity provider whose tokens are trusted.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// Its `iss`.
    pub iss: String,
    /// Its JWKS, as a file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Its JWKS, by URL (`https://`, or `http://` on loopback only);
    /// fetched at start and every `jwks_refresh_secs`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The `aud` its caller tokens must contain (default `mandate`; with
    /// Entra ID the application ID URI, with Auth0 the API identifier).
    #[serde(default)]
    pub audience: Option<String>,
    /// The claim holding the role or the groups (`roles`, `groups`,
    /// `realm_access.roles`, …; default `role`).
    #[serde(default)]
    pub role_claim: Option<String>,
    /// The claim holding the tenant (`tid`, `org_id`, …; default `tenant`).
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Every caller of this issuer is of this tenant (no tenant claim read).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Provider values (groups, app roles) → Mandate roles
    /// (`"mandate-admins" = "admin"`). Empty: the claim holds role names.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, crate::auth::Role>,
}

impl TrustedIssuer {
    /// How this issuer's claims name a role and a tenant.
    #[must_use]
    pub fn claim_map(&self) -> crate::idp::ClaimMap {
        let d = crate::idp::ClaimMap::default();
        crate::idp::ClaimMap {
            role_claim: self.role_claim.clone().unwrap_or(d.role_claim),
            tenant_claim: self.tenant_claim.clone().unwrap_or(d.tenant_claim),
            tenant: self.tenant.clone(),
            roles: self.roles.clone(),
        }
    }

    /// What the authority trusts of this issuer, its keys read or fetched.
    ///
    /// # Errors
    /// As [`TrustedIssuer::load_keys`].
    pub fn trusted(&self) -> Result<crate::auth::Trusted, String> {
        Ok(crate::auth::Trusted {
            keys: self.load_keys()?,
            audience: self.audience.clone().unwrap_or_else(|| AUDIENCE.to_owned()),
            claims: self.claim_map(),
        })
    }

    /// Reads or fetches the issuer's keys.
    ///
    /// # Errors
    /// A message naming what failed.
    pub fn load_keys(&self) -> Result<crate::idp::IssuerKeys, String> {
        let bytes = match (&self.jwks_file, &self.jwks_url) {
            (Some(f), None) => std::fs::read(f).map_err(|e| format!("`{}`: {e}", f.display()))?,
            (None, Some(u)) => fetch(u)?,
            _ => return Err("exactly one of jwks_file and jwks_url".into()),
        };
        let jwks: serde_json::Value =
            mandate_core::json::from_slice_strict(&bytes).map_err(|e| e.to_string())?;
        // Keys of other types or uses (encryption keys, curves not verified
        // here) are skipped (RFC 7517 §5), said once in the log.
        let (keys, skipped) = crate::idp::IssuerKeys::from_jwks(&jwks)?;
        for s in skipped {
            tracing::info!(issuer = %self.iss, "JWKS {s}");
        }
        Ok(keys)
    }
}

/// Whether a URL the authority fetches or pushes to may be used: parsed as
/// a URL first (so `http://127.0.0.1:80@evil.example/` is seen as the host
/// `evil.example`), no user information, and either `https`, or `http` to a
/// loopback address (`127.0.0.0/8`, `::1`, `localhost`).
#[must_use]
pub fn acceptable_jwks_url(u: &str) -> bool {
    let Ok(url) = url::Url::parse(u) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => is_loopback(&url),
        _ => false,
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether a push destination may be used: an [acceptable
/// URL](acceptable_jwks_url), and, when the operator configured
/// `push_destinations`, one whose `host:port` is listed there.
#[must_use]
pub fn acceptable_push_url(u: &str, allowed: &[String]) -> bool {
    if !acceptable_jwks_url(u) {
        return false;
    }
    if allowed.is_empty() {
        return true;
    }
    let Ok(url) = url::Url::parse(u) else {
        return false;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let here = format!("{host}:{port}");
    allowed.iter().any(|a| a.eq_ignore_ascii_case(&here))
}

impl ConsoleOidc {
    /// Fills the endpoints not configured from the issuer's discovery
    /// document (`<issuer>/.well-known/openid-configuration`, OpenID
    /// Connect Discovery 1.0): its `issuer` must be this issuer exactly, and
    /// each endpoint https (or http on loopback).
    ///
    /// # Errors
    /// The document cannot be fetched or read, or names another issuer.
    pub fn discover(&mut self) -> Result<(), String> {
        if !self.authorization_endpoint.is_empty() && !self.token_endpoint.is_empty() {
            return Ok(());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let bytes = fetch(&url)?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("`{url}`: {e}"))?;
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            return Err(format!("`{url}`: its issuer is not `{}`", self.issuer));
        }
        for (name, field) in [
            ("authorization_endpoint", &mut self.authorization_endpoint),
            ("token_endpoint", &mut self.token_endpoint),
        ] {
            if field.is_empty() {
                let v = doc
                    .get(name)
                    .and_then(|v| v.as_str())
                    .filter(|u| acceptable_jwks_url(u))
                    .ok_or_else(|| format!("`{url}`: no acceptable {name}"))?;
                *field = v.to_owned();
            }
        }
        Ok(())
    }
}

fn fetch(url: &str) -> Result<Vec<u8>, String> {
    if !acceptable_jwks_url(url) {
        return Err(format!("`{url}` must be https (or http on loopback)"));
    }
    let agent = crate::tls::agent(std::time::Duration::from_secs(10));
    let mut resp = agent.get(url).call().map_err(|e| format!("`{url}`: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("`{url}`: HTTP {}", resp.status().as_u16()));
    }
    resp.body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .map_err(|e| format!("`{url}`: {e}"))
}

/// A webhook source (e.g. a GitHub App) and its HMAC secret.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSource {
    /// The name in the URL: `/v1/webhooks/github/{name}`.
    pub name: String,
    /// The tenant its events belong to.
    pub tenant: String,
    /// A file holding the shared secret.
    pub secret_file: PathBuf,
}

/// The facts one event source may change.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventSourceFacts {
    /// The caller's `sub`.
    pub sub: String,
    /// Its tenant.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Dotted paths of the facts it may set or delete, with everything below
    /// them (`crm.opportunities` allows `crm.opportunities.acme.stage`).
    pub facts: Vec<String>,
}

impl EventSourceFacts {
    /// Whether a change at `path` (member names from the root) is allowed.
    #[must_use]
    pub fn allows(&self, path: &[&str]) -> bool {
        self.facts.iter().any(|p| {
            let prefix: Vec<&str> = p.split('.').collect();
            path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
        })
    }
}

/// A PostgreSQL connection URL. Its password (if any) never shows in `Debug`
/// or `Display`: [`DatabaseUrl::redacted`] is what logs print.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks the scheme and parses it.
    ///
    /// # Errors
    /// When it is not a `postgres://` (or `postgresql://`) URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let u = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "`{}://…`: only postgres:// databases are supported (the default, with no database set, is the embedded SQLite file)",
                u.scheme()
            ));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err("the URL names no host".into());
        }
        Ok(Self(text.to_owned()))
    }

    /// The URL to connect with (secret included: never log it).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    #[must_use]
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "(unparseable database URL)".into(),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The service's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The data directory (database, keys, checkpoint).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://USER@HOST:PORT/DB`) instead of the
    /// embedded SQLite file: several replicas share it. Keys and this
    /// replica's audit checkpoint stay in `data_dir`.
    #[serde(default)]
    pub database: Option<DatabaseUrl>,
    /// The `iss` of issued mandates (the public URL of this service).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Identity providers trusted besides the local one.
    #[serde(default)]
    pub trusted_issuer: Vec<TrustedIssuer>,
    /// Whether the local issuer (`mandate token`) is trusted.
    #[serde(default = "yes")]
    pub local_issuer: bool,
    /// Webhook sources.
    #[serde(default)]
    pub webhook: Vec<WebhookSource>,
    /// Where push streams may deliver, as `host:port` (`gw1.internal:443`,
    /// `127.0.0.1:8081`). Empty: any https destination, and http on
    /// loopback only.
    #[serde(default)]
    pub push_destinations: Vec<String>,
    /// Event sources (callers with the `event_source` role) and the facts
    /// each may change through `POST /v1/events`. An event source without an
    /// entry here changes no facts.
    #[serde(default)]
    pub event_source: Vec<EventSourceFacts>,
    /// Largest request body, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// Largest batch of decisions an enforcement point ships at once
    /// (`POST /v1/audit/decisions`), in bytes.
    #[serde(default = "default_shipment_limit")]
    pub shipment_limit: usize,
    /// Seconds a client has to send a request's headers.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a whole request may take (reading its body included); longer
    /// is answered 408. Above the longest poll wait (10 s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Most connections served at once; more are closed when accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds in-flight requests get to finish on shutdown.
    #[serde(default = "default_shutdown_deadline")]
    pub shutdown_deadline_secs: u64,
    /// How often the audit log's signed checkpoint goes out on every
    /// tenant's signal stream when it changed, in seconds (0: never). Every
    /// receiver then holds a recent checkpoint to check the log against.
    #[serde(default = "default_checkpoint_signal")]
    pub checkpoint_signal_secs: u64,
    /// Most console sessions at once (oldest dropped first), and most
    /// sign-ins started per minute.
    #[serde(default = "default_max_sessions")]
    pub max_console_sessions: usize,
    /// How many DPoP proofs this replica remembers so each is accepted once
    /// (each for 60 s after its `iat`); full of proofs that could still be
    /// accepted, it refuses new ones (`pop_replay_cache_full`). Default
    /// 1,000,000 (~40 MB full, a sustained ~16k proofs/s).
    #[serde(default = "default_replay_capacity")]
    pub replay_capacity: usize,
    /// Whether the configured local console identities may sign in when the
    /// authority listens on a non-loopback address (they need no credential:
    /// off by default).
    #[serde(default)]
    pub console_identity_on_any_address: bool,
    /// How often JWKS URLs are fetched again, in seconds.
    #[serde(default = "default_refresh")]
    pub jwks_refresh_secs: u64,
    /// Identities of the local issuer a principal or admin may pick on the
    /// console's sign-in page (the embedded default; an operator's choice).
    #[serde(default)]
    pub console_identity: Vec<ConsoleIdentity>,
    /// OpenID Connect sign-in to the console (authorization code with PKCE).
    #[serde(default)]
    pub console_oidc: Option<ConsoleOidc>,
    /// Whether a decision requires a DPoP proof by the leaf's holder key
    /// (`required`, the default) or accepts the mandate alone (`bearer`,
    /// for development only: logged loudly at start).
    #[serde(default)]
    pub proof_of_possession: mandate_core::pop::Mode,
    /// Whether the token endpoint requires a nonce it issued in every DPoP
    /// proof (RFC 9449 §8: answered `use_dpop_nonce` with `DPoP-Nonce`).
    #[serde(default)]
    pub dpop_nonce: bool,
    /// The TLS certificate chain (PEM); with `tls_key_file`, the authority
    /// serves HTTPS (and its default issuer is `https://`). Read again when
    /// it changes.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Serve plain HTTP on an address that is not loopback (behind a proxy
    /// that terminates TLS). Off by default: plain HTTP is for loopback.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// A CA (PEM) trusted for the authority's outbound calls (pushed SETs,
    /// identity providers) besides the public roots: receivers and
    /// providers on a private PKI.
    #[serde(default)]
    pub outbound_ca_file: Option<PathBuf>,
}

/// A local identity offered on the console's sign-in page.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleIdentity {
    /// Subject.
    pub sub: String,
    /// `principal` or `admin`.
    pub role: String,
    /// Tenant.
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

fn default_tenant() -> String {
    "default".into()
}

/// The enterprise IdP for console sign-in. Its keys come from the
/// `trusted_issuer` entry with the same `issuer`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleOidc {
    /// The IdP's issuer (also a `trusted_issuer`).
    pub issuer: String,
    /// Its authorization endpoint.
    #[serde(default)]
    pub authorization_endpoint: String,
    /// Its token endpoint.
    #[serde(default)]
    pub token_endpoint: String,
    /// This console's client id.
    pub client_id: String,
    /// A file holding the client secret (confidential clients).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Where the IdP sends the browser back: `<console>/console/oidc/callback`.
    pub redirect_uri: String,
    /// The ID token claim holding the role (`principal` or `admin`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The ID token claim holding the tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
}

fn default_role_claim() -> String {
    "role".into()
}
fn default_tenant_claim() -> String {
    "tenant".into()
}

fn default_header_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_shutdown_deadline() -> u64 {
    10
}
fn default_checkpoint_signal() -> u64 {
    60
}
fn default_replay_capacity() -> usize {
    mandate_core::pop::DEFAULT_REPLAY_CAPACITY
}

fn default_max_sessions() -> usize {
    10_000
}

fn default_refresh() -> u64 {
    300
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("mandate-data")
}
fn yes() -> bool {
    true
}
fn default_body_limit() -> usize {
    256 * 1024
}
fn default_shipment_limit() -> usize {
    8 << 20
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            issuer: None,
            trusted_issuer: Vec::new(),
            local_issuer: true,
            webhook: Vec::new(),
            push_destinations: Vec::new(),
            event_source: Vec::new(),
            body_limit: default_body_limit(),
            shipment_limit: default_shipment_limit(),
            jwks_refresh_secs: default_refresh(),
            header_read_timeout_secs: default_header_timeout(),
            request_timeout_secs: default_request_timeout(),
            max_connections: default_max_connections(),
            shutdown_deadline_secs: default_shutdown_deadline(),
            max_console_sessions: default_max_sessions(),
            replay_capacity: default_replay_capacity(),
            checkpoint_signal_secs: default_checkpoint_signal(),
            console_identity_on_any_address: false,
            console_identity: Vec::new(),
            console_oidc: None,
            proof_of_possession: mandate_core::pop::Mode::Required,
            dpop_nonce: false,
            tls_cert_file: None,
            tls_key_file: None,
            allow_plain_http: false,
            outbound_ca_file: None,
            database: None,
        }
    }
}

/// A setting that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The setting, as in the file (`listen`, `webhook[0].secret_file`).
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

fn err(setting: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// When the file cannot be read or a setting is unknown or mistyped.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("config", format!("{}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| err("config", format!("{}: {}", path.display(), e.message())))
    }

    /// The listen address.
    ///
    /// # Errors
    /// When `listen` is not `HOST:PORT`.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            err(
                "listen",
                format!("`{}` is not an address such as 127.0.0.1:8080", self.listen),
            )
        })
    }

    /// The `iss` of issued mandates.
    #[must_use]
    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// Checks every setting that can be checked before binding.
    ///
    /// # Errors
    /// The first wrong setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !(10..=86_400).contains(&self.jwks_refresh_secs) {
            return Err(err("jwks_refresh_secs", "must be between 10 and 86400"));
        }
        if self.body_limit < 1024 || self.body_limit > 16 << 20 {
            return Err(err("body_limit", "must be between 1024 and 16777216 bytes"));
        }
        if self.shipment_limit < 64 << 10 || self.shipment_limit > 64 << 20 {
            return Err(err(
                "shipment_limit",
                "must be between 65536 and 67108864 bytes",
            ));
        }
        if !(1..=600).contains(&self.header_read_timeout_secs) {
            return Err(err("header_read_timeout_secs", "must be between 1 and 600"));
        }
        if !(11..=3600).contains(&self.request_timeout_secs) {
            return Err(err(
                "request_timeout_secs",
                "must be between 11 and 3600 (above the 10 s poll wait)",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(err("max_connections", "must be between 1 and 1000000"));
        }
        if self.shutdown_deadline_secs > 3600 {
            return Err(err("shutdown_deadline_secs", "must be at most 3600"));
        }
        use mandate_core::pop::MAX_REPLAY_CAPACITY;
        if !(1..=MAX_REPLAY_CAPACITY).contains(&self.replay_capacity) {
            return Err(err(
                "replay_capacity",
                format!("must be between 1 and {MAX_REPLAY_CAPACITY}"),
            ));
        }
        if !(1..=10_000_000).contains(&self.max_console_sessions) {
            return Err(err(
                "max_console_sessions",
                "must be between 1 and 10000000",
            ));
        }
        if !self.console_identity.is_empty()
            && !self.console_identity_on_any_address
            && !self.listen_addr()?.ip().is_loopback()
        {
            return Err(err(
                "console_identity",
                "local console identities sign in with no credential: listen on a loopback address, or set console_identity_on_any_address = true",
            ));
        }
        if !self.local_issuer && self.trusted_issuer.is_empty() {
            return Err(err(
                "trusted_issuer",
                "no issuer is trusted: enable local_issuer or add a trusted_issuer",
            ));
        }
        for (i, t) in self.trusted_issuer.iter().enumerate() {
            if t.iss.trim().is_empty() || t.iss == LOCAL_ISSUER {
                return Err(err(
                    format!("trusted_issuer[{i}].iss"),
                    "must be a non-empty issuer other than the local one",
                ));
            }
            match (&t.jwks_file, &t.jwks_url) {
                (Some(f), None) if !f.is_file() => {
                    return Err(err(
                        format!("trusted_issuer[{i}].jwks_file"),
                        format!("`{}` is not a readable file", f.display()),
                    ));
                }
                (None, Some(u)) if !acceptable_jwks_url(u) => {
                    return Err(err(
                        format!("trusted_issuer[{i}].jwks_url"),
                        format!("`{u}` must be https (or http on loopback)"),
                    ));
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(err(
                        format!("trusted_issuer[{i}]"),
                        "give exactly one of jwks_file and jwks_url",
                    ));
                }
            }
        }
        for (i, c) in self.console_identity.iter().enumerate() {
            if !matches!(c.role.as_str(), "principal" | "admin") || c.sub.trim().is_empty() {
                return Err(err(
                    format!("console_identity[{i}]"),
                    "needs a sub and the role principal or admin",
                ));
            }
        }
        if let Some(o) = &self.console_oidc {
            if !self.trusted_issuer.iter().any(|t| t.iss == o.issuer) {
                return Err(err(
                    "console_oidc.issuer",
                    "must also be a trusted_issuer (its keys verify the ID tokens)",
                ));
            }
            for (name, url) in [
                ("authorization_endpoint", &o.authorization_endpoint),
                ("token_endpoint", &o.token_endpoint),
                ("redirect_uri", &o.redirect_uri),
            ] {
                // Empty: read from the issuer's discovery document at start.
                if url.is_empty() && name != "redirect_uri" {
                    continue;
                }
                if !acceptable_jwks_url(url) {
                    return Err(err(
                        format!("console_oidc.{name}"),
                        "must be https (or http on loopback)",
                    ));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.webhook.iter().enumerate() {
            if w.name.is_empty()
                || !w
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    format!("webhook[{i}].name"),
                    "must be letters, digits, `-` or `_`",
                ));
            }
            if !names.insert(&w.name) {
                return Err(err(
                    format!("webhook[{i}].name"),
                    format!("`{}` is used twice", w.name),
                ));
            }
            let secret = std::fs::read_to_string(&w.secret_file).map_err(|e| {
                err(
                    format!("webhook[{i}].secret_file"),
                    format!("`{}`: {e}", w.secret_file.display()),
                )
            })?;
            if secret.trim().len() < 16 {
                return Err(err(
                    format!("webhook[{i}].secret_file"),
                    "the secret must be at least 16 characters",
                ));
            }
        }
        if let Some(d) = &self.database {
            DatabaseUrl::parse(d.expose()).map_err(|m| err("database", m))?;
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), Some(_)) => {}
            (None, None) => {
                crate::tls::check_plain(&self.listen_addr()?, self.allow_plain_http)
                    .map_err(|m| err("listen", m))?;
            }
            (Some(_), None) => return Err(err("tls_key_file", "missing (tls_cert_file is set)")),
            (None, Some(_)) => return Err(err("tls_cert_file", "missing (tls_key_file is set)")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_never_shows_and_only_postgres_is_accepted() {
        let d =
            DatabaseUrl::parse("postgres://mandate:s3cret-pw@db.internal:5432/mandate").unwrap();
        assert_eq!(
            d.redacted(),
            "postgres://mandate:***@db.internal:5432/mandate"
        );
        assert!(!format!("{d:?} {d}").contains("s3cret"));
        let c = Config {
            database: Some(d),
            ..Config::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(
            DatabaseUrl::parse("mysql://x@h/db")
                .unwrap_err()
                .contains("only postgres://")
        );
        assert!(
            DatabaseUrl::parse("sqlite.db")
                .unwrap_err()
                .contains("not a URL")
        );
    }

    #[test]
    fn a_bad_setting_is_named() {
        let c = Config {
            listen: "localhost".into(),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().setting, "listen");
        let c: Result<Config, _> = toml::from_str("listen = \"127.0.0.1:1\"\nbody_limt = 5");
        assert!(c.unwrap_err().to_string().contains("body_limt"));
    }

    #[test]
    fn the_replay_cache_capacity_has_a_default_and_bounds() {
        let c: Config = toml::from_str("listen = \"127.0.0.1:1\"").unwrap();
        assert_eq!(
            c.replay_capacity,
            mandate_core::pop::DEFAULT_REPLAY_CAPACITY
        );
        assert_eq!(c.validate(), Ok(()));
        for n in [0, 100_000_001] {
            let c = Config {
                replay_capacity: n,
                ..Config::default()
            };
            assert_eq!(c.validate().unwrap_err().setting, "replay_capacity", "{n}");
        }
    }
}
