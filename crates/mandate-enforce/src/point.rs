//! What every local enforcement point shares: the signal-fed replica and the
//! feed that keeps it current, the verifier, the holder's proofs (replay
//! cache, server nonces), consuming one-time mandates at the authority, and
//! shipping every decision to the audit log. The HTTP [`gateway`] and the
//! [`mcp`] proxy are each a [`Point`] and a way of turning what arrives into
//! an evaluation request.
//!
//! [`gateway`]: crate::gateway
//! [`mcp`]: crate::mcp

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mandate_core::chain::Verifier;
use mandate_core::decision::{Decision, Obligation};
use mandate_core::pop::{Mode, Nonces, Possession, ProofTarget, ReplayCache};
use mandate_core::request::EvaluationRequest;
use mandate_core::timestamp::UnixTime;
use serde::Deserialize;
use serde_json::json;

use crate::client::{AuthorityClient, Consumed, run_poller};
use crate::replica::{Applied, Proved, Replica, decide_with};
use crate::shipper::{DecisionRecord, Outcome, Shipper};

/// How an enforcement point hears from the authority.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Long polling (RFC 8936).
    #[default]
    Poll,
    /// Push to `/_mandate/ssf` (RFC 8935).
    Push,
}

/// What a [`Point`] needs to start.
#[derive(Debug, Clone)]
pub struct PointConfig {
    /// How decisions name this enforcement point in the audit log.
    pub name: String,
    /// The authority's base URL.
    pub authority: String,
    /// A file holding an enforcer token (read again when it changes);
    /// `None` with `client_credentials`.
    pub token_file: Option<PathBuf>,
    /// The enforcer token from the identity provider instead.
    pub client_credentials: Option<crate::client::ClientCredentials>,
    /// Deny `state_stale` after this long without news from the authority.
    pub staleness: Duration,
    /// Where the authority pushes SETs (`None`: poll).
    pub push_url: Option<String>,
    /// Where decisions wait while the authority is unreachable.
    pub spool: PathBuf,
    /// Whether every use needs the holder's DPoP proof.
    pub proof_of_possession: Mode,
    /// Whether every proof must carry a nonce this point issued.
    pub dpop_nonce: bool,
    /// The CA (PEM) the authority's TLS certificate is checked against,
    /// instead of the public roots (`None`: public roots).
    pub authority_ca_file: Option<PathBuf>,
    /// How often the authority's keys are fetched again ([`KEY_REFRESH`]).
    pub key_refresh: Duration,
    /// How many DPoP proofs the replay cache holds
    /// ([`mandate_core::pop::DEFAULT_REPLAY_CAPACITY`]).
    pub replay_capacity: usize,
}

/// Refuses plain HTTP on an address that is not loopback, unless allowed
/// (an enforcement point behind a proxy that terminates TLS).
///
/// # Errors
/// What to set instead.
pub fn plain_http_check(
    listen: &std::net::SocketAddr,
    allow_plain_http: bool,
) -> Result<(), String> {
    if listen.ip().is_loopback() || allow_plain_http {
        return Ok(());
    }
    Err(format!(
        "{listen}: plain HTTP is served on loopback only; give a certificate and key \
         (tls_cert_file, tls_key_file) or, behind a proxy that terminates TLS, set \
         allow_plain_http = true"
    ))
}

/// An enforcement point's listener settings: a whole TLS pair, or plain
/// HTTP where [`plain_http_check`] allows it.
///
/// # Errors
/// The setting at fault and what is wrong.
pub fn check_listener(
    listen: &std::net::SocketAddr,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    allow_plain_http: bool,
) -> Result<(), (&'static str, String)> {
    match (cert, key) {
        (Some(_), Some(_)) => Ok(()),
        (None, None) => plain_http_check(listen, allow_plain_http).map_err(|m| ("listen", m)),
        (Some(_), None) => Err(("tls_key_file", "missing (tls_cert_file is set)".into())),
        (None, Some(_)) => Err(("tls_cert_file", "missing (tls_key_file is set)".into())),
    }
}

