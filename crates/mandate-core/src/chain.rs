//! Delegation chains: issuing a root, deriving a child offline, and verifying
//! a presented chain back to an authority-signed root with no callback.
//!
//! A presented mandate is one string: the compact JWS of the root, then each
//! descendant's, joined by `~` (a character base64url never uses):
//! `root~child~grandchild`. A root is an ordinary JWT that any JWT library can
//! verify with the authority's JWKS. Each child is signed by the key its
//! parent binds (`agent.cnf.jwk`) and names, in `delegation_chain`, every
//! ancestor with the SHA-256 of its JWS, so a child cannot be spliced onto
//! another parent.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::attenuation::{self, Violation};
use crate::condition::{CompiledCondition, ConditionError};
use crate::hash::sha256_b64;
use crate::id::MandateId;
use crate::json::JsonError;
use crate::jws::{self, JwsError};
use crate::keys::{Algorithm, KeySet, SigningKey, VerifyingKey};
use crate::model::{
    Agent, AuthorizationDetail, ChainLink, Condition, Delegation, DiscoveryAllowance, MANDATE_TYP,
    MandateClaims, TerminalEvent, TokenBinding,
};
use crate::timestamp::UnixTime;
use crate::validate::{CheckConditions, MAX_CHAIN_DEPTH, Problem, Problems, validate};

/// The separator between the JWSs of a presented chain.
pub const CHAIN_SEPARATOR: char = '~';
/// Largest presented chain, in bytes.
pub const MAX_PRESENTED_BYTES: usize = 256 * 1024;

/// Why a presented chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Larger than [`MAX_PRESENTED_BYTES`].
    #[error("presented mandate is larger than {MAX_PRESENTED_BYTES} bytes")]
    TooLarge,
    /// More links than [`MAX_CHAIN_DEPTH`] + 1.
    #[error("chain is deeper than {MAX_CHAIN_DEPTH} hops")]
    TooDeep,
    /// A JWS in the chain was refused.
    #[error("mandate {index} of the chain: {error}")]
    Jws {
        /// Position in the chain (0 = root).
        index: usize,
        /// Why.
        error: JwsError,
    },
    /// A payload is not a well-formed mandate.
    #[error("mandate {index} of the chain: {error}")]
    Claims {
        /// Position in the chain.
        index: usize,
        /// Where and why.
        error: JsonError,
    },
    /// A mandate breaks a validation rule.
    #[error("mandate {index} of the chain: {problems}")]
    Invalid {
        /// Position in the chain.
        index: usize,
        /// Every problem.
        problems: Problems,
    },
    /// The root was not issued by the expected authority.
    #[error("iss: `{0}` is not the trusted issuer")]
    IssuerUntrusted(String),
    /// A root that claims ancestors, or a child whose `delegation_chain` does
    /// not name exactly the presented ancestors.
    #[error(
        "mandate {index} of the chain: delegation_chain does not match the presented ancestors"
    )]
    ChainLinkMismatch {
        /// Position in the chain.
        index: usize,
    },
    /// The parent binds no holder key, so no child can be verified.
    #[error("mandate {index} of the chain: its parent has no agent.cnf.jwk to verify it with")]
    HolderKeyMissing {
        /// Position in the chain.
        index: usize,
    },
    /// A child exceeds its parent.
    #[error("mandate {index} of the chain: {}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Attenuation {
        /// Position in the chain.
        index: usize,
        /// Every way it exceeds the parent.
        violations: Vec<Violation>,
    },
}

impl ChainError {
    /// Every stable reason code this error stands for (one, except for
    /// attenuation, which names each exceeded dimension).
    #[must_use]
    pub fn codes(&self) -> Vec<String> {
        match self {
            ChainError::TooLarge => vec!["too_large".into()],
            ChainError::TooDeep => vec!["chain_too_deep".into()],
            ChainError::Jws { error, .. } => vec![error.code().into()],
            ChainError::Claims { error, .. } if error.duplicate => vec!["duplicate_member".into()],
            ChainError::Claims { .. } | ChainError::Invalid { .. } => {
                vec!["invalid_mandate".into()]
            }
            ChainError::IssuerUntrusted(_) => vec!["issuer_untrusted".into()],
            ChainError::ChainLinkMismatch { .. } => vec!["chain_link_mismatch".into()],
            ChainError::HolderKeyMissing { .. } => vec!["holder_key_missing".into()],
            ChainError::Attenuation { violations, .. } => {
                let mut codes: Vec<String> = violations.iter().map(Violation::code).collect();
                codes.dedup();
                codes
            }
        }
    }
}

/// One mandate of a chain that was parsed but whose signature was not
/// checked: for inspection only.
#[derive(Debug, Clone)]
pub struct UnverifiedMandate {
    /// The claims.
    pub claims: MandateClaims,
    /// The header's algorithm.
    pub alg: Algorithm,
    /// The header's key id.
    pub kid: Option<String>,
    /// SHA-256 of the JWS, base64url.
    pub jws_sha256: String,
}

fn all_algorithms() -> BTreeSet<Algorithm> {
    [Algorithm::EdDSA, Algorithm::ES256].into()
}

