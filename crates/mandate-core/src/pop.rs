//! Proof of possession: the agent using a mandate proves, on every use, that
//! it holds the private key the leaf binds (`agent.cnf.jwk`). The proof is a
//! DPoP proof JWT (RFC 9449): a fresh JWS over the HTTP method (`htm`) and
//! URL (`htu`) of the one request it accompanies, with a unique `jti` and an
//! `iat`, signed with the holder key. Whoever copies the mandate string (a
//! log line, a prompt-injected tool) cannot use it without the key.
//!
//! | code | when |
//! | --- | --- |
//! | `pop_missing` | no proof came with the mandate |
//! | `pop_invalid` | not a DPoP proof, signed by another key than the leaf's, for another method or URL, or naming another access token (`ath`) |
//! | `pop_stale` | its `iat` is more than [`PROOF_MAX_AGE_SECS`] old or more than [`PROOF_FUTURE_SECS`] ahead |
//! | `pop_replayed` | its `jti` was already seen for this key (within the window) |
//! | `pop_replay_cache_full` | the replay cache is full (its capacity, a setting `replay_capacity`, by default [`DEFAULT_REPLAY_CAPACITY`]) of proofs that could still be accepted: a new one is refused, never admitted unchecked |
//! | `pop_nonce_required` | the enforcement point issues nonces (RFC 9449 §8) and the proof lacks a current one |
//! | `holder_key_missing` | the leaf binds no holder key, so nothing can be proved |
//! | `pop_certificate_missing` | the leaf is certificate-bound (`agent.cnf.x5t#S256`, RFC 8705) and the request's TLS connection presented no client certificate |
//! | `pop_certificate_mismatch` | it presented another certificate than the one the leaf binds |
//!
//! A certificate-bound leaf is proved by the TLS handshake instead: the
//! connection's client certificate, whose key the handshake proved, must be
//! the one `x5t#S256` names. That is checked once per connection, not once
//! per request; a DPoP proof does not stand in for it.
//!
//! The key the proof is verified with is the leaf's, never the header's:
//! the header's `jwk` must be that same key, and the algorithm is the key's.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;

use crate::b64;
use crate::chain::VerifiedChain;
use crate::hash::{sha256, sha256_b64};
use crate::jws::{self, DPOP_TYP};
use crate::keys::{Algorithm, PublicJwk, SigningKey, VerifyingKey};
use crate::request::EvaluationRequest;
use crate::timestamp::UnixTime;

/// The oldest a proof may be when it is checked.
pub const PROOF_MAX_AGE_SECS: i64 = 60;
/// How far ahead of the checker's clock a proof's `iat` may be (skew).
pub const PROOF_FUTURE_SECS: i64 = 10;
/// The longest `jti` accepted.
pub const MAX_JTI_BYTES: usize = 256;
/// The default capacity of a [`ReplayCache`]: a proof is remembered for
/// [`PROOF_MAX_AGE_SECS`] after its `iat` (or after it was checked, if
/// later), so this holds a sustained 16,000 proofs/s (a gateway on two cores
/// checks about 14,000/s). About 24 bytes each (a 64-bit fingerprint in a
/// set and in an expiry queue), so ~40 MB when full.
pub const DEFAULT_REPLAY_CAPACITY: usize = 1_000_000;
/// The largest replay cache a configuration may ask for (~4 GB when full).
pub const MAX_REPLAY_CAPACITY: usize = 100_000_000;

/// Why a proof of possession was refused. Each has a stable [`code`](PopError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// No proof.
    #[error("no DPoP proof came with the mandate")]
    Missing,
    /// The leaf binds no key.
    #[error("the leaf mandate binds no holder key (agent.cnf.jwk)")]
    NoHolderKey,
    /// Not a valid proof for this key and request.
    #[error("DPoP proof: {0}")]
    Invalid(String),
    /// Outside the time window.
    #[error("DPoP proof: iat is outside the accepted window")]
    Stale,
    /// Seen before.
    #[error("DPoP proof: jti was already used")]
    Replayed,
    /// The replay cache is full of proofs that could still be accepted.
    #[error("DPoP proof: the replay cache is full; refused rather than admitted unchecked")]
    ReplayCacheFull,
    /// The server requires a nonce it issued, and the proof has none (or an
    /// old or foreign one): retry with the one in `DPoP-Nonce`.
    #[error("DPoP proof: use the server's nonce (DPoP-Nonce)")]
    NonceRequired,
    /// The leaf is certificate-bound and the connection presented no
    /// client certificate (or the checker sees no connection).
    #[error(
        "the leaf mandate is bound to a TLS client certificate (agent.cnf.x5t#S256) and none was presented on this connection"
    )]
    CertificateMissing,
    /// The connection's client certificate is another one.
    #[error(
        "the TLS client certificate is not the one the leaf mandate binds (agent.cnf.x5t#S256)"
    )]
    CertificateMismatch,
}

