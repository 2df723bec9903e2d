//! The service's shared state, and opening it from a configuration.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use mandate_core::chain::Verifier;
use mandate_core::id::MandateId;
use mandate_core::keys::{Algorithm, KeySet, PrivateJwk, SigningKey};
use mandate_store::Store;

use crate::auth::Issuers;
use crate::config::{Config, LOCAL_ISSUER};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// A webhook source's tenant and secret.
pub struct Webhook {
    /// The tenant its events go to.
    pub tenant: String,
    /// The HMAC secret.
    pub secret: mandate_core::keys::Secret,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// The `iss` of issued mandates.
    pub issuer: String,
    /// The durable store.
    pub store: Arc<Store>,
    /// The authority's signing keys over time (rotation).
    pub keys: crate::keyring::Live,
    /// The key audit checkpoints are signed with (`authority.jwk`).
    pub checkpoint_key: mandate_core::keys::VerifyingKey,
    /// Verifies presented mandates (trusting the authority's key).
    pub verifier: Verifier,
    /// Trusted identity issuers.
    pub issuers: Issuers,
    /// Webhook sources by name.
    pub webhooks: HashMap<String, Webhook>,
    /// Mission state in memory.
    pub registry: RwLock<Registry>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Woken after every commit that may have emitted signals.
    pub signals: tokio::sync::Notify,
    /// Console sessions.
    pub sessions: crate::console::Sessions,
    /// DPoP proofs seen, so each is accepted once.
    pub replay: mandate_core::pop::ReplayCache,
    /// Checks the DPoP proof signatures of concurrent decisions together,
    /// off the async workers.
    pub signatures: mandate_core::batch::SignatureBatcher,
    /// Whether other replicas share the database, and this one's push lease.
    pub cluster: crate::cluster::Membership,
    /// Push streams whose delivery task runs (one task per stream).
    pub pushers: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The token endpoint's DPoP nonces (when `dpop_nonce`).
    pub nonces: mandate_core::pop::Nonces,
    /// Console sign-ins waiting for the IdP's callback.
    pub oidc: crate::console::oidc::PendingLogins,
}

/// The authority's key file in a data directory.
#[must_use]
pub fn authority_key_path(dir: &Path) -> std::path::PathBuf {
    dir.join("authority.jwk")
}

/// The local identity issuer's key file.
#[must_use]
pub fn issuer_key_path(dir: &Path) -> std::path::PathBuf {
    dir.join("local-issuer.jwk")
}

/// The key of the token endpoint's DPoP nonces, derived from the
/// authority's signing key: every replica shares that key, so a nonce one
/// replica handed out is accepted by the others (a client behind a load
/// balancer is not sent back for a new nonce at every hop), and no one
/// without the key can make one. Domain-separated from every signature.
#[must_use]
pub fn nonce_key(authority: &SigningKey) -> [u8; 32] {
    let jwk = authority.to_private_jwk();
    let mut input = b"mandate/dpop-nonce-key/v1\0".to_vec();
    input.extend_from_slice(jwk.d.expose().as_bytes());
    mandate_core::hash::sha256(&input)
}

/// Reads a private JWK, creating it (mode 0600) when absent.
///
/// The new key is written to a temporary file, synced, and renamed into
/// place (then the directory is synced): an interrupted first start (a kill,
/// a full disk) leaves either no key file or a whole one. An empty file, which
/// only an interrupted start of an older version leaves, is replaced.
///
/// # Errors
/// When the file cannot be read, written or parsed.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, String> {
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    match std::fs::read(path) {
        Ok(bytes) if !bytes.is_empty() => {
            let jwk: PrivateJwk =
                mandate_core::json::from_slice_strict(&bytes).map_err(|e| named(&e))?;
            SigningKey::from_private_jwk(&jwk).map_err(|e| named(&e))
        }
        Ok(_) => {
            let key = SigningKey::generate(Algorithm::EdDSA, &mut rand_core::OsRng);
            write_new_key(path, &key)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path),
        Err(e) => Err(named(&e)),
    }
}

/// A new key, put in place only if no other process put one there first
/// (`mandate serve` and `mandate token` starting together on a new data
/// directory): the file is linked into place, never renamed over, and the
/// loser reads the winner's key, so both sign and verify with one key.
fn create_key(path: &Path) -> Result<SigningKey, String> {
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let key = SigningKey::generate(Algorithm::EdDSA, &mut rand_core::OsRng);
    let text = serde_json::to_vec_pretty(&key.to_private_jwk()).map_err(|e| e.to_string())?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(
        ".new-{}-{:016x}",
        std::process::id(),
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    ));
    let tmp = std::path::PathBuf::from(tmp_name);
    write_private(&tmp, &text)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| named(&e))?;
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(path).map_err(|e| named(&e))?;
            let jwk: PrivateJwk =
                mandate_core::json::from_slice_strict(&bytes).map_err(|e| named(&e))?;
            SigningKey::from_private_jwk(&jwk).map_err(|e| named(&e))
        }
        Err(e) => Err(named(&e)),
    }
}