/// Splits a presented chain into its JWSs, bounded in size and depth.
///
/// # Errors
/// Too large or too deep.
pub fn split(presented: &str) -> Result<Vec<&str>, ChainError> {
    if presented.len() > MAX_PRESENTED_BYTES {
        return Err(ChainError::TooLarge);
    }
    let parts: Vec<&str> = presented.trim().split(CHAIN_SEPARATOR).collect();
    if parts.len() > MAX_CHAIN_DEPTH + 1 {
        return Err(ChainError::TooDeep);
    }
    Ok(parts)
}

/// Decodes the JWS of a mandate (the `index`-th of its chain) and reads its
/// claims: refused as [`jws::decode`] refuses (a duplicate member, excess
/// depth, an inexact number among them), or as claims that do not fit.
fn decode_mandate<'a>(
    index: usize,
    part: &'a str,
    allowed: &BTreeSet<Algorithm>,
) -> Result<(jws::DecodedJws<'a>, MandateClaims), ChainError> {
    jws::decode_typed(part, allowed, MANDATE_TYP).map_err(|e| match e {
        jws::TypedError::Jws(error) => ChainError::Jws { index, error },
        jws::TypedError::Payload(error) => ChainError::Claims { index, error },
    })
}

/// Parses a presented chain **without verifying any signature**, for
/// inspection and for a holder deriving a child from its own mandate.
///
/// # Errors
/// When a JWS or its claims cannot be read.
pub fn parse_unverified(presented: &str) -> Result<Vec<UnverifiedMandate>, ChainError> {
    split(presented)?
        .into_iter()
        .enumerate()
        .map(|(index, part)| {
            let (d, claims) = decode_mandate(index, part, &all_algorithms())?;
            Ok(UnverifiedMandate {
                claims,
                alg: d.alg,
                kid: d.kid,
                jws_sha256: sha256_b64(part.as_bytes()),
            })
        })
        .collect()
}

/// A mandate whose signature, chain position and attenuation were verified.
#[derive(Debug, Clone)]
pub struct VerifiedMandate {
    claims: MandateClaims,
    /// `None` for the leaf: nothing in the chain links to it, and hashing
    /// its JWS would only cost (SHA-256 over ~2.4 KB).
    jws_sha256: Option<String>,
}

impl VerifiedMandate {
    /// The claims.
    #[must_use]
    pub fn claims(&self) -> &MandateClaims {
        &self.claims
    }

    /// The mandate's id.
    #[must_use]
    pub fn id(&self) -> &MandateId {
        &self.claims.mandate_id
    }

    /// SHA-256 of its JWS, base64url, as its child's `delegation_chain`
    /// names it; `None` for the chain's leaf, which has no child in the
    /// chain (hash the leaf's JWS with [`crate::hash::sha256_b64`] to derive
    /// from it: [`Parent::parse`] does).
    #[must_use]
    pub fn jws_sha256(&self) -> Option<&str> {
        self.jws_sha256.as_deref()
    }
}

/// A condition of the leaf, with the index of the chain mandate that first
/// imposed it (whose state its `on_failure` changes).
#[derive(Debug, Clone)]
pub struct ChainCondition {
    /// The compiled condition.
    pub condition: CompiledCondition,
    /// Index in the chain of the mandate that introduced it.
    pub origin: usize,
}

/// A verified chain, root first. Only [`Verifier::verify`] makes one.
#[derive(Debug)]
pub struct VerifiedChain {
    mandates: Vec<VerifiedMandate>,
    conditions: Vec<ChainCondition>,
    reads: Reads,
    ids: Arc<[MandateId]>,
    holder: std::sync::OnceLock<Option<VerifyingKey>>,
    /// SHA-256 of the leaf's JWS, once a chain below this one needed it
    /// (the link its next mandate names): hashed once however many
    /// sub-agents' chains are verified below this one.
    leaf_jws_sha256: std::sync::OnceLock<String>,
}

/// Which reserved variables the leaf's conditions read, so a decision binds
/// only those.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reads {
    pub action: bool,
    pub resource: bool,
    pub context: bool,
    pub now: bool,
    pub mandate: bool,
}

impl VerifiedChain {
    /// Every mandate, root first.
    #[must_use]
    pub fn mandates(&self) -> &[VerifiedMandate] {
        &self.mandates
    }

    /// The holder's mandate (the last one).
    #[must_use]
    pub fn leaf(&self) -> &VerifiedMandate {
        // A verified chain is never empty: `verify` refuses an empty string.
        let last = self.mandates.len().saturating_sub(1);
        #[expect(clippy::indexing_slicing, reason = "non-empty by construction")]
        &self.mandates[last]
    }

    /// The authority-signed root.
    #[must_use]
    pub fn root(&self) -> &VerifiedMandate {
        #[expect(clippy::indexing_slicing, reason = "non-empty by construction")]
        &self.mandates[0]
    }

    /// The ids of the chain, root first.
    #[must_use]
    pub fn ids(&self) -> Vec<MandateId> {
        self.ids.to_vec()
    }

    /// The chain's mandate ids, root first, shared (what a decision names).
    #[must_use]
    pub fn shared_ids(&self) -> Arc<[MandateId]> {
        Arc::clone(&self.ids)
    }

    /// The leaf's compiled conditions (which include every ancestor's).
    #[must_use]
    pub fn conditions(&self) -> &[ChainCondition] {
        &self.conditions
    }

