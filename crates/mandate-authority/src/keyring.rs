//! The authority's signing keys over time: a ring of keys in the data
//! directory, each with the time it starts signing and the time it retires.
//!
//! A rotation ([`rotate`], `mandate keys rotate`) adds a key that is
//! *published* at once (in `/.well-known/jwks.json`, so enforcement points
//! fetch it) but *signs* only after `publish_secs`; every key that was
//! signing retires `overlap_secs` after the new one takes over. Until a key
//! retires, what it signed keeps verifying; after, it is in no published
//! set and nothing it signed verifies (a mandate it issued must be issued
//! again). [`retire`] ends a key at once (a compromised key).
//!
//! The running authority looks at the ring every second ([`Live::tick`]):
//! a rotation made by the CLI on the same data directory, or a time
//! reached, takes effect without a restart.
//!
//! Files: `keyring.json` (the ring, written atomically) and
//! `keys/<kid>.jwk` (each private key, 0600). A data directory without a
//! ring has one key, `authority.jwk`, signing since ever.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mandate_core::keys::{KeySet, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::state::{authority_key_path, load_or_create_key};

/// One key of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingEntry {
    /// Its `kid`.
    pub kid: String,
    /// Its private JWK, relative to the data directory.
    pub file: String,
    /// When it starts signing (Unix milliseconds).
    pub signs_from_ms: i64,
    /// When it retires: no longer published, nothing it signed verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at_ms: Option<i64>,
}

/// `keyring.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    /// Oldest first.
    pub keys: Vec<RingEntry>,
}

/// The ring file of a data directory.
#[must_use]
pub fn ring_path(dir: &Path) -> PathBuf {
    dir.join("keyring.json")
}