/// An enforcement point's client-certificate settings: any mode but `off`
/// needs TLS; `pki` needs `client_ca_file`, which nothing else reads.
///
/// # Errors
/// The setting at fault and what is wrong.
pub fn check_client_certificates(
    mode: crate::gateway::ClientCertificates,
    ca_file: Option<&std::path::Path>,
    tls_cert: Option<&std::path::Path>,
) -> Result<(), (&'static str, String)> {
    use crate::gateway::ClientCertificates;
    if mode != ClientCertificates::Off && tls_cert.is_none() {
        return Err((
            "client_certificates",
            "needs tls_cert_file and tls_key_file: client certificates come with a TLS handshake"
                .into(),
        ));
    }
    match (mode, ca_file) {
        (ClientCertificates::Pki, None) => Err((
            "client_ca_file",
            "missing: client_certificates = \"pki\" checks certificates against this CA (PEM)"
                .into(),
        )),
        (ClientCertificates::Off | ClientCertificates::SelfSigned, Some(_)) => Err((
            "client_ca_file",
            "read only with client_certificates = \"pki\"".into(),
        )),
        _ => Ok(()),
    }
}

/// An enforcement point's credential for the authority: exactly one of a
/// token file and `[client_credentials]`.
///
/// # Errors
/// The setting at fault and what is wrong.
pub fn check_credentials(
    token_file: Option<&std::path::Path>,
    grant: Option<&crate::client::ClientCredentials>,
) -> Result<(), (&'static str, String)> {
    match (token_file, grant) {
        (Some(_), None) => Ok(()),
        (None, Some(c)) => c.validate().map_err(|m| ("client_credentials", m)),
        _ => Err((
            "token_file",
            "give exactly one of token_file and [client_credentials]".into(),
        )),
    }
}

/// How often an enforcement point fetches the authority's keys by default
/// (a rotated key is published ahead of its use for longer than this).
pub const KEY_REFRESH: Duration = Duration::from_secs(60);

/// The least time between two fetches caused by an unknown `kid` (a chain
/// or a SET naming a key the point does not have): a flood of forged
/// `kid`s costs the authority one fetch per interval.
pub const KEY_REFETCH_MIN: Duration = Duration::from_secs(5);

/// Keeps a verifier's and a replica's keys those the authority publishes:
/// every `every` ([`KEY_REFRESH`] by default), and soon after an unknown
/// `kid` (at most once per [`KEY_REFETCH_MIN`]). On its own thread, off the
/// decision path: a decision never waits for a fetch. Ends with `stop`, or
/// when the verifier is dropped.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn_key_refresher(
    verifier: std::sync::Weak<Verifier>,
    replica: std::sync::Weak<Replica>,
    client: AuthorityClient,
    stop: Arc<AtomicBool>,
    every: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("mandate-keys".into())
        .spawn(move || {
            let mut last = std::time::Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(250));
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let (Some(v), Some(r)) = (verifier.upgrade(), replica.upgrade()) else {
                    return;
                };
                let due = last.elapsed() >= every
                    || (last.elapsed() >= KEY_REFETCH_MIN
                        && (v.take_unknown_kid() | r.take_unknown_kid()));
                if !due {
                    continue;
                }
                last = std::time::Instant::now();
                match client.keys() {
                    Ok(keys) => {
                        let fetched = serde_json::to_value(keys.to_jwks()).ok();
                        if fetched != serde_json::to_value(v.keys().to_jwks()).ok() {
                            tracing::info!(
                                keys = keys.to_jwks().keys.len(),
                                "the authority's keys changed"
                            );
                            r.set_keys(keys.clone());
                            v.set_keys(keys);
                        }
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "fetching the authority's keys failed; keeping the ones held"
                    ),
                }
            }
        })
        .map(|_| ())
}

/// A running enforcement point.
pub struct Point {
    name: String,
    /// The verifier of presented chains (the authority's keys and issuer).
    pub verifier: Arc<Verifier>,
    /// The replica decisions read.
    pub replica: Arc<Replica>,
    client: AuthorityClient,
    stop: Arc<AtomicBool>,
    /// Ships every decision to the authority's audit log.
    pub shipper: Shipper,
    /// The `Authorization` value the transmitter presents on each push
    /// (never logged: `Debug` leaves it out).
    push_authorization: String,
    /// DPoP proofs seen, so each is accepted once.
    replay: ReplayCache,
    /// Checks the proof signatures of concurrent requests together.
    signatures: mandate_core::batch::SignatureBatcher,
    /// This point's server nonces (used when `dpop_nonce`).
    nonces: Nonces,
    mode: Mode,
    dpop_nonce: bool,
}