    /// Whether any condition iterates (has a comprehension), so that a
    /// decision may take up to the evaluation budget rather than
    /// microseconds: an async caller runs such a decision off its worker.
    #[must_use]
    pub fn iterates(&self) -> bool {
        self.conditions.iter().any(|c| c.condition.iterates())
    }

    /// The leaf's holder key (`agent.cnf.jwk`), decoded once per chain:
    /// the key every proof of possession must be signed with.
    #[must_use]
    pub fn holder_key(&self) -> Option<&VerifyingKey> {
        self.holder
            .get_or_init(|| {
                let cnf = self.leaf().claims().agent.cnf.as_ref()?;
                VerifyingKey::from_jwk(&cnf.jwk).ok()
            })
            .as_ref()
    }

    pub(crate) fn reads(&self) -> Reads {
        self.reads
    }
}

/// How a verifier's chains were verified, counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyCounts {
    /// Found verified in the cache: no signature checked.
    pub cached: u64,
    /// Verified below a cached leading part: only the mandates after it.
    pub below_cached: u64,
    /// Verified from the root: every mandate.
    pub whole: u64,
}

/// [`VerifyCounts`] as they are kept, updated from any thread.
#[derive(Debug, Default)]
struct Counters {
    cached: std::sync::atomic::AtomicU64,
    below_cached: std::sync::atomic::AtomicU64,
    whole: std::sync::atomic::AtomicU64,
}

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A cached chain and the exact string it was verified from.
type CacheEntry = (Arc<str>, Arc<VerifiedChain>);

/// The verified chains a verifier keeps.
type ChainCache = crate::cache::Generations<u64, CacheEntry, PreHashed>;

/// The entry of `cache` stored for exactly `presented` (whose keyed hash is
/// `key`), and whether it was in the previous generation.
fn cached_chain<'a>(
    cache: &'a ChainCache,
    key: u64,
    presented: &str,
) -> Option<(&'a CacheEntry, bool)> {
    cache.find(|map| {
        map.get(&key)
            .filter(|(stored, _)| stored.as_ref() == presented)
    })
}

