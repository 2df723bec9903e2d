//! The MCP enforcement point: a proxy between MCP clients and MCP servers
//! that decides every `tools/call` locally, from the same signal-fed replica
//! as the gateway ([`Point`]), before the server sees it.
//!
//! Each `[[tool]]` maps a tool name (of one upstream server, or of any) to
//! the authorization-detail `type` and `action`, a location, and resource
//! attributes taken from the call's arguments by templates (`"{vendor_id}"`,
//! `"{limit:int}"`, `"{amount:decimal}"`, `"{owner}/{repo}"`). Names are
//! compared exactly: `Delete_Vendor` or `delete_vеndor` (Cyrillic `е`) is not
//! `delete_vendor`, is mapped to nothing, and is denied `no_route`. The
//! mandate comes from the `Mandate` header (Streamable HTTP), the request's
//! `_meta` (`io.mandate/mandate`), or the stdio session's configuration; the
//! holder's proof from the `DPoP` header or `_meta` (`io.mandate/dpop`).
//! `tools/list` answers only the tools the mandate permits now. Other
//! methods are forwarded only when they are part of the protocol's life
//! cycle (`initialize`, `ping`, notifications, responses) or listed in
//! `forward`; everything else is answered `-32601` and never forwarded.
//!
//! The transports are in [`http`] (Streamable HTTP) and [`stdio`].

pub mod http;
pub mod message;
pub mod stdio;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mandate_core::decision::Decision;
use mandate_core::pop::{Mode, Possession};
use mandate_core::request::EvaluationRequest;
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};

use crate::point::{Delivery, Point, PointConfig, denied, now_unix};
use message::{MANDATE_DENIED, RpcError, ToolCall, keys};

/// One upstream MCP server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Its name (what `[[tool]] server` refers to).
    pub name: String,
    /// Its Streamable HTTP endpoint (`http://127.0.0.1:9000/mcp`); absent
    /// for the stdio server given after `--`.
    #[serde(default)]
    pub url: Option<String>,
    /// Where clients reach it on this proxy (default `/mcp` for the first
    /// server, `/mcp/NAME` for the others).
    #[serde(default)]
    pub path: Option<String>,
    /// The base of the locations its tools are judged at
    /// (`https://vendor-portal.example.com`); a tool's location is this plus
    /// `/tools/NAME` unless the tool names its own.
    pub location_base: String,
}

/// One tool's mapping to the mandate's terms.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The tool's name, compared exactly.
    pub name: String,
    /// The server it belongs to (default: any).
    #[serde(default)]
    pub server: Option<String>,
    /// Authorization-detail type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Action name.
    pub action: String,
    /// The location the call is judged at (default: the server's
    /// `location_base` + `/tools/NAME`).
    #[serde(default)]
    pub location: Option<String>,
    /// Resource attributes from the arguments: `{name}` (text),
    /// `{name:int}`, `{name:decimal}`; `{a.b}` reaches into an object.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
}

/// A stdio session's mandate, configured once.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// A file holding the mandate (compact JWS or `~`-joined chain).
    pub mandate_file: PathBuf,
    /// The holder's private key (a JWK file, as `mandate keygen` writes):
    /// when given, this proxy is the holder and needs no proof per call. It
    /// must be the key the leaf binds (checked at start).
    #[serde(default)]
    pub holder_key_file: Option<PathBuf>,
    /// The agent instance that acts (must be the leaf's).
    pub agent_instance: String,
    /// A file holding the access token the leaf binds, when it binds one.
    #[serde(default)]
    pub access_token_file: Option<PathBuf>,
}