/// Writes a private key file (0600): a temporary file, synced, renamed into
/// place, the directory synced.
///
/// # Errors
/// When the file cannot be written.
pub fn write_new_key(path: &Path, key: &SigningKey) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(&key.to_private_jwk()).map_err(|e| e.to_string())?;
    write_private(path, &text)
}

/// Writes `bytes` to `path` atomically, readable by the owner only.
///
/// # Errors
/// When the file cannot be written.
pub fn write_private(path: &Path, text: &[u8]) -> Result<(), String> {
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let written = (|| -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        std::io::Write::write_all(&mut f, text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(named(&e));
    }
    Ok(())
}

impl AppState {
    /// The key that signs now.
    #[must_use]
    pub fn authority(&self) -> Arc<SigningKey> {
        self.keys.signer()
    }

    /// Moves to the keys of now (a rotation made on the data directory, a
    /// signing or retirement time reached): the verifier trusts exactly the
    /// published keys.
    pub fn tick_keys(&self) {
        if let Some(published) = self.keys.tick(crate::auth::now_secs() * 1000) {
            self.verifier.set_keys(published);
        }
    }

    /// Opens the data directory (creating keys and the database on first
    /// start) and loads mission state into memory.
    ///
    /// # Errors
    /// A message naming the file or setting that failed.
    pub fn open(mut config: Config) -> Result<Arc<Self>, String> {
        let max_sessions = config.max_console_sessions;
        let replay_capacity = config.replay_capacity;
        if config.proof_of_possession == mandate_core::pop::Mode::Bearer {
            tracing::warn!(
                "proof_of_possession = \"bearer\": decisions accept a mandate without a DPoP proof, \
                 so whoever copies one can use it. For development only."
            );
        }
        config.validate().map_err(|e| e.to_string())?;
        if !config.console_identity.is_empty()
            && config.listen_addr().is_ok_and(|a| !a.ip().is_loopback())
        {
            tracing::warn!(
                identities = config.console_identity.len(),
                "console_identity_on_any_address = true: anyone who reaches this address can sign \
                 in to the console as a configured local identity with one click. For a \
                 demonstration only; use console_oidc in production."
            );
        }
        crate::tls::set_outbound_ca(config.outbound_ca_file.as_deref())?;
        if let Some(o) = config.console_oidc.as_mut() {
            o.discover().map_err(|e| format!("console_oidc: {e}"))?;
        }
        let dir = config.data_dir.clone();
        mandate_store::create_private_dir(&dir)
            .map_err(|e| format!("data_dir: {}: {e}", dir.display()))?;
        let authority = load_or_create_key(&authority_key_path(&dir))?;
        let checkpoint_key =
            SigningKey::from_private_jwk(&authority.to_private_jwk()).map_err(|e| e.to_string())?;
        let store = Arc::new(match &config.database {
            None => Store::open(&dir, checkpoint_key).map_err(|e| e.to_string())?,
            Some(url) => Store::open_postgres(&dir, url.expose(), checkpoint_key)
                .map_err(|e| format!("database {}: {e}", url.redacted()))?,
        });
        // The log's head before memory is loaded: a replica following others
        // replays everything after it (some of it twice, harmlessly).
        let loaded_at = store
            .read(mandate_store::audit::head)
            .map_err(|e| e.to_string())?
            .seq;
        let registry = store
            .read(|c| Registry::load(c).map_err(mandate_store::StoreError::Corrupt))
            .map_err(|e| e.to_string())?;
        let cluster = if config.database.is_some() {
            crate::cluster::Membership::shared(loaded_at)
        } else {
            crate::cluster::Membership::alone()
        };

        let ring = crate::keyring::Live::open(&dir, crate::auth::now_secs() * 1000)?;
        let checkpoint_verifying = authority.verifying_key().map_err(|e| e.to_string())?;
        let issuer = config.issuer();
        let verifier = Verifier::new((*ring.published()).clone()).with_issuer(issuer.clone());

        let issuers = Issuers::default();
        if config.local_issuer {
            let local = load_or_create_key(&issuer_key_path(&dir))?;
            let mut ks = KeySet::new();
            ks.insert(local.verifying_key().map_err(|e| e.to_string())?);
            issuers.trust(
                LOCAL_ISSUER,
                crate::auth::Trusted {
                    keys: crate::idp::IssuerKeys::from_keyset(&ks)?,
                    audience: crate::config::AUDIENCE.to_owned(),
                    claims: crate::idp::ClaimMap::default(),
                },
            );
        }
        for (i, t) in config.trusted_issuer.iter().enumerate() {
            let field = if t.jwks_url.is_some() {
                "jwks_url"
            } else {
                "jwks_file"
            };
            let trusted = t
                .trusted()
                .map_err(|e| format!("trusted_issuer[{i}].{field}: {e}"))?;
            issuers.trust(&t.iss, trusted);
        }
        let mut webhooks = HashMap::new();
        for (i, w) in config.webhook.iter().enumerate() {
            let secret = std::fs::read_to_string(&w.secret_file)
                .map_err(|e| format!("webhook[{i}].secret_file: {e}"))?;
            webhooks.insert(
                w.name.clone(),
                Webhook {
                    tenant: w.tenant.clone(),
                    secret: mandate_core::keys::Secret::new(secret.trim().to_owned()),
                },
            );
        }
        Ok(Arc::new(Self {
            config,
            issuer,
            store,
            keys: ring,
            checkpoint_key: checkpoint_verifying,
            verifier,
            issuers,
            webhooks,
            registry: RwLock::new(registry),
            metrics: Metrics::default(),
            signals: tokio::sync::Notify::new(),
            sessions: crate::console::Sessions::new(max_sessions),
            replay: mandate_core::pop::ReplayCache::new(replay_capacity),
            signatures: mandate_core::batch::SignatureBatcher::start()
                .map_err(|e| format!("signature batch thread: {e}"))?,
            cluster,
            pushers: std::sync::Mutex::new(std::collections::HashSet::new()),
            nonces: mandate_core::pop::Nonces::new(nonce_key(&authority)),
            oidc: crate::console::oidc::PendingLogins::default(),
        }))
    }

    /// Re-reads mandates from the store into memory (after a commit).
    ///
    /// # Errors
    /// 500 when the store cannot be read.
    pub fn refresh(&self, ids: &[MandateId]) -> Result<(), ApiError> {
        self.signals.notify_waiters();
        let mut reg = self
            .registry
            .write()
            .map_err(|_| ApiError::internal("registry lock poisoned"))?;
        // Read while the registry is locked: two refreshes cannot apply out
        // of order.
        let records = self
            .store
            .read(|c| Registry::read(c, ids).map_err(mandate_store::StoreError::Corrupt))
            .map_err(ApiError::internal)?;
        reg.replace(records);
        Ok(())
    }

    /// Runs `f` with the registry read-locked.
    ///
    /// # Errors
    /// 500 when the lock is poisoned.
    pub fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> T) -> Result<T, ApiError> {
        let reg = self
            .registry
            .read()
            .map_err(|_| ApiError::internal("registry lock poisoned"))?;
        Ok(f(&reg))
    }

    /// Runs `f` with the registry write-locked.
    ///
    /// # Errors
    /// 500 when the lock is poisoned.
    pub fn with_registry_mut<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> Result<T, ApiError> {
        let mut reg = self
            .registry
            .write()
            .map_err(|_| ApiError::internal("registry lock poisoned"))?;
        Ok(f(&mut reg))
    }
}