/// Verifies presented chains against the authority's keys, caching verified
/// chains by the exact presented string (found by a keyed hash of its end,
/// confirmed by comparing every byte) so a second decision on the same chain
/// does no signature work.
///
/// The trusted keys can be replaced while the verifier serves (a rotated
/// authority key: [`Verifier::set_keys`]); replacing them empties the cache.
pub struct Verifier {
    keys: RwLock<Arc<KeySet>>,
    /// Set when a chain named a `kid` not among the keys: whoever keeps the
    /// keys current may fetch them again ([`Verifier::take_unknown_kid`]).
    unknown_kid: std::sync::atomic::AtomicBool,
    /// Counts key replacements: a chain verified under keys since replaced
    /// is not cached.
    generation: std::sync::atomic::AtomicU64,
    algorithms: BTreeSet<Algorithm>,
    issuer: Option<String>,
    cache: RwLock<ChainCache>,
    /// How [`Verifier::verify`] answered: see [`VerifyCounts`].
    counts: Counters,
    /// Keys the cache's hash (SipHash with a random key per verifier), so
    /// that nobody can craft strings that collide to thrash it.
    cache_hasher: std::collections::hash_map::RandomState,
    cache_capacity: usize,
    programs: RwLock<crate::cache::Generations<String, CompiledCondition>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys())
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier trusting `keys` for roots, accepting EdDSA only (add ES256
    /// with [`Verifier::with_algorithms`]).
    #[must_use]
    pub fn new(keys: KeySet) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
            unknown_kid: std::sync::atomic::AtomicBool::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
            algorithms: [Algorithm::EdDSA].into(),
            issuer: None,
            cache: RwLock::new(ChainCache::default()),
            counts: Default::default(),
            cache_hasher: std::collections::hash_map::RandomState::new(),
            cache_capacity: 10_000,
            programs: RwLock::new(crate::cache::Generations::default()),
        }
    }

    /// The trusted keys now.
    #[must_use]
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().map(|k| Arc::clone(&k)).unwrap_or_default()
    }

    /// Trusts `keys` from now on (a rotation published, a key retired):
    /// chains verified under the old set are verified again.
    pub fn set_keys(&self, keys: KeySet) {
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
        if let Ok(mut cache) = self.cache.write() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            cache.clear();
        }
    }

    /// Whether a chain named an unknown `kid` since the last call (and
    /// clears it).
    pub fn take_unknown_kid(&self) -> bool {
        self.unknown_kid
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the algorithm allow-list.
    #[must_use]
    pub fn with_algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algs.into_iter().collect();
        self
    }

    /// Requires roots to carry this `iss`.
    #[must_use]
    pub fn with_issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    /// Bounds the verified-chain cache (0 disables it). It keeps at most
    /// `n` chains, in two generations of `n / 2`: a chain used within the
    /// last generation stays, whatever else is presented.
    #[must_use]
    pub fn with_cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// Verifies a presented chain, from the cache when it was verified before;
    /// else as [`Verifier::verify_unstored`] does (building on a cached
    /// leading part of it), then stores it.
    ///
    /// The cache is keyed by a keyed hash (SipHash, random key) of the
    /// chain's signature segments (short, so the lookup is cheap), and a hit
    /// counts only when the stored string equals the presented one byte for
    /// byte: a collision is a miss, never someone else's chain.
    ///
    /// # Errors
    /// See [`ChainError`].
    pub fn verify(&self, presented: &str) -> Result<Arc<VerifiedChain>, ChainError> {
        if presented.len() > MAX_PRESENTED_BYTES {
            return Err(ChainError::TooLarge);
        }
        let presented = presented.trim();
        let key = self.cache_key(presented);
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let found = if self.cache_capacity == 0 {
            None
        } else {
            self.cache.read().ok().and_then(|cache| {
                cached_chain(&cache, key, presented).map(|((stored, chain), previous)| {
                    // The string is kept again only to carry the chain into
                    // the current generation.
                    (Arc::clone(chain), previous.then(|| Arc::clone(stored)))
                })
            })
        };
        if let Some((chain, carried)) = found {
            if let Some(stored) = carried {
                self.store(key, (stored, Arc::clone(&chain)), generation);
            }
            bump(&self.counts.cached);
            return Ok(chain);
        }
        let chain = Arc::new(self.verify_unstored(presented)?);
        self.store(key, (Arc::from(presented), Arc::clone(&chain)), generation);
        Ok(chain)
    }

    /// Puts a verified chain into the cache's current generation, unless
    /// the trusted keys were replaced since `generation` was read (it was
    /// verified, or found, under the keys before).
    fn store(&self, key: u64, entry: CacheEntry, generation: u64) {
        if self.cache_capacity > 0
            && let Ok(mut cache) = self.cache.write()
            && self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation
        {
            cache.insert(key, entry, self.cache_capacity);
        }
    }

    /// Verifies without consulting or filling the cache.
    ///
    /// # Errors
    /// See [`ChainError`].
    pub fn verify_uncached(&self, presented: &str) -> Result<VerifiedChain, ChainError> {
        let parts = split(presented)?;
        self.verify_parts(&parts, Vec::new())
    }

    /// Verifies a presented chain as [`Verifier::verify`] does on a miss,
    /// without storing the result: when a leading part of the chain (the
    /// string up to one of its `~`) is in the cache, that part's mandates
    /// are taken from it and only the mandates after it are verified.
    ///
    /// # Errors
    /// See [`ChainError`].
    pub fn verify_unstored(&self, presented: &str) -> Result<VerifiedChain, ChainError> {
        let presented = presented.trim();
        match self.cached_prefix(presented) {
            Some(prefix) => {
                bump(&self.counts.below_cached);
                let parts = split(presented)?;
                let mut base = prefix.mandates.clone();
                // The prefix's leaf becomes a parent: its child links to it
                // by the hash of its JWS, which a leaf does not keep.
                let at = base.len().saturating_sub(1);
                if let (Some(parent), Some(part)) = (base.last_mut(), parts.get(at)) {
                    let hash = prefix
                        .leaf_jws_sha256
                        .get_or_init(|| sha256_b64(part.as_bytes()));
                    parent.jws_sha256 = Some(hash.clone());
                }
                self.verify_parts(&parts, base)
            }
            None => {
                bump(&self.counts.whole);
                self.verify_uncached(presented)
            }
        }
    }

    /// How the chains presented to [`Verifier::verify`] and
    /// [`Verifier::verify_unstored`] were verified so far (whether or not
    /// they verified).
    #[must_use]
    pub fn counts(&self) -> VerifyCounts {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        VerifyCounts {
            cached: get(&self.counts.cached),
            below_cached: get(&self.counts.below_cached),
            whole: get(&self.counts.whole),
        }
    }

    /// The cached chain of the longest leading part of `presented` that ends
    /// just before a `~`, if any: found as a whole chain is, by its keyed
    /// hash, and taken only when its string equals that part byte for byte.
    fn cached_prefix(&self, presented: &str) -> Option<Arc<VerifiedChain>> {
        if self.cache_capacity == 0 {
            return None;
        }
        let cache = self.cache.read().ok()?;
        if cache.is_empty() {
            return None;
        }
        presented
            .rmatch_indices(CHAIN_SEPARATOR)
            .take(MAX_CHAIN_DEPTH)
            .find_map(|(at, _)| {
                let prefix = presented.get(..at)?;
                let ((_, chain), _) = cached_chain(&cache, self.cache_key(prefix), prefix)?;
                Some(Arc::clone(chain))
            })
    }

    /// Verifies `parts` after the first `base.len()`, whose mandates `base`
    /// holds already verified (the leading part of a chain found in the
    /// cache, its leaf's JWS hash filled in), and builds the whole chain.
    fn verify_parts(
        &self,
        parts: &[&str],
        base: Vec<VerifiedMandate>,
    ) -> Result<VerifiedChain, ChainError> {
        let keys = self.keys();
        let skip = base.len();
        let mut mandates = base;
        mandates.reserve(parts.len().saturating_sub(skip));
        // The authority's keys are borrowed from `keys`; a holder key is
        // decoded from its parent's claims, and owned.
        let mut pending: Vec<(Cow<'_, VerifyingKey>, &str, Vec<u8>)> =
            Vec::with_capacity(parts.len());
        let last = parts.len().saturating_sub(1);
        for (index, part) in parts.iter().enumerate().skip(skip) {
            let (d, claims) = decode_mandate(index, part, &self.algorithms)?;
            validate(&claims, CheckConditions::Skip)
                .map_err(|problems| ChainError::Invalid { index, problems })?;
            let key = match mandates.last() {
                None => {
                    if let Some(iss) = &self.issuer
                        && &claims.iss != iss
                    {
                        return Err(ChainError::IssuerUntrusted(claims.iss.clone()));
                    }
                    if !claims.delegation_chain.is_empty() {
                        return Err(ChainError::ChainLinkMismatch { index });
                    }
                    let kid = d.kid.as_deref().ok_or(ChainError::Jws {
                        index,
                        error: JwsError::KidMissing,
                    })?;
                    keys.get(kid).map(Cow::Borrowed).ok_or_else(|| {
                        self.unknown_kid
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        ChainError::Jws {
                            index,
                            error: JwsError::UnknownKid(kid.to_owned()),
                        }
                    })?
                }
                Some(parent) => {
                    if !links_to(parent, &claims.delegation_chain) {
                        return Err(ChainError::ChainLinkMismatch { index });
                    }
                    // A child whose `kid` names a trusted authority key is a
                    // discovery grant the authority signed: it is checked
                    // against the parent's discovery allowance instead.
                    let authority_key = d.kid.as_deref().and_then(|k| keys.get(k));
                    if let Some(key) = authority_key {
                        let violations =
                            attenuation::check_discovery_grant(&parent.claims, &claims);
                        if !violations.is_empty() {
                            return Err(ChainError::Attenuation { index, violations });
                        }
                        if key.algorithm() != d.alg {
                            return Err(ChainError::Jws {
                                index,
                                error: JwsError::AlgKeyMismatch {
                                    header: d.alg.as_str().into(),
                                    key: key.algorithm(),
                                },
                            });
                        }
                        pending.push((Cow::Borrowed(key), d.signing_input, d.signature));
                        mandates.push(VerifiedMandate {
                            claims,
                            jws_sha256: (index != last).then(|| sha256_b64(part.as_bytes())),
                        });
                        continue;
                    }
                    let violations = attenuation::check(&parent.claims, &claims);
                    if !violations.is_empty() {
                        return Err(ChainError::Attenuation { index, violations });
                    }
                    let cnf = parent
                        .claims
                        .agent
                        .cnf
                        .as_ref()
                        .ok_or(ChainError::HolderKeyMissing { index })?;
                    let key = VerifyingKey::from_jwk(&cnf.jwk)
                        .map_err(|_| ChainError::HolderKeyMissing { index })?;
                    let key = Cow::<VerifyingKey>::Owned(key);
                    if let Some(kid) = &d.kid
                        && kid != key.kid()
                    {
                        return Err(ChainError::Jws {
                            index,
                            error: JwsError::UnknownKid(kid.clone()),
                        });
                    }
                    key
                }
            };
            if key.algorithm() != d.alg {
                return Err(ChainError::Jws {
                    index,
                    error: JwsError::AlgKeyMismatch {
                        header: d.alg.as_str().into(),
                        key: key.algorithm(),
                    },
                });
            }
            pending.push((key, d.signing_input, d.signature));
            mandates.push(VerifiedMandate {
                claims,
                jws_sha256: (index != last).then(|| sha256_b64(part.as_bytes())),
            });
        }
        verify_signatures(&pending)?;
        let leaf = mandates.last().ok_or(ChainError::TooDeep)?;
        let mut conditions = Vec::with_capacity(leaf.claims.conditions.len());
        let mut reads = Reads::default();
        for (i, c) in leaf.claims.conditions.iter().enumerate() {
            let condition = self
                .compile(c)
                .map_err(|e: ConditionError| ChainError::Invalid {
                    index: last,
                    problems: Problems(vec![Problem {
                        path: format!("conditions[{i}].expression"),
                        message: e.to_string(),
                    }]),
                })?;
            for var in condition.variables() {
                match var.as_str() {
                    "action" => reads.action = true,
                    "resource" => reads.resource = true,
                    "context" => reads.context = true,
                    "now" => reads.now = true,
                    "mandate" => reads.mandate = true,
                    _ => {}
                }
            }
            let origin = mandates
                .iter()
                .position(|m| m.claims.conditions.iter().any(|pc| pc.id == c.id))
                .unwrap_or(last);
            conditions.push(ChainCondition { condition, origin });
        }
        Ok(VerifiedChain {
            ids: mandates.iter().map(|m| m.id().clone()).collect(),
            mandates,
            conditions,
            reads,
            holder: std::sync::OnceLock::new(),
            leaf_jws_sha256: std::sync::OnceLock::new(),
        })
    }
}