/// `mcp.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Where to listen for Streamable HTTP clients (and pushed SETs).
    /// Optional with stdio.
    #[serde(default)]
    pub listen: Option<String>,
    /// The authority's base URL, or several (replicas of one authority, as
    /// a list or comma-separated): the first that answers is used.
    #[serde(deserialize_with = "crate::point::authority_urls")]
    pub authority: String,
    /// A file holding an enforcer token for the authority (read again
    /// when it changes). Or `[client_credentials]`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The enforcer token from the organisation's identity provider by the
    /// client-credentials grant, renewed before it expires.
    #[serde(default)]
    pub client_credentials: Option<crate::client::ClientCredentials>,
    /// Deny `state_stale` after this long without news from the authority.
    #[serde(default = "default_staleness")]
    pub staleness_ms: u64,
    /// Poll or push (push needs `listen`).
    #[serde(default)]
    pub delivery: Delivery,
    /// The URL the authority pushes to (default `http://LISTEN/_mandate/ssf`).
    #[serde(default)]
    pub push_url: Option<String>,
    /// Where decisions wait while the authority is unreachable.
    #[serde(default)]
    pub spool_file: Option<PathBuf>,
    /// `required` (default): every call carries the holder's DPoP proof;
    /// `bearer`: development only.
    #[serde(default)]
    pub proof_of_possession: Mode,
    /// The origin clients call this proxy at (a proof's `htu` is this plus
    /// the server's path). Default `http://LISTEN` (`http://localhost` with
    /// stdio and no `listen`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// The largest message accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Which agent instance acts, on Streamable HTTP.
    #[serde(default = "default_instance_header")]
    pub agent_instance_header: String,
    /// Which agent acts, on Streamable HTTP (optional; the leaf's when sent).
    #[serde(default = "default_agent_header")]
    pub agent_header: String,
    /// Methods forwarded without a decision beyond the life cycle's
    /// (`resources/list`, `prompts/get`, …). Default none.
    #[serde(default)]
    pub forward: Vec<String>,
    /// How often calls in flight are checked against the replica: a call
    /// whose mandate ended is cancelled (milliseconds, default 50).
    #[serde(default = "default_watch")]
    pub watch_ms: u64,
    /// The stdio session's mandate.
    #[serde(default)]
    pub session: Option<SessionConfig>,
    /// The TLS certificate chain (PEM) to serve HTTPS with (read again when
    /// it changes); with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Whether MCP clients are asked for a TLS client certificate: `off`
    /// (the default), `self_signed` or `pki`, as the gateway's setting of
    /// that name: a certificate-bound mandate is then allowed on a
    /// connection whose certificate it names. Needs `tls_cert_file`.
    #[serde(default)]
    pub client_certificates: crate::gateway::ClientCertificates,
    /// The CA (PEM) clients' certificates must chain to, with
    /// `client_certificates = "pki"`.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (behind a proxy that
    /// terminates TLS). Off by default.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// A CA (PEM) trusted for `https://` servers besides the system's roots.
    #[serde(default)]
    pub upstream_ca_file: Option<PathBuf>,
    /// The CA (PEM) the authority's certificate is checked against besides
    /// the public roots.
    #[serde(default)]
    pub authority_ca_file: Option<PathBuf>,
    /// Upstream servers.
    #[serde(default)]
    pub server: Vec<ServerConfig>,
    /// Tool mappings.
    #[serde(default)]
    pub tool: Vec<ToolConfig>,
}

fn default_staleness() -> u64 {
    3000
}
fn default_max_message() -> usize {
    1 << 20
}
fn default_instance_header() -> String {
    "mandate-agent-instance".into()
}
fn default_agent_header() -> String {
    "mandate-agent".into()
}
fn default_watch() -> u64 {
    50
}

/// A setting that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct McpConfigError {
    /// The setting.
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

fn cerr(setting: impl Into<String>, message: impl Into<String>) -> McpConfigError {
    McpConfigError {
        setting: setting.into(),
        message: message.into(),
    }
}

/// The methods of the protocol's life cycle, always forwarded.
const LIFECYCLE: [&str; 5] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "completion/complete",
    "tools/list",
];