impl PopError {
    /// The stable reason code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            PopError::Missing => "pop_missing",
            PopError::NoHolderKey => "holder_key_missing",
            PopError::Invalid(_) => "pop_invalid",
            PopError::Stale => "pop_stale",
            PopError::Replayed => "pop_replayed",
            PopError::ReplayCacheFull => "pop_replay_cache_full",
            PopError::NonceRequired => "pop_nonce_required",
            PopError::CertificateMissing => "pop_certificate_missing",
            PopError::CertificateMismatch => "pop_certificate_mismatch",
        }
    }
}

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget<'a> {
    /// The HTTP method (`GET`), compared exactly.
    pub htm: &'a str,
    /// The URL, compared without query and fragment, scheme and host in
    /// lower case, default port removed.
    pub htu: &'a str,
    /// The access token presented with it, if any: the proof's `ath` must be
    /// its SHA-256.
    pub access_token: Option<&'a str>,
    /// The server's nonces, when it requires one in every proof.
    pub nonce: Option<&'a Nonces>,
}

/// How long a server nonce stays current; one from the window before is
/// still accepted.
pub const NONCE_WINDOW_SECS: i64 = 60;

/// Server nonces (RFC 9449 §8) without state: a nonce is the time window it
/// was issued in and an HMAC of it under a key the server drew at start, so
/// any proof must have been made after the server said the nonce (no proofs
/// made in advance by someone who held the key for a moment).
pub struct Nonces {
    key: [u8; 32],
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces under `key` (random, kept by the server).
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, window: i64) -> [u8; 32] {
        use hmac::Mac as _;
        let Ok(mut m) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
            return [0; 32];
        };
        m.update(&window.to_be_bytes());
        m.finalize().into_bytes().into()
    }

    /// The nonce to hand out now.
    #[must_use]
    pub fn current(&self, now: UnixTime) -> String {
        let window = now.secs().div_euclid(NONCE_WINDOW_SECS);
        let mut raw = window.to_be_bytes().to_vec();
        raw.extend_from_slice(self.mac(window).get(..16).unwrap_or_default());
        b64::encode(raw)
    }

    /// Whether `nonce` is this server's, from this window or the one before.
    #[must_use]
    pub fn accepts(&self, nonce: &str, now: UnixTime) -> bool {
        let Ok(raw) = b64::decode(nonce) else {
            return false;
        };
        let (Some(w), Some(tag)) = (raw.get(..8), raw.get(8..)) else {
            return false;
        };
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            return false;
        };
        let window = i64::from_be_bytes(w);
        let current = now.secs().div_euclid(NONCE_WINDOW_SECS);
        if window != current && window != current - 1 {
            return false;
        }
        let expected = self.mac(window);
        tag.len() == 16
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                tag,
                expected.get(..16).unwrap_or_default(),
            ))
    }
}

/// What a verified proof said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Its unique id.
    pub jti: String,
    /// When it was made.
    pub iat: i64,
    /// The public key that made it (its coordinates), which with `jti`
    /// identifies the proof for the replay cache.
    pub key: String,
}

impl Proof {
    /// What identifies the proof for replay detection: SHA-256 of its key and
    /// `jti`. Shared by every replay cache (in memory, or a shared database
    /// across authority replicas).
    #[must_use]
    pub fn replay_key(&self) -> [u8; 32] {
        let mut material = Vec::with_capacity(self.key.len() + 1 + self.jti.len());
        material.extend_from_slice(self.key.as_bytes());
        material.push(0);
        material.extend_from_slice(self.jti.as_bytes());
        sha256(&material)
    }
}