impl Verifier {
    /// Compiles a condition, reusing the program of an identical expression
    /// seen before (conditions repeat across the mandates of one authority).
    fn compile(&self, c: &Condition) -> Result<CompiledCondition, ConditionError> {
        let found = self.programs.read().ok().and_then(|programs| {
            programs
                .find(|map| map.get(&c.expression))
                .map(|(p, previous)| (p.with_identity(c), previous))
        });
        let (compiled, store) = match found {
            Some(found) => found,
            None => (CompiledCondition::new(c)?, true),
        };
        if store
            && self.cache_capacity > 0
            && let Ok(mut programs) = self.programs.write()
        {
            programs.insert(
                c.expression.clone(),
                compiled.clone(),
                PROGRAM_CACHE_CAPACITY,
            );
        }
        Ok(compiled)
    }
}

/// SHA-256 over the signature segment of each JWS of a presented chain.
impl Verifier {
    /// The cache's key for a presented chain: a keyed hash of its length
    /// and its last [`CACHE_KEY_TAIL`] bytes (the leaf's signature). A hit is
    /// only taken after the whole stored string compares equal, so the key
    /// decides where to look, never what is trusted; and only verified
    /// chains are stored, so filling one slot with different strings would
    /// take different valid leaf signatures over the same tail.
    fn cache_key(&self, presented: &str) -> u64 {
        use std::hash::{BuildHasher as _, Hasher as _};
        let bytes = presented.as_bytes();
        let tail = bytes
            .get(bytes.len().saturating_sub(CACHE_KEY_TAIL)..)
            .unwrap_or(bytes);
        let mut h = self.cache_hasher.build_hasher();
        h.write_usize(bytes.len());
        h.write(tail);
        h.finish()
    }
}