impl McpConfig {
    /// Reads and validates a TOML file; `stdio` says whether a server
    /// command follows `--`.
    ///
    /// # Errors
    /// The first wrong setting.
    pub fn from_file(path: &Path, stdio: bool) -> Result<Self, McpConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| cerr("config", format!("{}: {e}", path.display())))?;
        let c: Self = toml::from_str(&text)
            .map_err(|e| cerr("config", format!("{}: {}", path.display(), e.message())))?;
        c.validate(stdio)?;
        Ok(c)
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// The first wrong setting.
    pub fn validate(&self, stdio: bool) -> Result<(), McpConfigError> {
        if let Some(l) = &self.listen {
            let addr = l
                .parse::<std::net::SocketAddr>()
                .map_err(|_| cerr("listen", format!("`{l}` is not HOST:PORT")))?;
            crate::point::check_listener(
                &addr,
                self.tls_cert_file.as_deref(),
                self.tls_key_file.as_deref(),
                self.allow_plain_http,
            )
            .map_err(|(setting, m)| cerr(setting, m))?;
        } else if !stdio {
            return Err(cerr(
                "listen",
                "missing (Streamable HTTP needs an address; or give a server command after --)",
            ));
        }
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
        if self.delivery == Delivery::Push && self.listen.is_none() {
            return Err(cerr("delivery", "push needs `listen` (where SETs arrive)"));
        }
        if !(100..=3_600_000).contains(&self.staleness_ms) {
            return Err(cerr("staleness_ms", "must be between 100 and 3600000"));
        }
        if !(1024..=64 << 20).contains(&self.max_message_bytes) {
            return Err(cerr(
                "max_message_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if !(5..=10_000).contains(&self.watch_ms) {
            return Err(cerr("watch_ms", "must be between 5 and 10000"));
        }
        if let Some(u) = &self.public_url {
            let normal = mandate_core::pop::normalize_htu(u).map_err(|e| cerr("public_url", e))?;
            if normal.trim_end_matches('/').matches('/').count() > 2 {
                return Err(cerr(
                    "public_url",
                    "must be an origin (scheme://host[:port]) with no path",
                ));
            }
        }
        if self.server.is_empty() {
            return Err(cerr("server", "at least one [[server]] is needed"));
        }
        if stdio && self.server.len() != 1 {
            return Err(cerr(
                "server",
                "with a server command after --, exactly one [[server]] describes it",
            ));
        }
        let mut paths = Vec::new();
        for (i, s) in self.server.iter().enumerate() {
            if s.name.is_empty() || self.server.iter().filter(|o| o.name == s.name).count() > 1 {
                return Err(cerr(format!("server[{i}].name"), "empty or not unique"));
            }
            match (&s.url, stdio) {
                (Some(u), false) if u.starts_with("http://") || u.starts_with("https://") => {}
                (Some(_), false) => {
                    return Err(cerr(
                        format!("server[{i}].url"),
                        "must be an http:// or https:// URL",
                    ));
                }
                (None, false) => {
                    return Err(cerr(
                        format!("server[{i}].url"),
                        "missing (or give the server's command after --)",
                    ));
                }
                (Some(_), true) => {
                    return Err(cerr(
                        format!("server[{i}].url"),
                        "not with a server command after -- (that command is the server)",
                    ));
                }
                (None, true) => {}
            }
            let path = server_path(i, s);
            if !path.starts_with('/') || path.starts_with("/_mandate") || paths.contains(&path) {
                return Err(cerr(
                    format!("server[{i}].path"),
                    "must start with `/`, be unique, and not be under /_mandate",
                ));
            }
            paths.push(path);
            mandate_core::location::Location::parse_grant(&s.location_base)
                .map_err(|e| cerr(format!("server[{i}].location_base"), e.to_string()))?;
        }
        for (i, t) in self.tool.iter().enumerate() {
            if !valid_tool_name(&t.name) {
                return Err(cerr(
                    format!("tool[{i}].name"),
                    "1 to 128 characters of A-Z a-z 0-9 _ - . /",
                ));
            }
            if let Some(s) = &t.server
                && !self.server.iter().any(|x| &x.name == s)
            {
                return Err(cerr(
                    format!("tool[{i}].server"),
                    format!("no [[server]] `{s}`"),
                ));
            }
            if t.type_.is_empty() || t.action.is_empty() {
                return Err(cerr(
                    format!("tool[{i}]"),
                    "`type` and `action` are required",
                ));
            }
            if let Some(l) = &t.location {
                mandate_core::location::Location::parse_grant(l)
                    .map_err(|e| cerr(format!("tool[{i}].location"), e.to_string()))?;
            }
            for (k, v) in &t.resource {
                ArgTemplate::compile(v).map_err(|e| cerr(format!("tool[{i}].resource.{k}"), e))?;
            }
        }
        if let Some(s) = &self.session
            && s.agent_instance.is_empty()
        {
            return Err(cerr("session.agent_instance", "empty"));
        }
        Ok(())
    }
}

fn server_path(i: usize, s: &ServerConfig) -> String {
    s.path.clone().unwrap_or_else(|| {
        if i == 0 {
            "/mcp".into()
        } else {
            format!("/mcp/{}", s.name)
        }
    })
}

/// Tool names as MCP recommends them: 1 to 128 of `A-Za-z0-9_-./`.
#[must_use]
pub fn valid_tool_name(n: &str) -> bool {
    (1..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

/// How an argument becomes an attribute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgType {
    Text,
    Int,
    Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ArgPiece {
    Text(String),
    Arg(Vec<String>),
}

/// A resource attribute's template over the call's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgTemplate {
    pieces: Vec<ArgPiece>,
    kind: ArgType,
}

/// Why arguments did not fit a template: the reason code and the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// `argument_missing` or `argument_invalid`.
    pub code: &'static str,
    /// Which argument and what is wrong.
    pub detail: String,
}

impl ArgTemplate {
    /// Compiles `"{name}"`, `"{name:int}"`, `"{name:decimal}"`, `"{a.b}"`,
    /// or text with `{name}` pieces (always text).
    ///
    /// # Errors
    /// An unclosed `{`, an empty name, an unknown type, or a typed piece
    /// that is not the whole template.
    pub fn compile(t: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut kind = ArgType::Text;
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(ArgPiece::Text(rest.get(..open).unwrap_or_default().into()));
            }
            let after = rest.get(open + 1..).unwrap_or_default();
            let close = after.find('}').ok_or("`{` without `}`")?;
            let inner = after.get(..close).unwrap_or_default();
            let (name, ty) = match inner.split_once(':') {
                None => (inner, ArgType::Text),
                Some((n, "int")) => (n, ArgType::Int),
                Some((n, "decimal")) => (n, ArgType::Decimal),
                Some((n, "string")) => (n, ArgType::Text),
                Some((_, other)) => {
                    return Err(format!("`{other}` is not a type (string, int, decimal)"));
                }
            };
            if name.is_empty() || name.split('.').any(str::is_empty) {
                return Err(format!("`{{{inner}}}`: an empty argument name"));
            }
            if ty != ArgType::Text {
                kind = ty;
            }
            pieces.push(ArgPiece::Arg(name.split('.').map(str::to_owned).collect()));
            rest = after.get(close + 1..).unwrap_or_default();
        }
        if !rest.is_empty() {
            pieces.push(ArgPiece::Text(rest.into()));
        }
        if kind != ArgType::Text && pieces.len() != 1 {
            return Err("a typed argument (`:int`, `:decimal`) must be the whole template".into());
        }
        Ok(Self { pieces, kind })
    }

    /// The attribute's value for these arguments.
    ///
    /// # Errors
    /// An argument that is missing or of the wrong type.
    pub fn render(&self, args: Option<&Map<String, Value>>) -> Result<Value, ArgError> {
        let lookup = |path: &[String]| -> Result<&Value, ArgError> {
            let name = path.join(".");
            let mut v: Option<&Value> = None;
            for (i, seg) in path.iter().enumerate() {
                v = if i == 0 {
                    args.and_then(|a| a.get(seg))
                } else {
                    v.and_then(|x| x.get(seg))
                };
            }
            v.filter(|x| !x.is_null()).ok_or_else(|| ArgError {
                code: "argument_missing",
                detail: format!("arguments.{name}: missing"),
            })
        };
        let invalid = |path: &[String], what: &str| ArgError {
            code: "argument_invalid",
            detail: format!("arguments.{}: {what}", path.join(".")),
        };
        if let [ArgPiece::Arg(path)] = self.pieces.as_slice() {
            let v = lookup(path)?;
            return match self.kind {
                ArgType::Int => match v {
                    Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
                    Value::String(s) => s
                        .parse::<i64>()
                        .map(Value::from)
                        .map_err(|_| invalid(path, "not an integer")),
                    _ => Err(invalid(path, "not an integer")),
                },
                ArgType::Decimal => match v {
                    Value::Number(_) => Ok(v.clone()),
                    Value::String(s) => decimal(s).ok_or_else(|| invalid(path, "not a decimal")),
                    _ => Err(invalid(path, "not a decimal")),
                },
                ArgType::Text => match v {
                    Value::String(_) => Ok(v.clone()),
                    Value::Number(n) => Ok(Value::String(n.to_string())),
                    Value::Bool(b) => Ok(Value::String(b.to_string())),
                    _ => Err(invalid(path, "not a string, number or boolean")),
                },
            };
        }
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                ArgPiece::Text(t) => out.push_str(t),
                ArgPiece::Arg(path) => match lookup(path)? {
                    Value::String(s) => out.push_str(s),
                    Value::Number(n) => out.push_str(&n.to_string()),
                    _ => return Err(invalid(path, "not a string or number")),
                },
            }
        }
        Ok(Value::String(out))
    }
}