#[cfg(test)]
mod tests {
    use mandate_core::keys::{Algorithm, SigningKey};
    use mandate_core::pop::Nonces;
    use mandate_core::timestamp::UnixTime;

    use super::{load_or_create_key, nonce_key};

    #[test]
    fn processes_creating_a_key_at_once_all_end_up_with_the_one_in_the_file() {
        // `mandate serve` and `mandate token` on a new data directory: each
        // may find no key and make one; only one may be put in place, and
        // every one of them must use it.
        for round in 0..20 {
            let dir = std::env::temp_dir()
                .join(format!("mandate-key-race-{}-{round}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("local-issuer.jwk");
            let barrier = std::sync::Barrier::new(4);
            let keys: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            let k = load_or_create_key(&path).unwrap();
                            k.verifying_key().unwrap().kid().to_owned()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let on_disk = load_or_create_key(&path).unwrap();
            let kid = on_disk.verifying_key().unwrap().kid().to_owned();
            assert!(keys.iter().all(|k| *k == kid), "{keys:?} vs {kid}");
            let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
            assert_eq!(left.len(), 1, "temporary files left: {left:?}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_dpop_nonce_from_one_replica_is_accepted_by_another_and_by_no_other_authority() {
        let now = UnixTime::from_secs(1_800_000_000).unwrap();
        let replica_1 = Nonces::new(nonce_key(&SigningKey::from_seed(Algorithm::EdDSA, [4; 32])));
        let replica_2 = Nonces::new(nonce_key(&SigningKey::from_seed(Algorithm::EdDSA, [4; 32])));
        let elsewhere = Nonces::new(nonce_key(&SigningKey::from_seed(Algorithm::EdDSA, [5; 32])));
        let nonce = replica_1.current(now);
        assert!(replica_2.accepts(&nonce, now));
        assert!(!elsewhere.accepts(&nonce, now));
        // The key is not the signing key's secret itself.
        let jwk = SigningKey::from_seed(Algorithm::EdDSA, [4; 32]).to_private_jwk();
        assert_ne!(
            nonce_key(&SigningKey::from_seed(Algorithm::EdDSA, [4; 32])).to_vec(),
            jwk.d.expose().as_bytes().to_vec()
        );
    }
}