/// Bytes at the end of a presented chain that key its cache slot: more than
/// an Ed25519 or ES256 signature in base64url (86 characters).
const CACHE_KEY_TAIL: usize = 128;

/// Builds the hasher of a map whose `u64` keys are already keyed hashes:
/// hashing them again would only cost time.
#[derive(Debug, Clone, Copy, Default)]
struct PreHashed;

impl std::hash::BuildHasher for PreHashed {
    type Hasher = PreHashedHasher;
    fn build_hasher(&self) -> PreHashedHasher {
        PreHashedHasher(0)
    }
}

/// Passes a `u64` key through; anything else is folded in with FNV-1a so the
/// hasher stays correct if it is ever handed bytes.
#[derive(Debug)]
struct PreHashedHasher(u64);

impl std::hash::Hasher for PreHashedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Most distinct condition expressions kept compiled by one verifier.
const PROGRAM_CACHE_CAPACITY: usize = 4096;

/// Checks every signature of a chain. When there are several and all are
/// Ed25519, they are checked together with batch verification (about three
/// quarters of the cost of checking each); if the batch fails, each is
/// checked alone with `verify_strict`'s rule to name the one that failed.
/// The batch check refuses what the strict one refuses on sight (a
/// non-canonical `S`, an `R` that is no point or has small order) but
/// checks a random combination of the equations without the cofactor: the
/// holder of a key with a torsion part could craft a signature that only
/// one of them accepts, which gains it nothing it could not sign honestly.
/// Weak (small-order) keys are refused when keys are decoded.
fn verify_signatures(pending: &[(Cow<'_, VerifyingKey>, &str, Vec<u8>)]) -> Result<(), ChainError> {
    if pending.len() > 1
        && VerifyingKey::verify_batch(
            pending
                .iter()
                .map(|(k, input, sig)| (&**k, input.as_bytes(), sig.as_slice())),
        )
    {
        return Ok(());
    }
    for (index, (key, input, sig)) in pending.iter().enumerate() {
        if !key.verify(input.as_bytes(), sig) {
            return Err(ChainError::Jws {
                index,
                error: JwsError::SignatureInvalid,
            });
        }
    }
    Ok(())
}

/// Whether a child's `delegation_chain` is exactly its parent's followed by
/// the link to the parent itself (its id, its holder, its JWS hash), as
/// [`child_claims`] writes it; compared in place, nothing built.
fn links_to(parent: &VerifiedMandate, links: &[ChainLink]) -> bool {
    let Some((last, earlier)) = links.split_last() else {
        return false;
    };
    // A parent is never the leaf, so its hash is there; were it missing, no
    // link would match (refused).
    earlier == parent.claims.delegation_chain.as_slice()
        && last.mandate_id == parent.claims.mandate_id
        && last.holder == parent.claims.agent.id
        && parent.jws_sha256.as_deref() == Some(last.jws_sha256.as_str())
}

/// Why a mandate could not be issued or derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The claims break validation rules.
    #[error("{0}")]
    Invalid(Problems),
    /// The child would exceed its parent.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Attenuation(Vec<Violation>),
    /// The parent chain could not be read.
    #[error("parent: {0}")]
    Parent(ChainError),
    /// The holder key is not the one the parent binds.
    #[error("holder key: does not match the parent's agent.cnf.jwk")]
    WrongHolderKey,
    /// A root must not name ancestors.
    #[error("delegation_chain: a root mandate has no ancestors")]
    RootWithChain,
}

impl IssueError {
    /// The stable reason codes.
    #[must_use]
    pub fn codes(&self) -> Vec<String> {
        match self {
            IssueError::Invalid(_) | IssueError::RootWithChain => vec!["invalid_mandate".into()],
            IssueError::Attenuation(v) => v.iter().map(Violation::code).collect(),
            IssueError::Parent(e) => e.codes(),
            IssueError::WrongHolderKey => vec!["holder_key_mismatch".into()],
        }
    }
}

/// Signs a root mandate with the authority's key after validating it.
///
/// # Errors
/// Invalid claims, or a root that names ancestors.
pub fn issue_root(key: &SigningKey, claims: &MandateClaims) -> Result<String, IssueError> {
    if !claims.delegation_chain.is_empty() {
        return Err(IssueError::RootWithChain);
    }
    validate(claims, CheckConditions::Compile).map_err(IssueError::Invalid)?;
    Ok(jws::sign(key, MANDATE_TYP, &payload(claims)?))
}

/// Signs a one-time discovery grant under the parent chain's leaf, as the
/// authority (whose key must be one the verifiers trust for roots). The
/// grant is checked against the parent's discovery allowance first.
///
/// # Errors
/// See [`IssueError`].
pub fn issue_discovery_grant(
    parent_presented: &str,
    authority: &SigningKey,
    spec: &ChildSpec,
    mandate_id: MandateId,
    now: UnixTime,
) -> Result<String, IssueError> {
    let parent = parent_of(parent_presented)?;
    let payload = child_payload(
        &parent,
        spec,
        mandate_id,
        now,
        attenuation::check_discovery_grant,
    )?;
    Ok(append_signed(
        parent_presented,
        authority,
        authority.kid(),
        &payload,
    ))
}

/// What a holder chooses for a child; everything else comes from the parent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildSpec {
    /// The child's id; generated when absent.
    #[serde(default)]
    pub mandate_id: Option<MandateId>,
    /// Who will hold the child (with its own `cnf.jwk` if it may delegate).
    pub agent: Agent,
    /// The narrowed scope.
    pub authorization_details: Vec<AuthorizationDetail>,
    /// Conditions added to the parent's.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The child's lifecycle.
    pub lifecycle: ChildLifecycle,
    /// The child's delegation rules.
    pub delegation: Delegation,
    /// Binding to the sub-agent's access token.
    #[serde(default)]
    pub token_binding: Option<TokenBinding>,
    /// A discovery allowance within the parent's.
    #[serde(default)]
    pub discovery: Option<DiscoveryAllowance>,
}