/// A decimal written as text (`"1250.50"`), read exactly as a JSON number.
fn decimal(s: &str) -> Option<Value> {
    let plain = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = plain.split_once('.').unwrap_or((plain, ""));
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    mandate_core::number::check_exact_numbers(s.as_bytes()).ok()?;
    serde_json::from_str::<Number>(s).ok().map(Value::Number)
}

/// A compiled `[[tool]]`.
#[derive(Debug)]
struct Tool {
    config: ToolConfig,
    location: String,
    resource: Vec<(String, ArgTemplate)>,
}

/// An upstream server, as this proxy serves it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its configuration.
    pub config: ServerConfig,
    /// Where clients reach it here.
    pub path: String,
}

/// What a message presents, gathered from the transport and `_meta`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The mandate.
    pub mandate: Option<&'a str>,
    /// The holder's DPoP proof (`Some("")` for one that cannot be a proof).
    pub proof: Option<&'a str>,
    /// The acting agent instance.
    pub agent_instance: Option<&'a str>,
    /// The acting agent.
    pub agent: Option<&'a str>,
    /// The access token the leaf may bind.
    pub access_token: Option<&'a str>,
    /// The `x5t#S256` of the client certificate the message's TLS
    /// connection presented (what a certificate-bound leaf needs).
    pub certificate: Option<&'a str>,
    /// This proxy holds the leaf's key itself (a configured stdio session).
    pub held: bool,
}