impl std::fmt::Debug for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Point")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Now, in whole seconds.
#[must_use]
pub fn now_unix() -> UnixTime {
    UnixTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0),
    )
    .unwrap_or(UnixTime::EPOCH)
}

/// Turns an allow into a deny for `reason` alone.
pub fn deny(d: &mut Decision, reason: &str) {
    d.allow = false;
    d.reasons = vec![reason.to_owned()];
    d.obligations.clear();
}

/// A deny that never reached a chain (`no_route`, `mandate_missing`, …).
#[must_use]
pub fn denied(reason: &str) -> Decision {
    Decision {
        allow: false,
        reasons: vec![reason.to_owned()],
        chain: std::sync::Arc::from([]),
        obligations: Vec::new(),
    }
}

impl Point {
    /// Connects to the authority (keys, issuer, a stream) and starts keeping
    /// the replica current. Blocking.
    ///
    /// # Errors
    /// When the token cannot be read or the authority cannot be reached.
    pub fn start(config: PointConfig) -> Result<Arc<Self>, String> {
        // Read again whenever the file changes: a refreshed token is used
        // without a restart.
        let client = match (&config.client_credentials, &config.token_file) {
            (Some(_), _) => AuthorityClient::new(&config.authority, ""),
            (None, Some(file)) => AuthorityClient::with_token_file(&config.authority, file)
                .map_err(|e| format!("token_file: {e}"))?,
            (None, None) => return Err("token_file or client_credentials: missing".into()),
        };
        let client = match &config.authority_ca_file {
            Some(ca) => client
                .with_ca_file(ca)
                .map_err(|e| format!("authority_ca_file: {e}"))?,
            None => client,
        };
        // The provider's token endpoint is reached with the same TLS trust.
        let client = match &config.client_credentials {
            Some(grant) => client
                .with_grant(grant.clone())
                .map_err(|e| format!("client_credentials: {e}"))?,
            None => client,
        };
        let keys = client.keys().map_err(|e| e.to_string())?;
        let issuer = client.issuer().map_err(|e| e.to_string())?;
        let replica = Arc::new(Replica::new(keys.clone(), &issuer, config.staleness));
        // The secret the transmitter must present on every push: 256 random bits.
        let push_authorization = {
            let mut bytes = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
            format!("Bearer {}", hex::encode(bytes))
        };
        let (stream, aud) = client
            .create_stream(
                config
                    .push_url
                    .as_deref()
                    .map(|u| (u, push_authorization.as_str())),
            )
            .map_err(|e| e.to_string())?;
        replica.set_audience(&aud);
        let shipper = Shipper::start(client.clone(), config.spool.clone(), &stream);
        let stop = Arc::new(AtomicBool::new(false));
        let point = Arc::new(Self {
            name: config.name,
            verifier: Arc::new(Verifier::new(keys).with_issuer(issuer)),
            replica: Arc::clone(&replica),
            client: client.clone(),
            stop: Arc::clone(&stop),
            shipper,
            push_authorization,
            replay: ReplayCache::new(config.replay_capacity),
            signatures: mandate_core::batch::SignatureBatcher::start()
                .map_err(|e| format!("signature batch thread: {e}"))?,
            nonces: {
                let mut key = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
                Nonces::new(key)
            },
            mode: config.proof_of_possession,
            dpop_nonce: config.dpop_nonce,
        });
        if point.mode == Mode::Bearer {
            tracing::warn!(
                "proof_of_possession = \"bearer\": a mandate is accepted without a DPoP proof, so \
                 whoever copies one can use it. For development only."
            );
        }
        // Poll: the poller is the feed. Push: it resynchronises from snapshots
        // and keeps contact by polling nothing, while SETs arrive by push.
        let wait = config.staleness / 3;
        let push = config.push_url.is_some();
        let (r, c, st) = (replica, client, stop);
        std::thread::Builder::new()
            .name("mandate-feed".into())
            .spawn(move || {
                if push {
                    run_snapshot_keeper(&r, &c, &stream, &st);
                } else {
                    run_poller(&r, &c, &stream, &st, wait);
                }
            })
            .map_err(|e| e.to_string())?;
        spawn_key_refresher(
            Arc::downgrade(&point.verifier),
            Arc::downgrade(&point.replica),
            point.client.clone(),
            Arc::clone(&point.stop),
            config.key_refresh,
        )
        .map_err(|e| e.to_string())?;
        Ok(point)
    }