/// [`check`], answering the admitted proof (to be recorded elsewhere too).
///
/// # Errors
/// Why possession is not proved.
pub fn check_admitted(
    chain: &VerifiedChain,
    possession: &Possession<'_>,
    cache: &ReplayCache,
    now: UnixTime,
) -> Result<Option<Proof>, PopError> {
    let Some((unchecked, target)) = unchecked(chain, possession)? else {
        return Ok(None);
    };
    let signed = unchecked.signed_by_holder();
    let p = unchecked.finish(signed, &target, now)?;
    cache.admit(&p, now)?;
    Ok(Some(p))
}

/// The first half of [`check_admitted`]: `None` when no proof is needed
/// (the holder itself, or bearer mode), else the proof decoded and matched
/// to the leaf's holder key, and what it must be for. The caller checks the
/// signature (alone or in a batch), [`UncheckedProof::finish`]es it and
/// admits it to its replay cache.
///
/// # Errors
/// [`PopError::NoHolderKey`], [`PopError::Missing`], or the proof's header
/// is wrong.
pub fn unchecked<'a>(
    chain: &'a VerifiedChain,
    possession: &Possession<'a>,
) -> Result<Option<(UncheckedProof<'a>, ProofTarget<'a>)>, PopError> {
    let (proof, target, certificate) = match possession {
        Possession::Held | Possession::Bearer => return Ok(None),
        Possession::Proof {
            proof,
            target,
            certificate,
        } => (proof, target, certificate),
    };
    if let Some(bound) = chain
        .leaf()
        .claims()
        .agent
        .cnf
        .as_ref()
        .and_then(|c| c.x5t_s256.as_deref())
    {
        // Certificate-bound (RFC 8705): the handshake proved possession of
        // the certificate's key; only that certificate will do, and a DPoP
        // proof (even a valid one by agent.cnf.jwk) does not stand in.
        return match certificate {
            Some(presented)
                if bool::from(subtle::ConstantTimeEq::ct_eq(
                    presented.as_bytes(),
                    bound.as_bytes(),
                )) =>
            {
                Ok(None)
            }
            Some(_) => Err(PopError::CertificateMismatch),
            None => Err(PopError::CertificateMissing),
        };
    }
    let holder = chain.holder_key().ok_or(PopError::NoHolderKey)?;
    let proof = proof.ok_or(PopError::Missing)?;
    Ok(Some((UncheckedProof::decode(holder, proof)?, *target)))
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: Value,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// Normalises a URL the way RFC 9449 §4.3 compares `htu`: no query, no
/// fragment; the `url` crate lower-cases scheme and host and drops a
/// default port.
///
/// # Errors
/// When it is not an absolute http(s) URL.
pub fn normalize_htu(u: &str) -> Result<String, String> {
    let mut url = url::Url::parse(u).map_err(|e| format!("`{u}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{u}` is not an http(s) URL"));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.into())
}

fn same_key(a: &PublicJwk, b: &PublicJwk) -> bool {
    a.kty == b.kty && a.crv == b.crv && a.x == b.x && a.y == b.y
}

/// Verifies `proof` against the holder key and the request it must be for,
/// at `now`. Does not consult a replay cache (see [`ReplayCache`]).
///
/// # Errors
/// See [`PopError`].
pub fn verify_proof(
    holder: &VerifyingKey,
    proof: &str,
    target: &ProofTarget<'_>,
    now: UnixTime,
) -> Result<Proof, PopError> {
    let unchecked = UncheckedProof::decode(holder, proof)?;
    let signed = unchecked.signed_by_holder();
    unchecked.finish(signed, target, now)
}

/// A proof decoded and found to name the holder key, its signature not yet
/// checked: [`verify_proof`] in two halves, so that a server can check the
/// signatures of concurrent requests together
/// ([`crate::batch::SignatureBatcher`]) and then [`finish`](Self::finish).
/// The checks run in the same order, so a proof fails with the same error.
#[derive(Debug)]
pub struct UncheckedProof<'a> {
    holder: &'a VerifyingKey,
    decoded: jws::DecodedJws<'a>,
}