impl<'a> Presented<'a> {
    /// Overrides what the transport presented with the request's `_meta`.
    #[must_use]
    pub fn with_meta(mut self, meta: Option<&'a Map<String, Value>>) -> Self {
        let Some(meta) = meta else {
            return self;
        };
        let get = |k: &str| meta.get(k).and_then(Value::as_str);
        if let Some(m) = get(keys::MANDATE) {
            // A mandate sent with the message is proved with the message.
            self.mandate = Some(m);
            self.held = false;
        }
        if let Some(p) = get(keys::DPOP) {
            self.proof = Some(p);
        }
        if let Some(i) = get(keys::AGENT_INSTANCE) {
            self.agent_instance = Some(i);
        }
        if let Some(a) = get(keys::AGENT) {
            self.agent = Some(a);
        }
        if let Some(t) = get(keys::ACCESS_TOKEN) {
            self.access_token = Some(t);
        }
        self
    }
}

/// The proxy: the enforcement point, the upstreams and the tool mappings.
pub struct Proxy {
    /// The enforcement point (replica, feed, proofs, audit shipping).
    pub point: Arc<Point>,
    /// The configuration.
    pub config: McpConfig,
    tools: Vec<Tool>,
    /// The upstream servers.
    pub upstreams: Vec<Upstream>,
    /// The origin clients call this proxy at.
    pub origin: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listen", &self.config.listen)
            .field("servers", &self.upstreams.len())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Connects to the authority and starts the replica's feed. Blocking.
    ///
    /// # Errors
    /// When the token cannot be read or the authority cannot be reached.
    pub fn start(config: McpConfig) -> Result<Arc<Self>, String> {
        let scheme = crate::gateway::scheme(config.tls_cert_file.as_deref());
        let push_url = match config.delivery {
            Delivery::Push => Some(config.push_url.clone().unwrap_or_else(|| {
                format!(
                    "{scheme}://{}/_mandate/ssf",
                    config.listen.as_deref().unwrap_or_default()
                )
            })),
            Delivery::Poll => None,
        };
        let spool = config.spool_file.clone().unwrap_or_else(|| {
            config
                .token_file
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or_else(|| Path::new("."))
                .join("mcp-decisions.spool")
        });
        let name = format!("mcp:{}", config.listen.as_deref().unwrap_or("stdio"));
        let point = Point::start(PointConfig {
            name,
            authority: config.authority.clone(),
            token_file: config.token_file.clone(),
            client_credentials: config.client_credentials.clone(),
            staleness: Duration::from_millis(config.staleness_ms),
            push_url,
            spool,
            proof_of_possession: config.proof_of_possession,
            dpop_nonce: false,
            authority_ca_file: config.authority_ca_file.clone(),
            key_refresh: crate::point::KEY_REFRESH,
            replay_capacity: mandate_core::pop::DEFAULT_REPLAY_CAPACITY,
        })?;
        Ok(Arc::new(Self::with_point(point, config)))
    }