/// Reads the ring (or the one-key ring of `authority.jwk`, created when
/// absent), with every key.
///
/// # Errors
/// A ring or key file that cannot be read.
pub fn load(dir: &Path) -> Result<(Ring, Vec<(RingEntry, SigningKey)>), String> {
    let path = ring_path(dir);
    let ring = match std::fs::read(&path) {
        Ok(bytes) => mandate_core::json::from_slice_strict::<Ring>(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = load_or_create_key(&authority_key_path(dir))?;
            Ring {
                keys: vec![RingEntry {
                    kid: key.kid().to_owned(),
                    file: "authority.jwk".into(),
                    signs_from_ms: 0,
                    retire_at_ms: None,
                }],
            }
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if ring.keys.is_empty() {
        return Err(format!("{}: no key", path.display()));
    }
    let mut keys = Vec::with_capacity(ring.keys.len());
    for e in &ring.keys {
        if e.file.contains("..") || Path::new(&e.file).is_absolute() {
            return Err(format!(
                "{}: `{}` is outside the data directory",
                path.display(),
                e.file
            ));
        }
        let key = load_or_create_key(&dir.join(&e.file))?;
        if key.kid() != e.kid {
            return Err(format!(
                "{}: `{}` holds kid {}, not {}",
                path.display(),
                e.file,
                key.kid(),
                e.kid
            ));
        }
        keys.push((e.clone(), key));
    }
    Ok((ring, keys))
}

fn write_ring(dir: &Path, ring: &Ring) -> Result<(), String> {
    let path = ring_path(dir);
    let text = serde_json::to_vec_pretty(ring).map_err(|e| e.to_string())?;
    crate::state::write_private(&path, &text)
}

fn live(e: &RingEntry, now_ms: i64) -> bool {
    e.retire_at_ms.is_none_or(|r| r > now_ms)
}

/// The key that signs at `now_ms` and the keys published then.
///
/// The signing key is the newest live key whose time has come; when no
/// live key's time has come (the only signing key retired early), the
/// live key due soonest signs now.
#[must_use]
pub fn at(keys: &[(RingEntry, SigningKey)], now_ms: i64) -> Option<(&SigningKey, KeySet)> {
    let living: Vec<&(RingEntry, SigningKey)> =
        keys.iter().filter(|(e, _)| live(e, now_ms)).collect();
    let signer = living
        .iter()
        .filter(|(e, _)| e.signs_from_ms <= now_ms)
        .max_by_key(|(e, _)| e.signs_from_ms)
        .or_else(|| living.iter().min_by_key(|(e, _)| e.signs_from_ms))
        .map(|(_, k)| k)?;
    let mut published = KeySet::new();
    for (_, k) in &living {
        if let Ok(v) = k.verifying_key() {
            published.insert(v);
        }
    }
    Some((signer, published))
}

/// Adds a key (the algorithm of the newest) that signs from
/// `now_ms + publish_secs`; every key without a retirement retires
/// `overlap_secs` after that. The new entry.
///
/// # Errors
/// The ring cannot be read or written.
pub fn rotate(
    dir: &Path,
    now_ms: i64,
    publish_secs: i64,
    overlap_secs: i64,
) -> Result<RingEntry, String> {
    let (mut ring, keys) = load(dir)?;
    let alg = keys
        .last()
        .map_or(mandate_core::keys::Algorithm::EdDSA, |(_, k)| k.algorithm());
    let key = SigningKey::generate(alg, &mut rand_core::OsRng);
    let file = format!("keys/{}.jwk", key.kid());
    mandate_store::create_private_dir(&dir.join("keys")).map_err(|e| format!("keys: {e}"))?;
    crate::state::write_new_key(&dir.join(&file), &key)?;
    let signs_from_ms = now_ms + publish_secs.max(0) * 1000;
    for e in &mut ring.keys {
        if e.retire_at_ms.is_none() {
            e.retire_at_ms = Some(signs_from_ms + overlap_secs.max(0) * 1000);
        }
    }
    let entry = RingEntry {
        kid: key.kid().to_owned(),
        file,
        signs_from_ms,
        retire_at_ms: None,
    };
    ring.keys.push(entry.clone());
    write_ring(dir, &ring)?;
    Ok(entry)
}

/// Retires `kid` now (a key that leaked). Refused when no other live key
/// would be left to sign.
///
/// # Errors
/// An unknown kid, the last live key, or the ring cannot be written.
pub fn retire(dir: &Path, kid: &str, now_ms: i64) -> Result<(), String> {
    let (mut ring, _) = load(dir)?;
    if !ring.keys.iter().any(|e| e.kid == kid && live(e, now_ms)) {
        return Err(format!("kid {kid}: no live key has it"));
    }
    if !ring.keys.iter().any(|e| e.kid != kid && live(e, now_ms)) {
        return Err(format!("kid {kid}: the only live key (rotate first)"));
    }
    for e in &mut ring.keys {
        if e.kid == kid {
            e.retire_at_ms = Some(now_ms);
        }
    }
    write_ring(dir, &ring)
}

struct Current {
    signer: Arc<SigningKey>,
    published: Arc<KeySet>,
    stamp: Option<std::time::SystemTime>,
    keys: Vec<(RingEntry, SigningKey)>,
}

/// The ring as the running authority uses it.
pub struct Live {
    dir: PathBuf,
    current: RwLock<Current>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn stamp(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(ring_path(dir))
        .and_then(|m| m.modified())
        .ok()
}

impl Live {
    /// Loads the ring of `dir`.
    ///
    /// # Errors
    /// As [`load`], or a ring with no live key.
    pub fn open(dir: &Path, now_ms: i64) -> Result<Self, String> {
        let stamp = stamp(dir);
        let (_, keys) = load(dir)?;
        let (signer, published) = at(&keys, now_ms).ok_or("keyring: no live key")?;
        let current = Current {
            signer: Arc::new(
                SigningKey::from_private_jwk(&signer.to_private_jwk())
                    .map_err(|e| e.to_string())?,
            ),
            published: Arc::new(published),
            stamp,
            keys,
        };
        Ok(Self {
            dir: dir.to_owned(),
            current: RwLock::new(current),
        })
    }

    /// The key that signs now.
    #[must_use]
    pub fn signer(&self) -> Arc<SigningKey> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c.signer),
            Err(p) => Arc::clone(&p.into_inner().signer),
        }
    }

    /// The keys published now (what verifies).
    #[must_use]
    pub fn published(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c.published),
            Err(p) => Arc::clone(&p.into_inner().published),
        }
    }

    /// A published key by `kid`.
    #[must_use]
    pub fn key(&self, kid: &str) -> Option<VerifyingKey> {
        self.published().get(kid).cloned()
    }

    /// Reads the ring again when its file changed, and moves to the keys of
    /// `now_ms`. `Some(published)` when the signing key or the published
    /// set changed.
    pub fn tick(&self, now_ms: i64) -> Option<KeySet> {
        let fresh = stamp(&self.dir);
        let mut c = self.current.write().ok()?;
        if fresh != c.stamp {
            match load(&self.dir) {
                Ok((_, keys)) => {
                    c.keys = keys;
                    c.stamp = fresh;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keyring not reloaded; the keys in use stay");
                    c.stamp = fresh;
                }
            }
        }
        let (signer, published) = at(&c.keys, now_ms)?;
        let same_signer = signer.kid() == c.signer.kid();
        let same_set = serde_json::to_value(published.to_jwks()).ok()
            == serde_json::to_value(c.published.to_jwks()).ok();
        if same_signer && same_set {
            return None;
        }
        let signer = SigningKey::from_private_jwk(&signer.to_private_jwk()).ok()?;
        tracing::info!(
            signing = signer.kid(),
            published = published.to_jwks().keys.len(),
            "authority keys changed"
        );
        c.signer = Arc::new(signer);
        c.published = Arc::new(published.clone());
        Some(published)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mandate-keyring-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_rotation_publishes_first_signs_later_and_retires_the_old_key_after_the_overlap() {
        let dir = temp();
        let t0 = 1_000_000;
        let live = Live::open(&dir, t0).unwrap();
        let old = live.signer().kid().to_owned();
        let new = rotate(&dir, t0, 60, 600).unwrap();
        // Published at once, not yet signing.
        live.tick(t0 + 1).unwrap();
        assert_eq!(live.signer().kid(), old);
        assert!(live.key(&new.kid).is_some() && live.key(&old).is_some());
        // Signing from its time; the old one still verifies.
        live.tick(t0 + 60_000).unwrap();
        assert_eq!(live.signer().kid(), new.kid);
        assert!(live.key(&old).is_some());
        assert!(live.tick(t0 + 61_000).is_none(), "nothing changed");
        // Retired after the overlap: no longer published.
        live.tick(t0 + 660_000).unwrap();
        assert!(live.key(&old).is_none());
        assert_eq!(live.published().to_jwks().keys.len(), 1);
        // The last live key cannot be retired; another can, at once.
        assert!(
            retire(&dir, &new.kid, t0 + 700_000)
                .unwrap_err()
                .contains("only live key")
        );
        let newer = rotate(&dir, t0 + 700_000, 300, 600).unwrap();
        retire(&dir, &new.kid, t0 + 700_001).unwrap();
        live.tick(t0 + 700_002).unwrap();
        // The newest signs now, ahead of its time: nothing else is left.
        assert_eq!(live.signer().kid(), newer.kid);
        assert!(live.key(&new.kid).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