impl<'a> UncheckedProof<'a> {
    /// Decodes `proof` (algorithm the holder key's, `typ` `dpop+jwt`, no
    /// duplicate members) and checks its header names the holder key.
    ///
    /// # Errors
    /// [`PopError::Invalid`] naming what is wrong.
    pub fn decode(holder: &'a VerifyingKey, proof: &'a str) -> Result<Self, PopError> {
        let allowed = [holder.algorithm()].into();
        let decoded =
            jws::decode_dpop(proof, &allowed).map_err(|e| PopError::Invalid(e.to_string()))?;
        let named = decoded
            .jwk
            .as_ref()
            .ok_or_else(|| PopError::Invalid("header: `jwk` missing".into()))?;
        if !same_key(named, holder.jwk()) {
            return Err(PopError::Invalid(
                "signed by a key other than the one the mandate binds (agent.cnf.jwk)".into(),
            ));
        }
        Ok(Self { holder, decoded })
    }

    /// The holder key the signature must be by.
    #[must_use]
    pub fn holder(&self) -> &VerifyingKey {
        self.holder
    }

    /// The bytes the signature covers.
    #[must_use]
    pub fn signing_input(&self) -> &[u8] {
        self.decoded.signing_input.as_bytes()
    }

    /// The signature.
    #[must_use]
    pub fn signature(&self) -> &[u8] {
        &self.decoded.signature
    }

    /// Checks the signature here and now (one strict check, `verify_strict`'s rule).
    #[must_use]
    pub fn signed_by_holder(&self) -> bool {
        self.holder.verify(self.signing_input(), self.signature())
    }

    /// The rest of the checks, given whether the signature verified: the
    /// claims, the method and URL, `ath`, the nonce, `iat`.
    ///
    /// # Errors
    /// See [`PopError`]; a signature that did not verify is `Invalid`
    /// before anything the claims say is looked at.
    pub fn finish(
        self,
        signature_valid: bool,
        target: &ProofTarget<'_>,
        now: UnixTime,
    ) -> Result<Proof, PopError> {
        if !signature_valid {
            return Err(PopError::Invalid("signature does not verify".into()));
        }
        finish_claims(self.holder, &self.decoded.payload, target, now)
    }
}

fn finish_claims(
    holder: &VerifyingKey,
    payload: &[u8],
    target: &ProofTarget<'_>,
    now: UnixTime,
) -> Result<Proof, PopError> {
    let holder_jwk = holder.jwk();
    let claims: ProofClaims =
        serde_json::from_slice(payload).map_err(|e| PopError::Invalid(format!("claims: {e}")))?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_BYTES {
        return Err(PopError::Invalid(format!(
            "jti: must be 1 to {MAX_JTI_BYTES} bytes"
        )));
    }
    if target.htm.is_empty() {
        return Err(PopError::Invalid(
            "htm: the enforcement point did not say which method the proof is for".into(),
        ));
    }
    if claims.htm != target.htm {
        return Err(PopError::Invalid(format!(
            "htm: `{}` is not this request's method `{}`",
            claims.htm, target.htm
        )));
    }
    // The same text (query and fragment aside) is the same URL; otherwise
    // both are normalised and compared.
    let bare = |u: &str| u.split(['?', '#']).next().unwrap_or_default().to_owned();
    let plain_http = ["https://", "http://"].iter().any(|p| {
        target
            .htu
            .strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty())
    });
    if !plain_http || bare(&claims.htu) != bare(target.htu) {
        let expected =
            normalize_htu(target.htu).map_err(|e| PopError::Invalid(format!("htu: {e}")))?;
        let proved =
            normalize_htu(&claims.htu).map_err(|e| PopError::Invalid(format!("htu: {e}")))?;
        if proved != expected {
            return Err(PopError::Invalid(format!(
                "htu: `{proved}` is not this request's URL `{expected}`"
            )));
        }
    }
    match (target.access_token, &claims.ath) {
        (Some(token), Some(ath)) => {
            let digest = sha256(token.as_bytes());
            let named = crate::hash::b64_decode_32(ath).unwrap_or([0; 32]);
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &named[..])) {
                return Err(PopError::Invalid(
                    "ath: not the hash of the access token presented".into(),
                ));
            }
        }
        (Some(_), None) => {
            return Err(PopError::Invalid(
                "ath: missing (a proof sent with an access token names it)".into(),
            ));
        }
        (None, _) => {}
    }
    if let Some(nonces) = target.nonce
        && !claims
            .nonce
            .as_deref()
            .is_some_and(|n| nonces.accepts(n, now))
    {
        return Err(PopError::NonceRequired);
    }
    let iat = match &claims.iat {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| PopError::Invalid("iat: not a NumericDate".into()))?,
        _ => return Err(PopError::Invalid("iat: missing or not a number".into())),
    };
    let now = now.secs();
    if iat < now.saturating_sub(PROOF_MAX_AGE_SECS) || iat > now.saturating_add(PROOF_FUTURE_SECS) {
        return Err(PopError::Stale);
    }
    Ok(Proof {
        jti: claims.jti,
        iat,
        key: format!(
            "{}.{}",
            holder_jwk.x,
            holder_jwk.y.as_deref().unwrap_or_default()
        ),
    })
}