    /// The proxy over a running enforcement point.
    #[must_use]
    pub fn with_point(point: Arc<Point>, config: McpConfig) -> Self {
        let upstreams: Vec<Upstream> = config
            .server
            .iter()
            .enumerate()
            .map(|(i, s)| Upstream {
                config: s.clone(),
                path: server_path(i, s),
            })
            .collect();
        let tools = config
            .tool
            .iter()
            .map(|t| {
                let base = t
                    .server
                    .as_ref()
                    .and_then(|s| config.server.iter().find(|x| &x.name == s))
                    .or_else(|| config.server.first())
                    .map_or("", |s| s.location_base.trim_end_matches('/'));
                Tool {
                    location: t
                        .location
                        .clone()
                        .unwrap_or_else(|| format!("{base}/tools/{}", t.name)),
                    resource: t
                        .resource
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), ArgTemplate::compile(v).ok()?)))
                        .collect(),
                    config: t.clone(),
                }
            })
            .collect();
        let origin = config.public_url.as_deref().map_or_else(
            || {
                config.listen.as_deref().map_or_else(
                    || "http://localhost".to_owned(),
                    |l| {
                        let scheme = crate::gateway::scheme(config.tls_cert_file.as_deref());
                        format!("{scheme}://{l}")
                    },
                )
            },
            |u| u.trim_end_matches('/').to_owned(),
        );
        Self {
            point,
            config,
            tools,
            upstreams,
            origin,
        }
    }

    fn tool(&self, server: &str, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| {
            t.config.name == name && t.config.server.as_deref().is_none_or(|s| s == server)
        })
    }

    /// Whether a method is forwarded (life cycle, notifications, or listed).
    #[must_use]
    pub fn forwards(&self, method: &str) -> bool {
        LIFECYCLE.contains(&method)
            || method.starts_with("notifications/")
            || self.config.forward.iter().any(|m| m == method)
    }

    /// The URL a proof for `upstream` must name.
    #[must_use]
    pub fn htu(&self, upstream: &Upstream) -> String {
        format!("{}{}", self.origin, upstream.path)
    }

    /// Decides one `tools/call` of `server`'s tool.
    #[must_use]
    pub fn decide_call(
        &self,
        upstream: &Upstream,
        call: &ToolCall<'_>,
        p: &Presented<'_>,
    ) -> (Decision, Option<String>) {
        let Some(tool) = self.tool(&upstream.config.name, call.name) else {
            return (
                denied("no_route"),
                Some(format!(
                    "tool `{}` is not mapped to the mandate's terms (names are compared exactly)",
                    call.name.escape_default()
                )),
            );
        };
        let mut props = Map::new();
        for (k, t) in &tool.resource {
            match t.render(call.arguments) {
                Ok(v) => {
                    props.insert(k.clone(), v);
                }
                Err(e) => return (denied(e.code), Some(e.detail)),
            }
        }
        let Some(mandate) = p.mandate else {
            return (denied("mandate_missing"), None);
        };
        let mut request = EvaluationRequest::new(
            &tool.config.action,
            &tool.config.type_,
            &tool.location,
            props,
        );
        if let Some(i) = p.agent_instance {
            request = request.with_agent_instance(i);
        }
        if let Some(a) = p.agent {
            request.subject = Some(json!({"type": "agent", "id": a}));
        }
        let htu = self.htu(upstream);
        let possession = if p.held {
            Possession::Held
        } else {
            self.point
                .possession(p.proof, "POST", &htu, p.access_token, p.certificate)
        };
        (
            self.point
                .decide(mandate, &request, p.access_token, possession),
            None,
        )
    }

    /// The names of `upstream`'s tools the presented mandate permits now:
    /// the chain verifies, possession is proven, the replica is fresh, every
    /// mandate of the chain is in force, the leaf is the agent's, and it
    /// names the tool's type, action and location. (Arguments are judged at
    /// the call.) Empty when anything fails.
    #[must_use]
    pub fn permitted_tools(&self, upstream: &Upstream, p: &Presented<'_>) -> Vec<String> {
        let Some(mandate) = p.mandate else {
            return Vec::new();
        };
        let Ok(chain) = self.point.verifier.verify(mandate) else {
            return Vec::new();
        };
        let htu = self.htu(upstream);
        let possession = if p.held {
            Possession::Held
        } else {
            self.point
                .possession(p.proof, "POST", &htu, p.access_token, p.certificate)
        };
        if self.point.check_possession(&chain, &possession).is_some() {
            return Vec::new();
        }
        let Some(snap) = self.point.replica.fresh_snapshot() else {
            return Vec::new();
        };
        let claims = chain.leaf().claims();
        if p.agent_instance != Some(claims.agent.instance.as_str())
            || p.agent.is_some_and(|a| a != claims.agent.id.as_str())
        {
            return Vec::new();
        }
        let ended = mandate_core::decision::not_in_force(
            chain
                .mandates()
                .iter()
                .map(mandate_core::chain::VerifiedMandate::claims),
            &snap,
            now_unix(),
        );
        if !ended.is_empty() || (claims.lifecycle.one_time && snap.is_consumed(&claims.mandate_id))
        {
            return Vec::new();
        }
        self.tools
            .iter()
            .filter(|t| {
                t.config
                    .server
                    .as_deref()
                    .is_none_or(|s| s == upstream.config.name)
            })
            .filter(|t| {
                claims.authorization_details.iter().any(|d| {
                    d.type_ == t.config.type_
                        && d.actions.iter().any(|a| a == &t.config.action)
                        && (d.locations.is_empty()
                            || d.locations.iter().any(|l| {
                                mandate_core::location::Location::parse_grant(l)
                                    .ok()
                                    .zip(
                                        mandate_core::location::Location::parse_request(
                                            &t.location,
                                        )
                                        .ok(),
                                    )
                                    .is_some_and(|(g, r)| g.covers(&r))
                            }))
                })
            })
            .map(|t| t.config.name.clone())
            .collect()
    }

    /// Whether the chain `mandate` is still in force (for calls in flight):
    /// `false` once any mandate of it has ended or been suspended. A stale
    /// replica is not news of an end.
    #[must_use]
    pub fn still_in_force(&self, mandate: &str) -> bool {
        let Ok(chain) = self.point.verifier.verify(mandate) else {
            return false;
        };
        let Some(snap) = self.point.replica.fresh_snapshot() else {
            return true;
        };
        mandate_core::decision::not_in_force(
            chain
                .mandates()
                .iter()
                .map(mandate_core::chain::VerifiedMandate::claims),
            &snap,
            now_unix(),
        )
        .is_empty()
    }

    /// Why the chain `mandate` ended (its reason codes).
    #[must_use]
    pub fn why_ended(&self, mandate: &str) -> Vec<String> {
        let Ok(chain) = self.point.verifier.verify(mandate) else {
            return vec!["mandate_invalid".into()];
        };
        let Some(snap) = self.point.replica.fresh_snapshot() else {
            return vec!["state_stale".into()];
        };
        mandate_core::decision::not_in_force(
            chain
                .mandates()
                .iter()
                .map(mandate_core::chain::VerifiedMandate::claims),
            &snap,
            now_unix(),
        )
    }
}