    /// Stops the feed thread and ships (or spools) the pending decisions.
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.shipper.flush(Duration::from_secs(5));
    }

    /// Whether proofs must carry this point's nonce.
    #[must_use]
    pub fn requires_nonce(&self) -> bool {
        self.dpop_nonce
    }

    /// The nonce proofs must carry now, when this point requires one.
    #[must_use]
    pub fn current_nonce(&self) -> Option<String> {
        self.dpop_nonce.then(|| self.nonces.current(now_unix()))
    }

    /// How possession is established for one use: the `proof` (`None`: none
    /// was sent; `Some("")`: one that cannot be a proof, such as two) for
    /// the method and URL it must name, and the `certificate` of the TLS
    /// connection the use came on (what a certificate-bound leaf needs), or
    /// nothing in bearer mode.
    #[must_use]
    pub fn possession<'a>(
        &'a self,
        proof: Option<&'a str>,
        htm: &'a str,
        htu: &'a str,
        access_token: Option<&'a str>,
        certificate: Option<&'a str>,
    ) -> Possession<'a> {
        match self.mode {
            Mode::Bearer => Possession::Bearer,
            Mode::Required => Possession::Proof {
                proof,
                target: ProofTarget {
                    htm,
                    htu,
                    access_token,
                    nonce: self.dpop_nonce.then_some(&self.nonces),
                },
                certificate,
            },
        }
    }

    /// Decides `request` under the presented chain with the replica.
    #[must_use]
    pub fn decide(
        &self,
        presented: &str,
        request: &EvaluationRequest,
        token: Option<&str>,
        possession: Possession<'_>,
    ) -> Decision {
        decide_with(
            &self.verifier,
            &self.replica,
            presented,
            request,
            token,
            &Proved {
                possession,
                cache: &self.replay,
            },
            now_unix(),
        )
    }

    /// Counts a request being handled until the guard is dropped: the
    /// proof of the only request in flight is checked at once, not handed
    /// to the batcher's thread (see [`mandate_core::batch`]).
    #[must_use]
    pub fn request(&self) -> mandate_core::batch::InFlight {
        self.signatures.request()
    }

    /// As [`decide`](Self::decide), for a server deciding many requests at
    /// once: the proof's signature is checked with those of the requests
    /// decided at the same time (one Ed25519 batch, on the batcher's
    /// thread), everything else as `decide` does, in the same order.
    pub async fn decide_batched(
        &self,
        presented: &str,
        request: &EvaluationRequest,
        token: Option<&str>,
        possession: Possession<'_>,
    ) -> Decision {
        let now = now_unix();
        let chain = match self.verifier.verify(presented) {
            Ok(c) => c,
            Err(e) => return Decision::from_chain_error(&e),
        };
        let pop_failure = match self
            .signatures
            .prove_possession(&chain, &possession, now)
            .await
        {
            Ok(None) => None,
            Ok(Some(proof)) => self.replay.admit(&proof, now).err(),
            Err(e) => Some(e),
        };
        crate::replica::decide_verified(&chain, &self.replica, request, token, pop_failure, now)
    }

    /// Checks possession alone (no action decided): `None` when proven.
    #[must_use]
    pub fn check_possession(
        &self,
        chain: &mandate_core::chain::VerifiedChain,
        possession: &Possession<'_>,
    ) -> Option<mandate_core::pop::PopError> {
        mandate_core::pop::check(chain, possession, &self.replay, now_unix())
    }

    /// Applies the obligations that must happen before acting: consuming a
    /// one-time mandate at the authority, exactly once.
    pub async fn fulfil(self: &Arc<Self>, mut d: Decision) -> Decision {
        let one_time = d.obligations.iter().find_map(|o| match o {
            Obligation::ConsumeOneTime { mandate_id } => Some(mandate_id.to_string()),
            _ => None,
        });
        if let (true, Some(id)) = (d.allow, one_time) {
            let client = self.client.clone();
            let consumed = tokio::task::spawn_blocking(move || client.consume(&id)).await;
            match consumed {
                Ok(Ok(Consumed::Now)) => d
                    .obligations
                    .retain(|o| !matches!(o, Obligation::ConsumeOneTime { .. })),
                Ok(Ok(Consumed::Already)) => deny(&mut d, "one_time_used"),
                Ok(Ok(Consumed::Ended(state))) => {
                    let reason = match state.as_str() {
                        "revoked" | "expired" | "completed" | "superseded" | "suspended" => state,
                        _ => "state_unknown".to_owned(),
                    };
                    deny(&mut d, &reason);
                }
                _ => deny(&mut d, "state_stale"),
            }
        }
        d
    }

    /// Queues the decision for the audit log: what was asked (`method`,
    /// `path`: an HTTP method and path, or an MCP method and tool).
    pub fn ship(&self, method: &str, path: &str, d: &Decision) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.shipper.record(DecisionRecord {
            at_ms,
            gateway: self.name.clone(),
            method: method.to_owned(),
            path: path.to_owned(),
            chain: d.chain.to_vec(),
            decision: if d.allow {
                Outcome::Allow
            } else {
                Outcome::Deny
            },
            reasons: d.reasons.clone(),
        });
    }

    /// `/_mandate/ssf` (pushed SETs) and `/_mandate/healthz`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_mandate/ssf", post(receive_set))
            .route("/_mandate/healthz", get(healthz))
            .with_state(Arc::clone(self))
    }
}