/// Seen proofs, so each is accepted once. Bounded: an entry lives only as
/// long as its proof could still be accepted; when the cache is full of live
/// entries a new proof is refused (`pop_replayed`), never admitted unchecked.
#[derive(Debug)]
pub struct ReplayCache {
    inner: Mutex<Seen>,
    capacity: usize,
}

/// A proof's replay key is kept as the first 64 bits of its SHA-256
/// ([`Proof::replay_key`]): two proofs sharing them would make the second
/// look replayed (a refusal, never an acceptance), at odds of about one in
/// 2^64 / (proofs held) — and a jti cannot be chosen to collide with a proof
/// not yet made.
#[derive(Debug, Default)]
struct Seen {
    keys: HashSet<u64>,
    order: VecDeque<(i64, u64)>,
}

fn fingerprint(key: &[u8; 32]) -> u64 {
    u64::from_be_bytes(*key.first_chunk::<8>().unwrap_or(&[0; 8]))
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayCache {
    /// A cache for at most `capacity` live proofs.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Seen::default()),
            capacity: capacity.max(1),
        }
    }

    /// Records the proof; `Err(Replayed)` when its `jti` was seen for this
    /// key within the window, `Err(ReplayCacheFull)` when the cache is full
    /// of proofs that could still be accepted.
    ///
    /// # Errors
    /// [`PopError::Replayed`], [`PopError::ReplayCacheFull`].
    pub fn admit(&self, proof: &Proof, now: UnixTime) -> Result<(), PopError> {
        self.admit_key(&proof.replay_key(), proof.iat, now)
    }

    /// [`admit`](Self::admit) for a caller that needs the proof's
    /// [`Proof::replay_key`] itself too (to record it elsewhere) and has
    /// computed it once: `key` must be `proof.replay_key()` and `iat`
    /// `proof.iat`.
    ///
    /// # Errors
    /// [`PopError::Replayed`], [`PopError::ReplayCacheFull`].
    pub fn admit_key(&self, key: &[u8; 32], iat: i64, now: UnixTime) -> Result<(), PopError> {
        let key = fingerprint(key);
        let now = now.secs();
        let mut seen = self.inner.lock().map_err(|_| PopError::Replayed)?;
        while let Some(&(expires, k)) = seen.order.front() {
            if expires >= now {
                break;
            }
            seen.order.pop_front();
            seen.keys.remove(&k);
        }
        if seen.keys.contains(&key) {
            return Err(PopError::Replayed);
        }
        if seen.keys.len() >= self.capacity {
            return Err(PopError::ReplayCacheFull);
        }
        seen.keys.insert(key);
        // Kept until the proof could no longer be accepted: it is accepted
        // while `iat >= now - PROOF_MAX_AGE_SECS`, i.e. until
        // `iat + PROOF_MAX_AGE_SECS`; a proof from the future (up to
        // PROOF_FUTURE_SECS ahead) is kept that much longer.
        let expires = now.max(iat).saturating_add(PROOF_MAX_AGE_SECS);
        seen.order.push_back((expires, key));
        Ok(())
    }

    /// How many proofs are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().map(|s| s.keys.len()).unwrap_or(0)
    }

    /// Whether none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an enforcement point requires proof of possession (a setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every use of a mandate carries a DPoP proof by the leaf's holder key.
    #[default]
    Required,
    /// Development only: the mandate alone is enough, so whoever copies it
    /// can use it. Logged loudly at start.
    Bearer,
}