/// A child's lifecycle: its expiry and any terminal events it adds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildLifecycle {
    /// No later than the parent's.
    pub hard_expiry: UnixTime,
    /// Added to the parent's.
    #[serde(default)]
    pub terminal_events: Vec<TerminalEvent>,
    /// Usable once.
    #[serde(default)]
    pub one_time: bool,
}

/// Builds the child's claims: issuer, principal, purpose, conditions and
/// terminal events come from the parent (the child may add conditions and
/// events), `delegation_chain` is the parent's plus the parent itself.
#[must_use]
pub fn child_claims(
    parent: &MandateClaims,
    parent_jws_sha256: &str,
    spec: &ChildSpec,
    mandate_id: MandateId,
    now: UnixTime,
) -> MandateClaims {
    let mut conditions = parent.conditions.clone();
    conditions.extend(spec.conditions.iter().cloned());
    let mut terminal_events = parent.lifecycle.terminal_events.clone();
    for t in &spec.lifecycle.terminal_events {
        if !terminal_events.contains(t) {
            terminal_events.push(t.clone());
        }
    }
    let mut delegation_chain = parent.delegation_chain.clone();
    delegation_chain.push(ChainLink {
        mandate_id: parent.mandate_id.clone(),
        holder: parent.agent.id.clone(),
        jws_sha256: parent_jws_sha256.to_owned(),
    });
    let iat = now.max(parent.iat);
    MandateClaims {
        iss: parent.iss.clone(),
        iat,
        nbf: iat.max(parent.nbf),
        exp: spec.lifecycle.hard_expiry,
        jti: mandate_id.as_str().to_owned(),
        mandate_id,
        principal: parent.principal.clone(),
        agent: spec.agent.clone(),
        purpose: parent.purpose.clone(),
        authorization_details: spec.authorization_details.clone(),
        conditions,
        lifecycle: crate::model::Lifecycle {
            hard_expiry: spec.lifecycle.hard_expiry,
            terminal_events,
            on_expiry: parent.lifecycle.on_expiry,
            one_time: spec.lifecycle.one_time,
        },
        delegation: spec.delegation.clone(),
        delegation_chain,
        token_binding: spec.token_binding.clone(),
        discovery: spec.discovery.clone(),
        extensions: Default::default(),
    }
}

/// Derives a child offline: builds its claims from the parent chain's leaf
/// and `spec`, refuses it when it would exceed the parent (naming each
/// dimension), signs it with the holder key the parent binds, and returns
/// the new presented chain (`parent~child`).
///
/// The parent chain is parsed, not verified: the holder is deriving from its
/// own mandate, and every enforcement point verifies the whole result. A
/// holder deriving several children from one parent reads it once with
/// [`Parent::parse`].
///
/// # Errors
/// See [`IssueError`].
pub fn derive_child(
    parent_presented: &str,
    holder_key: &SigningKey,
    spec: &ChildSpec,
    mandate_id: MandateId,
    now: UnixTime,
) -> Result<String, IssueError> {
    Parent::parse(parent_presented)?.derive(holder_key, spec, mandate_id, now)
}

/// A presented chain read once to derive children from: its leaf parsed
/// (not verified; every enforcement point verifies the whole result) and
/// the chain bounded in depth. Every derivation applies every attenuation
/// rule and signs anew; only the reading of the parent is shared.
#[derive(Debug, Clone)]
pub struct Parent {
    presented: String,
    leaf: UnverifiedMandate,
}

impl Parent {
    /// Reads a presented chain.
    ///
    /// # Errors
    /// [`IssueError::Parent`] when the chain cannot be split, is too deep, or
    /// its leaf cannot be decoded or parsed.
    pub fn parse(presented: &str) -> Result<Self, IssueError> {
        let presented = presented.trim();
        Ok(Self {
            leaf: parent_of(presented)?,
            presented: presented.to_owned(),
        })
    }