/// Keeps in a `tools/list` result only the tools named in `permitted`.
pub fn filter_tools(result: &mut Value, permitted: &[String]) {
    if let Some(Value::Array(tools)) = result.get_mut("tools") {
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| permitted.iter().any(|p| p == n))
        });
    }
}

/// The JSON-RPC error for a denied call.
#[must_use]
pub fn denial(d: &Decision, detail: Option<String>) -> RpcError {
    let mut message = format!("mandate denied: {}", d.reasons.join(", "));
    if let Some(x) = &detail {
        message.push_str(" (");
        message.push_str(x);
        message.push(')');
    }
    RpcError {
        code: MANDATE_DENIED,
        message,
        data: Some(json!({
            "reasons": d.reasons,
            "mandate_id": d.chain.last(),
            "chain": d.chain,
            "detail": detail,
        })),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn argument_templates_make_typed_attributes() {
        let a = args(
            json!({"category": "logistics", "limit": 10, "amount": "1250.50",
            "owner": "acme", "repo": "app", "filter": {"region": "north-america"}, "n": "42"}),
        );
        let r = |t: &str| ArgTemplate::compile(t).unwrap().render(Some(&a));
        assert_eq!(r("{category}").unwrap(), json!("logistics"));
        assert_eq!(r("{limit:int}").unwrap(), json!(10));
        assert_eq!(r("{n:int}").unwrap(), json!(42));
        assert_eq!(
            r("{amount:decimal}").unwrap().to_string(),
            "1250.50".parse::<Number>().unwrap().to_string()
        );
        assert_eq!(r("{owner}/{repo}").unwrap(), json!("acme/app"));
        assert_eq!(r("{filter.region}").unwrap(), json!("north-america"));
        assert_eq!(r("{limit}").unwrap(), json!("10"));
        assert_eq!(r("{missing}").unwrap_err().code, "argument_missing");
        assert_eq!(r("{category:int}").unwrap_err().code, "argument_invalid");
        assert_eq!(r("{filter}").unwrap_err().code, "argument_invalid");
        assert_eq!(
            r("{category:decimal}").unwrap_err().code,
            "argument_invalid"
        );
    }

    #[test]
    fn bad_templates_are_refused_at_start() {
        assert!(ArgTemplate::compile("{x").is_err());
        assert!(ArgTemplate::compile("{}").is_err());
        assert!(ArgTemplate::compile("{x:float}").is_err());
        assert!(ArgTemplate::compile("n-{x:int}").is_err());
        assert!(ArgTemplate::compile("{a..b}").is_err());
    }

    #[test]
    fn decimals_are_read_exactly_or_refused() {
        assert!(
            decimal("500.00000000000001").is_none(),
            "would round to 500"
        );
        assert!(decimal("1e3").is_none());
        assert!(decimal("12.").is_none());
        assert!(decimal("-3.25").is_some());
    }

    #[test]
    fn the_proxy_takes_a_token_file_or_client_credentials_not_both() {
        let base = "listen = \"127.0.0.1:9100\"\nauthority = \"http://127.0.0.1:8080\"\n";
        let server = "\n[[server]]\nname = \"v\"\nurl = \"http://127.0.0.1:9000/mcp\"\nlocation_base = \"https://v.example\"\n";
        let grant = "\n[client_credentials]\ntoken_endpoint = \"https://idp.example/token\"\nclient_id = \"mcp-1\"\nclient_secret_file = \"s\"\n";
        let parse = |t: &str| toml::from_str::<McpConfig>(t).unwrap().validate(false);
        assert!(parse(&format!("{base}token_file = \"t\"\n{server}")).is_ok());
        assert!(parse(&format!("{base}{server}{grant}")).is_ok());
        let both = parse(&format!("{base}token_file = \"t\"\n{server}{grant}")).unwrap_err();
        assert_eq!(both.setting, "token_file");
        let neither = parse(&format!("{base}{server}")).unwrap_err();
        assert_eq!(neither.setting, "token_file");
    }

    #[test]
    fn tool_names_are_what_mcp_recommends() {
        assert!(valid_tool_name("search_vendors"));
        assert!(valid_tool_name("admin.tools/list-1"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("delete_v\u{0435}ndor"));
        assert!(!valid_tool_name("a b"));
    }

    #[test]
    fn a_tools_list_keeps_only_the_permitted() {
        let mut r = json!({"tools": [{"name": "search_vendors"}, {"name": "delete_vendor"}, {"x": 1}], "nextCursor": "c"});
        filter_tools(&mut r, &["search_vendors".into()]);
        assert_eq!(
            r,
            json!({"tools": [{"name": "search_vendors"}], "nextCursor": "c"})
        );
    }
}