/// How an enforcement point establishes that the caller holds the leaf's key.
#[derive(Debug, Clone, Copy)]
pub enum Possession<'a> {
    /// A DPoP proof (or none, which denies `pop_missing`) for this request.
    Proof {
        /// The proof as received.
        proof: Option<&'a str>,
        /// What it must be for.
        target: ProofTarget<'a>,
        /// The `x5t#S256` of the TLS client certificate the request came
        /// on, when the checker terminated a connection that presented one
        /// (the handshake proved its key). A certificate-bound leaf needs
        /// it; for any other it is not consulted.
        certificate: Option<&'a str>,
    },
    /// The checker is the holder itself (the SDK deciding its own calls,
    /// having checked at start that its key is the one the leaf binds).
    Held,
    /// Development only, loudly logged by whoever chooses it: no proof.
    Bearer,
}

/// The TLS client certificate of the connection a request came on, when it
/// presented one: its `x5t#S256` (RFC 8705 §3.1). A server sets it once per
/// connection, after a handshake whose signature it verified with the
/// certificate's key (so the peer holds that key), as a request extension;
/// enforcement points pass it on as [`Possession::Proof`]'s `certificate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(pub std::sync::Arc<str>);

/// Checks possession for `chain`'s leaf: verifies the proof and admits it
/// to the replay cache. The reason code when it fails.
#[must_use]
pub fn check(
    chain: &VerifiedChain,
    possession: &Possession<'_>,
    cache: &ReplayCache,
    now: UnixTime,
) -> Option<PopError> {
    check_admitted(chain, possession, cache, now).err()
}

/// The proof an AuthZEN request carries for its enforcement point:
/// `context.dpop`, with the method and URL it was checked against
/// (`context.htm`, `context.htu`). No client certificate: whoever asks
/// over AuthZEN did not see the agent's TLS handshake, and a statement
/// that it did is not evidence, so a certificate-bound leaf is refused
/// (`pop_certificate_missing`) and is decided only where the agent's
/// connection ends.
#[must_use]
pub fn from_context<'a>(request: &'a EvaluationRequest, token: Option<&'a str>) -> Possession<'a> {
    let get = |k: &str| request.context.get(k).and_then(Value::as_str);
    Possession::Proof {
        proof: get("dpop"),
        target: ProofTarget {
            htm: get("htm").unwrap_or_default(),
            htu: get("htu").unwrap_or_default(),
            access_token: token,
            nonce: None,
        },
        certificate: None,
    }
}

/// Makes a DPoP proof with the holder key for one request (what an agent
/// runtime does before each call). `jti` must be unique (random);
/// `access_token` adds `ath`.
#[must_use]
pub fn make_proof(
    holder: &SigningKey,
    htm: &str,
    htu: &str,
    access_token: Option<&str>,
    jti: &str,
    now: UnixTime,
) -> String {
    make_proof_with_nonce(holder, htm, htu, access_token, None, jti, now)
}

/// As [`make_proof`], carrying the server's `nonce` (from its `DPoP-Nonce`).
#[must_use]
pub fn make_proof_with_nonce(
    holder: &SigningKey,
    htm: &str,
    htu: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
    jti: &str,
    now: UnixTime,
) -> String {
    let mut jwk = serde_json::to_value(holder.public_jwk()).unwrap_or_default();
    if let Some(o) = jwk.as_object_mut() {
        // The key is named by its value; `kid`, `alg` and `use` add nothing.
        o.remove("kid");
        o.remove("alg");
        o.remove("use");
    }
    let header = serde_json::json!({
        "typ": DPOP_TYP,
        "alg": holder.algorithm().as_str(),
        "jwk": jwk,
    });
    let mut claims = serde_json::json!({
        "jti": jti, "htm": htm, "htu": htu, "iat": now.secs(),
    });
    if let (Some(t), Some(o)) = (access_token, claims.as_object_mut()) {
        o.insert("ath".into(), Value::String(sha256_b64(t.as_bytes())));
    }
    if let (Some(n), Some(o)) = (nonce, claims.as_object_mut()) {
        o.insert("nonce".into(), Value::String(n.to_owned()));
    }
    let mut out = b64::encode(header.to_string());
    out.push('.');
    b64::encode_into(claims.to_string(), &mut out);
    let sig = holder.sign(out.as_bytes());
    out.push('.');
    b64::encode_into(sig, &mut out);
    out
}