    /// The leaf's claims, as read.
    #[must_use]
    pub fn claims(&self) -> &MandateClaims {
        &self.leaf.claims
    }

    /// Derives a child, as [`derive_child`] does.
    ///
    /// # Errors
    /// See [`IssueError`].
    pub fn derive(
        &self,
        holder_key: &SigningKey,
        spec: &ChildSpec,
        mandate_id: MandateId,
        now: UnixTime,
    ) -> Result<String, IssueError> {
        let parent = &self.leaf;
        // The holder key must be the one the parent binds: compared as key
        // material (the type and coordinates), with no point decoding.
        let bound = parent
            .claims
            .agent
            .cnf
            .as_ref()
            .ok_or(IssueError::WrongHolderKey)?;
        let held = holder_key.public_jwk();
        if bound.jwk.kty != held.kty
            || bound.jwk.crv != held.crv
            || bound.jwk.x != held.x
            || bound.jwk.y != held.y
        {
            return Err(IssueError::WrongHolderKey);
        }
        // The `kid` a verifier will look for: the parent's key's id (its
        // `kid`, else its thumbprint), as `VerifyingKey::from_jwk` names it.
        let kid = bound
            .jwk
            .kid
            .clone()
            .unwrap_or_else(|| bound.jwk.thumbprint());
        let payload = child_payload(parent, spec, mandate_id, now, attenuation::check)?;
        Ok(append_signed(&self.presented, holder_key, &kid, &payload))
    }
}

/// The leaf of a presented parent chain, parsed (not verified; only the
/// leaf is read) and bounded in depth.
fn parent_of(parent_presented: &str) -> Result<UnverifiedMandate, IssueError> {
    let parts = split(parent_presented).map_err(IssueError::Parent)?;
    if parts.len() > MAX_CHAIN_DEPTH {
        return Err(IssueError::Parent(ChainError::TooDeep));
    }
    let index = parts.len().saturating_sub(1);
    let part = parts
        .last()
        .ok_or(IssueError::Parent(ChainError::TooDeep))?;
    let (d, claims) = decode_mandate(index, part, &all_algorithms()).map_err(IssueError::Parent)?;
    Ok(UnverifiedMandate {
        claims,
        alg: d.alg,
        kid: d.kid,
        jws_sha256: sha256_b64(part.as_bytes()),
    })
}

/// Builds a child's claims, validates them, checks them against the parent
/// with `check`, and serializes them.
fn child_payload(
    parent: &UnverifiedMandate,
    spec: &ChildSpec,
    mandate_id: MandateId,
    now: UnixTime,
    check: fn(&MandateClaims, &MandateClaims) -> Vec<Violation>,
) -> Result<Vec<u8>, IssueError> {
    let claims = child_claims(&parent.claims, &parent.jws_sha256, spec, mandate_id, now);
    validate(&claims, CheckConditions::Skip).map_err(IssueError::Invalid)?;
    // Only what the child adds is new: its own conditions (the inherited
    // ones were compiled when the parent was made, and every verifier
    // compiles them again) and its holder's key.
    let inherited = parent.claims.conditions.len();
    let mut problems = Vec::new();
    for (i, c) in claims.conditions.iter().enumerate().skip(inherited) {
        if let Err(e) = crate::condition::compile(&c.expression) {
            problems.push(Problem {
                path: format!("conditions[{i}].expression"),
                message: e.to_string(),
            });
        }
    }
    if let Some(cnf) = &claims.agent.cnf
        && let Err(e) = VerifyingKey::from_jwk(&cnf.jwk)
    {
        problems.push(Problem {
            path: "agent.cnf.jwk".into(),
            message: e.to_string(),
        });
    }
    if let Some(problem) = claims
        .agent
        .cnf
        .as_ref()
        .and_then(|c| c.thumbprint_problem())
    {
        problems.push(Problem {
            path: "agent.cnf.x5t#S256".into(),
            message: problem.into(),
        });
    }
    if !problems.is_empty() {
        return Err(IssueError::Invalid(Problems(problems)));
    }
    let violations = check(&parent.claims, &claims);
    if !violations.is_empty() {
        return Err(IssueError::Attenuation(violations));
    }
    payload(&claims)
}

fn payload(claims: &MandateClaims) -> Result<Vec<u8>, IssueError> {
    // A mandate's claims are 1.5 to 2 KB: one allocation, rarely grown.
    let mut out = Vec::with_capacity(2048);
    serde_json::to_writer(&mut out, claims)
        .map(|()| out)
        .map_err(|e| {
            IssueError::Invalid(Problems(vec![Problem {
                path: ".".into(),
                message: e.to_string(),
            }]))
        })
}

/// `parent~child`, the child's JWS (`payload` signed by `key`, named `kid`)
/// encoded and signed in place after the separator.
fn append_signed(parent_presented: &str, key: &SigningKey, kid: &str, payload: &[u8]) -> String {
    let parent = parent_presented.trim();
    let mut out = String::with_capacity(parent.len() + 1);
    out.push_str(parent);
    out.push(CHAIN_SEPARATOR);
    jws::sign_into(&mut out, key, kid, MANDATE_TYP, payload);
    out
}