fn keep_running(stop: &Arc<AtomicBool>) -> bool {
    !stop.load(std::sync::atomic::Ordering::Relaxed)
}

/// With push delivery: resynchronise from a snapshot whenever needed. Contact
/// comes from the pushed SETs and heartbeats.
fn run_snapshot_keeper(
    replica: &Arc<Replica>,
    client: &AuthorityClient,
    stream: &str,
    stop: &Arc<AtomicBool>,
) {
    let mut outage = crate::client::Outage::default();
    while keep_running(stop) {
        if replica.needs_snapshot() {
            match client.snapshot(stream) {
                Ok((cursor, doc)) => {
                    outage.recovered();
                    let _ = replica.install(cursor, doc);
                }
                Err(e) => {
                    outage.failed("snapshot", &e);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn receive_set(State(p): State<Arc<Point>>, headers: HeaderMap, body: Bytes) -> Response {
    // Only the transmitter holds the stream's push authorization: anything
    // else posted here (a proxied client, a replay from a log) is refused
    // before it is read.
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes)
        .unwrap_or_default();
    let expected = p.push_authorization.as_bytes();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(presented, expected)) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"err": "authentication_failed", "description": "push authorization missing or wrong"})),
        )
            .into_response();
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"err": "invalid_request", "description": "not UTF-8"})),
        )
            .into_response();
    };
    match p.replica.apply_set(text) {
        Ok(
            Applied::Applied
            | Applied::Duplicate
            | Applied::Gap
            | Applied::Heartbeat
            | Applied::Paused
            | Applied::Verification,
        ) => StatusCode::ACCEPTED.into_response(),
        Err(e) => {
            // Sent by the transmitter (it held the push authorization), yet
            // not applicable here: a missed signal. Stale until a snapshot;
            // the 400 tells the transmitter not to send it again.
            p.replica.mark_gap();
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"err": "invalid_request", "description": e.to_string()})),
            )
                .into_response()
        }
    }
}

async fn healthz(State(p): State<Arc<Point>>) -> Response {
    let chains = p.verifier.counts();
    let proofs = p.signatures.counts();
    axum::Json(json!({
        "fresh": p.replica.is_fresh(),
        "cursor": p.replica.cursor(),
        "audit_checkpoint": p.replica.audit_checkpoint(),
        "chains_verified": {
            "cached": chains.cached,
            "below_cached": chains.below_cached,
            "whole": chains.whole,
        },
        "proof_signatures": {
            "at_once": proofs.at_once,
            "thread_alone": proofs.thread_alone,
            "in_batches": proofs.in_batches,
            "batches": proofs.batches,
            "rechecked": proofs.rechecked,
        },
    }))
    .into_response()
}

/// `authority = "URL"`, `authority = "URL,URL"` or `authority = ["URL", …]`:
/// the replicas of one authority, comma-joined for the client.
///
/// # Errors
/// Neither a string nor a list of strings, or an empty list.
pub fn authority_urls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let urls = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(v) => v.join(","),
    };
    if urls.split(',').all(|u| u.trim().is_empty()) {
        return Err(serde::de::Error::custom("authority: no URL"));
    }
    Ok(urls)
}