/// The algorithms a DPoP proof may use here.
pub const DPOP_ALGORITHMS: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::ES256];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed(Algorithm::EdDSA, [seed; 32])
    }

    fn at(secs: i64) -> UnixTime {
        UnixTime::from_secs(secs).unwrap_or(UnixTime::EPOCH)
    }

    fn target(htm: &'static str, htu: &'static str) -> ProofTarget<'static> {
        ProofTarget {
            htm,
            htu,
            access_token: None,
            nonce: None,
        }
    }

    fn holder(k: &SigningKey) -> VerifyingKey {
        k.verifying_key().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_proof_by_the_holder_for_this_request_is_accepted_once() {
        let k = key(1);
        let p = make_proof(&k, "GET", "https://gw.example/a?q=1", None, "j1", at(1000));
        let got = verify_proof(
            &holder(&k),
            &p,
            &target("GET", "https://GW.example:443/a"),
            at(1010),
        );
        let proof = got.unwrap_or_else(|e| panic!("{e}"));
        let cache = ReplayCache::new(10);
        assert_eq!(cache.admit(&proof, at(1010)), Ok(()));
        assert_eq!(cache.admit(&proof, at(1011)), Err(PopError::Replayed));
    }

    #[test]
    fn a_proof_for_another_method_url_key_or_time_is_refused() {
        let k = key(1);
        let p = make_proof(&k, "GET", "https://gw.example/a", None, "j", at(1000));
        let h = holder(&k);
        let code = |r: Result<Proof, PopError>| r.err().map(|e| e.code());
        assert_eq!(
            code(verify_proof(
                &h,
                &p,
                &target("POST", "https://gw.example/a"),
                at(1000)
            )),
            Some("pop_invalid")
        );
        assert_eq!(
            code(verify_proof(
                &h,
                &p,
                &target("GET", "https://gw.example/b"),
                at(1000)
            )),
            Some("pop_invalid")
        );
        assert_eq!(
            code(verify_proof(
                &holder(&key(2)),
                &p,
                &target("GET", "https://gw.example/a"),
                at(1000)
            )),
            Some("pop_invalid")
        );
        assert_eq!(
            code(verify_proof(
                &h,
                &p,
                &target("GET", "https://gw.example/a"),
                at(1061)
            )),
            Some("pop_stale")
        );
        assert_eq!(
            code(verify_proof(
                &h,
                &p,
                &target("GET", "https://gw.example/a"),
                at(989)
            )),
            Some("pop_stale")
        );
        let with_token = ProofTarget {
            access_token: Some("tok"),
            ..target("GET", "https://gw.example/a")
        };
        assert_eq!(
            code(verify_proof(&h, &p, &with_token, at(1000))),
            Some("pop_invalid")
        );
        let bound = make_proof(
            &k,
            "GET",
            "https://gw.example/a",
            Some("tok"),
            "j",
            at(1000),
        );
        assert_eq!(code(verify_proof(&h, &bound, &with_token, at(1000))), None);
    }

    #[test]
    fn a_server_requiring_nonces_accepts_only_its_own_recent_ones() {
        let k = key(1);
        let (ours, theirs) = (Nonces::new([7; 32]), Nonces::new([8; 32]));
        let t = ProofTarget {
            nonce: Some(&ours),
            ..target("GET", "https://gw.example/a")
        };
        let code = |p: &str, now: i64| {
            verify_proof(&holder(&k), p, &t, at(now))
                .err()
                .map(|e| e.code())
        };
        let none = make_proof(&k, "GET", "https://gw.example/a", None, "j", at(1000));
        assert_eq!(code(&none, 1000), Some("pop_nonce_required"));
        let n = ours.current(at(1000));
        let good = make_proof_with_nonce(
            &k,
            "GET",
            "https://gw.example/a",
            None,
            Some(&n),
            "j",
            at(1000),
        );
        assert_eq!(code(&good, 1000), None);
        let foreign = theirs.current(at(1000));
        let bad = make_proof_with_nonce(
            &k,
            "GET",
            "https://gw.example/a",
            None,
            Some(&foreign),
            "j",
            at(1000),
        );
        assert_eq!(code(&bad, 1000), Some("pop_nonce_required"));
        // A nonce two windows old is no longer current.
        let old = ours.current(at(850));
        let late = make_proof_with_nonce(
            &k,
            "GET",
            "https://gw.example/a",
            None,
            Some(&old),
            "j",
            at(1000),
        );
        assert_eq!(code(&late, 1000), Some("pop_nonce_required"));
        assert!(!ours.accepts("not base64!", at(1000)));
    }

    #[test]
    fn an_enforcement_point_that_names_no_method_or_url_accepts_no_proof() {
        let k = key(1);
        let p = make_proof(&k, "", "", None, "j", at(1000));
        let r = verify_proof(&holder(&k), &p, &target("", ""), at(1000));
        assert_eq!(r.err().map(|e| e.code()), Some("pop_invalid"));
        let p = make_proof(&k, "GET", "", None, "j", at(1000));
        let r = verify_proof(&holder(&k), &p, &target("GET", ""), at(1000));
        assert_eq!(r.err().map(|e| e.code()), Some("pop_invalid"));
    }

    #[test]
    fn a_proof_whose_header_names_the_holder_key_but_is_signed_by_another_is_refused() {
        let (holder_key, thief) = (key(1), key(2));
        let honest = make_proof(
            &holder_key,
            "GET",
            "https://gw.example/a",
            None,
            "j",
            at(1000),
        );
        let forged = make_proof(&thief, "GET", "https://gw.example/a", None, "j", at(1000));
        // The holder's header on the thief's payload and signature.
        let mut parts = forged.splitn(2, '.');
        let _ = parts.next();
        let rest = parts.next().unwrap_or_default();
        let head = honest.split('.').next().unwrap_or_default();
        let spliced = format!("{head}.{rest}");
        let r = verify_proof(
            &holder(&holder_key),
            &spliced,
            &target("GET", "https://gw.example/a"),
            at(1000),
        );
        assert_eq!(r.err().map(|e| e.code()), Some("pop_invalid"));
    }

    #[test]
    fn the_default_replay_cache_holds_every_proof_a_busy_gateway_can_still_be_shown() {
        // 16,000 proofs/s (more than a 2-core gateway checks) for as long
        // as each stays acceptable: at 200,000 a gateway at 14k/s refused
        // every proof after ~14 s of load.
        let live_at_16k_per_s = 16_000 * usize::try_from(PROOF_MAX_AGE_SECS).unwrap_or(0);
        assert!(DEFAULT_REPLAY_CAPACITY >= live_at_16k_per_s);
    }

    #[test]
    fn the_replay_cache_forgets_only_what_could_no_longer_be_accepted_and_fails_closed_when_full() {
        let cache = ReplayCache::new(2);
        let p = |jti: &str, iat: i64| Proof {
            jti: jti.into(),
            iat,
            key: "k".into(),
        };
        assert_eq!(cache.admit(&p("a", 100), at(100)), Ok(()));
        assert_eq!(cache.admit(&p("b", 100), at(100)), Ok(()));
        assert_eq!(cache.admit(&p("a", 100), at(100)), Err(PopError::Replayed));
        assert_eq!(
            cache.admit(&p("c", 100), at(100)),
            Err(PopError::ReplayCacheFull)
        );
        assert_eq!(PopError::ReplayCacheFull.code(), "pop_replay_cache_full");
        // Until the window has passed for them, both are remembered: "a"
        // at the last second it could still be accepted is a replay.
        assert_eq!(cache.admit(&p("a", 100), at(160)), Err(PopError::Replayed));
        // Past it both are gone (a proof carrying "a" would be stale by then).
        assert_eq!(cache.admit(&p("c", 161), at(161)), Ok(()));
        assert_eq!(cache.len(), 1);
        // A proof from the future is remembered until it too is too old.
        assert_eq!(cache.admit(&p("f", 171), at(161)), Ok(()));
        assert_eq!(cache.admit(&p("f", 171), at(231)), Err(PopError::Replayed));
    }
}
