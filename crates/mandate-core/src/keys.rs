//! Keys as JSON Web Keys (RFC 7517): Ed25519 (`OKP`, the default) and P-256
//! (`EC`, for ES256). Private keys zeroize on drop and never print.

use std::collections::HashMap;
use std::fmt;

use p256::ecdsa::signature::Signer as _;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::b64;

/// A JWS algorithm this project signs and verifies with. There is no `none`
/// and no HMAC: a value outside this enum is refused at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037), the default.
    EdDSA,
    /// ECDSA with P-256 and SHA-256 (RFC 7518 §3.4), for interoperability.
    ES256,
}

impl Algorithm {
    /// The `alg` header value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
        }
    }

    /// Parses an `alg` value; only the two supported names are recognised.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Algorithm::EdDSA),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `kty`/`crv` is not Ed25519 or P-256.
    #[error("kty/crv: `{0}` is not supported (use OKP/Ed25519 or EC/P-256)")]
    Unsupported(String),
    /// A coordinate or the private part is not valid base64url or has the wrong length.
    #[error("{0}: must be base64url of the key's size")]
    Encoding(&'static str),
    /// The public key is not a valid, strong point.
    #[error("x: not a valid public key (weak or off-curve)")]
    InvalidPoint,
    /// The private part does not match the public part.
    #[error("d: does not match the public key")]
    Mismatch,
    /// `alg` disagrees with the key type.
    #[error("alg: `{0}` does not match the key type")]
    AlgMismatch(String),
    /// A private key where only a public key belongs.
    #[error("d: a private key must never appear here")]
    PrivatePartPresent,
    /// The private key is missing.
    #[error("d: missing (this is a public key)")]
    NotPrivate,
}

/// A public JWK as found in a JWKS or in a mandate's `agent.cnf.jwk`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PublicJwk {
    /// `OKP` or `EC`.
    pub kty: String,
    /// `Ed25519` or `P-256`.
    pub crv: String,
    /// Public key (Ed25519) or x coordinate (P-256), base64url.
    pub x: String,
    /// y coordinate (P-256 only), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Algorithm the key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use (`sig`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Present only to be refused: a private part in a public position.
    #[serde(default, skip_serializing, deserialize_with = "present")]
    #[cfg_attr(feature = "schema", schemars(skip))]
    d: bool,
}

impl fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicJwk")
            .field("kty", &self.kty)
            .field("crv", &self.crv)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl PublicJwk {
    /// The RFC 7638 thumbprint (SHA-256, base64url) of this key.
    #[must_use]
    pub fn thumbprint(&self) -> String {
        // Members in lexicographic order, no whitespace (RFC 7638 §3.2).
        let canonical = match &self.y {
            Some(y) => format!(
                r#"{{"crv":{},"kty":{},"x":{},"y":{}}}"#,
                json_str(&self.crv),
                json_str(&self.kty),
                json_str(&self.x),
                json_str(y)
            ),
            None => format!(
                r#"{{"crv":{},"kty":{},"x":{}}}"#,
                json_str(&self.crv),
                json_str(&self.kty),
                json_str(&self.x)
            ),
        };
        b64::encode(Sha256::digest(canonical.as_bytes()))
    }
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(true)
}

/// A secret string: zeroized on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The secret text. Handle with care.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::new(String::deserialize(d)?))
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A JWK Set (RFC 7517 §5) of public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<PublicJwk>,
}

#[derive(Clone)]
enum PublicInner {
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Verified by AWS-LC (its P-256 is assembly: about a sixth of the
    /// RustCrypto `p256` crate's time per ES256 verification here, which
    /// matters where agents prove possession with ES256 keys, DPoP's most
    /// common algorithm). The point was validated by `p256` when decoded.
    P256(aws_lc_rs::signature::ParsedPublicKey),
}

/// A decoded public key, ready to verify. Decode once and keep it: decoding
/// an Ed25519 point costs about as much as a hash.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    inner: PublicInner,
    jwk: PublicJwk,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm())
            .finish()
    }
}

fn decode_fixed<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], KeyError> {
    let v = b64::decode(s).map_err(|_| KeyError::Encoding(field))?;
    v.try_into().map_err(|_| KeyError::Encoding(field))
}

/// The Ed25519 base point's multiples for a batch check, computed once: a
/// batch's `B` term then reads a wider table than the one a multiplication
/// builds for each of its points.
static BASEPOINT_TABLE: std::sync::LazyLock<
    curve25519_dalek::edwards::VartimeEdwardsPrecomputation,
> = std::sync::LazyLock::new(|| {
    use curve25519_dalek::traits::VartimePrecomputedMultiscalarMul as _;
    curve25519_dalek::edwards::VartimeEdwardsPrecomputation::new([
        curve25519_dalek::constants::ED25519_BASEPOINT_POINT,
    ])
});

/// How many decoded Ed25519 keys are kept (two generations of half).
const POINT_CACHE: usize = 4096;

/// An Ed25519 public key decoded from its 32 bytes and checked (a valid,
/// not small-order point). Decoding costs a field exponentiation, and the
/// same holder keys come back in every decision of their agents, so valid
/// keys are kept by their exact bytes (bounded; an invalid key is never
/// kept, and costs its decoding every time, as before).
fn ed25519_point(bytes: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, KeyError> {
    static CACHE: std::sync::OnceLock<
        std::sync::RwLock<crate::cache::Generations<[u8; 32], ed25519_dalek::VerifyingKey>>,
    > = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let found = cache.read().ok().and_then(|c| {
        c.find(|map| map.get(bytes))
            .map(|(k, previous)| (*k, previous))
    });
    let (key, store) = match found {
        Some(found) => found,
        None => {
            let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
                .map_err(|_| KeyError::InvalidPoint)?;
            if key.is_weak() {
                return Err(KeyError::InvalidPoint);
            }
            (key, true)
        }
    };
    if store && let Ok(mut c) = cache.write() {
        c.insert(*bytes, key, POINT_CACHE);
    }
    Ok(key)
}

impl VerifyingKey {
    /// Decodes and checks a public JWK: supported type, valid strong point,
    /// `alg` (when given) consistent with the type, no private part. The key
    /// id is the JWK's `kid`, or its RFC 7638 thumbprint when absent.
    ///
    /// # Errors
    /// See [`KeyError`].
    pub fn from_jwk(jwk: &PublicJwk) -> Result<Self, KeyError> {
        if jwk.d {
            return Err(KeyError::PrivatePartPresent);
        }
        let inner = match (jwk.kty.as_str(), jwk.crv.as_str()) {
            ("OKP", "Ed25519") => {
                if jwk.y.is_some() {
                    return Err(KeyError::Encoding("y"));
                }
                let bytes = decode_fixed::<32>(&jwk.x, "x")?;
                PublicInner::Ed25519(ed25519_point(&bytes)?)
            }
            ("EC", "P-256") => {
                let x = decode_fixed::<32>(&jwk.x, "x")?;
                let y = decode_fixed::<32>(jwk.y.as_deref().unwrap_or_default(), "y")?;
                let point =
                    p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                // On the curve and not the identity, or refused.
                p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map_err(|_| KeyError::InvalidPoint)?;
                let key = aws_lc_rs::signature::ParsedPublicKey::new(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                    point.as_bytes(),
                )
                .map_err(|_| KeyError::InvalidPoint)?;
                PublicInner::P256(key)
            }
            (kty, crv) => return Err(KeyError::Unsupported(format!("{kty}/{crv}"))),
        };
        let alg = match inner {
            PublicInner::Ed25519(_) => Algorithm::EdDSA,
            PublicInner::P256(_) => Algorithm::ES256,
        };
        if let Some(declared) = &jwk.alg
            && declared != alg.as_str()
        {
            return Err(KeyError::AlgMismatch(declared.clone()));
        }
        let kid = jwk.kid.clone().unwrap_or_else(|| jwk.thumbprint());
        Ok(Self {
            kid,
            inner,
            jwk: jwk.clone(),
        })
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies. The key decides the algorithm,
    /// never the token's header.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            PublicInner::Ed25519(_) => Algorithm::EdDSA,
            PublicInner::P256(_) => Algorithm::ES256,
        }
    }

    /// The key as a public JWK.
    #[must_use]
    pub fn to_jwk(&self) -> PublicJwk {
        self.jwk.clone()
    }

    /// The key as a public JWK, borrowed.
    #[must_use]
    pub fn jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// Whether every `(key, message, signature)` verifies, by one Ed25519
    /// batch check; `false` for an empty batch, and when any key is not
    /// Ed25519, any signature is not 64 bytes, has a non-canonical `S` or an
    /// `R` that is not a point or has small order (the strict check refuses
    /// those too), or the batch equation fails. Callers re-check one by one
    /// on `false`.
    ///
    /// The equation is the usual one, without the cofactor (as
    /// ed25519-dalek's `verify_batch`): `Σ zᵢ·(Rᵢ + kᵢ·Aᵢ − Sᵢ·B)` is the
    /// identity, for 128-bit `zᵢ` derived from every signature of the batch
    /// (SHA-512 over each `kᵢ` hash and `Sᵢ`, as dalek's transcript does), so
    /// a signer cannot pick them. Two things make it cheaper than dalek's:
    /// signatures by the same key share one point in the multiplication
    /// (`Σ zᵢkᵢ·A` is `(Σ zᵢkᵢ)·A`, and an agent's concurrent requests, or
    /// a chain whose hops one key signs, repeat a key), the `zᵢ` come
    /// four to a SHA-512 block, and `B`'s multiples come from a table built
    /// once (dalek builds a narrower one for `B` in every batch). Accepting
    /// exactly the batches whose every signature the strict check accepts
    /// is what the tests check, against [`VerifyingKey::verify`] and
    /// dalek's batch.
    #[must_use]
    pub fn verify_batch<'a>(
        items: impl ExactSizeIterator<Item = (&'a Self, &'a [u8], &'a [u8])>,
    ) -> bool {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        use curve25519_dalek::traits::{IsIdentity as _, VartimePrecomputedMultiscalarMul as _};
        use curve25519_dalek::{EdwardsPoint, Scalar};
        use sha2::Sha512;

        let n = items.len();
        if n == 0 {
            // Nothing was shown to verify: fail closed, never "all of none".
            return false;
        }
        let mut rs: Vec<EdwardsPoint> = Vec::with_capacity(n);
        // Per signature: S, k, and which distinct key signed it.
        let mut terms: Vec<(Scalar, Scalar, usize)> = Vec::with_capacity(n);
        let mut keys: Vec<&ed25519_dalek::VerifyingKey> = Vec::new();
        let mut transcript = Sha512::new();
        transcript.update(b"mandate ed25519 batch v1");
        for (key, msg, sig) in items {
            let (Some(a), Some((r, s_scalar))) = (key.ed25519(), ed25519_signature(sig)) else {
                return false;
            };
            let Some(r_point) = CompressedEdwardsY(r).decompress() else {
                return false;
            };
            if r_point.is_small_order() {
                return false;
            }
            let hram = ed25519_challenge(&r, a, msg);
            transcript.update(hram);
            transcript.update(s_scalar.as_bytes());
            let j = match keys.iter().position(|k| k.as_bytes() == a.as_bytes()) {
                Some(j) => j,
                None => {
                    keys.push(a);
                    keys.len() - 1
                }
            };
            rs.push(r_point);
            terms.push((s_scalar, Scalar::from_bytes_mod_order_wide(&hram), j));
        }
        let seed = transcript.finalize();
        let mut zs: Vec<Scalar> = Vec::with_capacity(n);
        let mut block = 0_u64;
        while zs.len() < n {
            let bytes: [u8; 64] = Sha512::new()
                .chain_update(seed)
                .chain_update(block.to_le_bytes())
                .finalize()
                .into();
            for chunk in bytes.chunks_exact(16).take(n - zs.len()) {
                let mut z = [0_u8; 16];
                z.copy_from_slice(chunk);
                zs.push(Scalar::from(u128::from_le_bytes(z)));
            }
            block += 1;
        }
        let mut b_coefficient = Scalar::ZERO;
        let mut a_coefficients = vec![Scalar::ZERO; keys.len()];
        for (z, (s, k, j)) in zs.iter().zip(&terms) {
            b_coefficient += z * s;
            if let Some(c) = a_coefficients.get_mut(*j) {
                *c += z * k;
            }
        }
        let scalars = zs.into_iter().chain(a_coefficients);
        let points = rs.into_iter().chain(keys.iter().map(|k| k.to_edwards()));
        BASEPOINT_TABLE
            .vartime_mixed_multiscalar_mul([-b_coefficient], scalars, points)
            .is_identity()
    }

    /// The Ed25519 key, for batch verification.
    pub(crate) fn ed25519(&self) -> Option<&ed25519_dalek::VerifyingKey> {
        match &self.inner {
            PublicInner::Ed25519(k) => Some(k),
            PublicInner::P256(_) => None,
        }
    }

    /// Verifies `sig` over `msg`. Ed25519 uses strict verification (no
    /// small-order keys, canonical `S`); ES256 expects the JWS raw `r || s`.
    #[must_use]
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.inner {
            PublicInner::Ed25519(k) => ed25519_verify_strict(k, msg, sig),
            // `r || s`, 64 bytes; `r` and `s` in [1, n), or refused.
            PublicInner::P256(k) => k.verify_sig(msg, sig).is_ok(),
        }
    }
}

/// Ed25519 verification with exactly `ed25519_dalek::VerifyingKey::verify_strict`'s
/// acceptance rule, for less work. `verify_strict` accepts `R || S` when `S`
/// is canonical (below the group order), `R` decodes to a point, neither `R`
/// nor the key `A` has small order, and `[S]B - [k]A`, encoded, is `R`'s 32
/// bytes (`k` = SHA-512(R || A || msg) mod the order). To do so it takes four
/// field inversions or square roots (decoding `R`, encoding `[8]R`, `[8]A`
/// and the result), each a few hundred field squarings, besides the
/// multiplication itself. Here:
///
/// - `A` was checked when the key was decoded ([`ed25519_point`] refuses a
///   small-order key, and it is the only way an Ed25519 key is built), so it
///   is not checked again at every signature;
/// - `R` is not decoded: the result's canonical encoding can only equal
///   `R`'s bytes when `R` is that encoding, so `R` decodes, to the result;
/// - `R` has small order exactly when the result does (they are the same
///   point whenever the bytes match), and that is checked on the result in
///   projective coordinates (`[8]P` is the identity when `X = 0` and
///   `Y = Z`), with no inversion.
///
/// One inversion is left: the result's encoding. The tests check this rule
/// against `verify_strict` on valid, tampered, non-canonical and
/// small-order signatures.
fn ed25519_verify_strict(key: &ed25519_dalek::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::Scalar;

    let Some((r, s)) = ed25519_signature(sig) else {
        return false;
    };
    let k = Scalar::from_bytes_mod_order_wide(&ed25519_challenge(&r, key, msg));
    let minus_a = -key.to_edwards();
    let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &minus_a, &s);
    !expected.is_small_order() && expected.compress().as_bytes() == &r
}

/// An Ed25519 signature's `R` bytes and its `S`, or `None` when it is not
/// 64 bytes or `S` is not canonical (below the group order).
fn ed25519_signature(sig: &[u8]) -> Option<([u8; 32], curve25519_dalek::Scalar)> {
    let sig = <&[u8; 64]>::try_from(sig).ok()?;
    let (r, s) = sig.split_first_chunk::<32>()?;
    let s = <[u8; 32]>::try_from(s).ok()?;
    Option::from(curve25519_dalek::Scalar::from_canonical_bytes(s)).map(|s| (*r, s))
}

/// SHA-512(R || A || msg), which reduced is the signature's `k`.
fn ed25519_challenge(r: &[u8; 32], key: &ed25519_dalek::VerifyingKey, msg: &[u8]) -> [u8; 64] {
    use sha2::Sha512;
    Sha512::new()
        .chain_update(r)
        .chain_update(key.as_bytes())
        .chain_update(msg)
        .finalize()
        .into()
}

enum SecretInner {
    Ed25519(Ed25519Secret),
    P256(p256::ecdsa::SigningKey),
}

/// An Ed25519 private key, held twice: by ed25519-dalek, for its public
/// half and its bytes (zeroized on drop), and by AWS-LC, which signs.
/// Ed25519 signatures are deterministic (RFC 8032 §5.1.6), so the two
/// libraries produce the same 64 bytes for the same key and message;
/// AWS-LC's fixed-base multiplication (s2n-bignum's verified assembly)
/// takes about half of dalek's time, and a signature is most of what an
/// attenuation costs. `fast` is `None` only if AWS-LC refused the pair,
/// which it does not for any 32-byte seed; dalek signs then.
/// Verification stays with dalek: strict, and batched. AWS-LC keeps its
/// copy of the seed only inside its key object, whose memory it wipes
/// when the key is freed (`OPENSSL_free` cleanses every allocation).
struct Ed25519Secret {
    key: ed25519_dalek::SigningKey,
    fast: Option<aws_lc_rs::signature::Ed25519KeyPair>,
}

impl Ed25519Secret {
    fn from_seed(seed: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        // AWS-LC derives the public key from the seed itself and refuses
        // the pair unless it is the one dalek derived.
        let fast = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(
            seed,
            key.verifying_key().as_bytes(),
        )
        .ok();
        Self { key, fast }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.fast {
            Some(pair) => pair.sign(msg).as_ref().to_vec(),
            None => {
                use ed25519_dalek::Signer as _;
                self.key.sign(msg).to_bytes().to_vec()
            }
        }
    }
}

/// A private signing key. Zeroized on drop; `Debug` shows only its id.
pub struct SigningKey {
    kid: String,
    inner: SecretInner,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// A private JWK as stored on disk by `mandate keygen`. `d` zeroizes on drop
/// and `Debug` never shows it.
#[derive(Clone, Serialize, Deserialize)]
pub struct PrivateJwk {
    /// The public members.
    #[serde(flatten)]
    pub public: PrivateJwkPublic,
    /// The private key, base64url.
    pub d: Secret,
}

/// The public members of a private JWK.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrivateJwkPublic {
    /// `OKP` or `EC`.
    pub kty: String,
    /// `Ed25519` or `P-256`.
    pub crv: String,
    /// Public key / x coordinate.
    pub x: String,
    /// y coordinate (P-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

impl fmt::Debug for PrivateJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateJwk")
            .field("public", &self.public)
            .field("d", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// A fresh key from `rng`.
    pub fn generate(alg: Algorithm, rng: &mut impl CryptoRngCore) -> Self {
        let inner = match alg {
            Algorithm::EdDSA => {
                // The secret is 32 bytes from `rng`, as RFC 8032 defines it
                // (what `ed25519_dalek::SigningKey::generate` does; drawn
                // here so the signature crate's `rand_core` version does not
                // leak into this API). The copy on the stack is wiped.
                let mut secret = zeroize::Zeroizing::new([0u8; 32]);
                rng.fill_bytes(&mut *secret);
                SecretInner::Ed25519(Ed25519Secret::from_seed(&secret))
            }
            Algorithm::ES256 => SecretInner::P256(p256::ecdsa::SigningKey::random(rng)),
        };
        Self::with_thumbprint_kid(inner)
    }

    /// A key derived deterministically from a 32-byte seed (test vectors).
    /// For ES256 the seed is hashed until it is a valid scalar.
    #[must_use]
    pub fn from_seed(alg: Algorithm, seed: [u8; 32]) -> Self {
        let inner = match alg {
            Algorithm::EdDSA => SecretInner::Ed25519(Ed25519Secret::from_seed(&seed)),
            Algorithm::ES256 => {
                let mut s = seed;
                loop {
                    if let Ok(k) = p256::ecdsa::SigningKey::from_bytes(&s.into()) {
                        break SecretInner::P256(k);
                    }
                    s = Sha256::digest(s).into();
                }
            }
        };
        Self::with_thumbprint_kid(inner)
    }

    fn with_thumbprint_kid(inner: SecretInner) -> Self {
        let mut key = Self {
            kid: String::new(),
            inner,
        };
        key.kid = key.public_jwk_without_kid().thumbprint();
        key
    }

    /// Replaces the key id.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self
    }

    /// The key id (RFC 7638 thumbprint unless set otherwise).
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            SecretInner::Ed25519(_) => Algorithm::EdDSA,
            SecretInner::P256(_) => Algorithm::ES256,
        }
    }

    fn public_jwk_without_kid(&self) -> PublicJwk {
        let (kty, crv, x, y) = match &self.inner {
            SecretInner::Ed25519(k) => (
                "OKP",
                "Ed25519",
                b64::encode(k.key.verifying_key().as_bytes()),
                None,
            ),
            SecretInner::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                (
                    "EC",
                    "P-256",
                    b64::encode(point.x().map(|x| &x[..]).unwrap_or_default()),
                    Some(b64::encode(point.y().map(|y| &y[..]).unwrap_or_default())),
                )
            }
        };
        PublicJwk {
            kty: kty.into(),
            crv: crv.into(),
            x,
            y,
            kid: None,
            alg: None,
            use_: None,
            d: false,
        }
    }

    /// The public half as a JWK with `kid`, `alg` and `use`.
    #[must_use]
    pub fn public_jwk(&self) -> PublicJwk {
        let mut jwk = self.public_jwk_without_kid();
        jwk.kid = Some(self.kid.clone());
        jwk.alg = Some(self.algorithm().as_str().into());
        jwk.use_ = Some("sig".into());
        jwk
    }

    /// The public half, decoded.
    ///
    /// # Errors
    /// Never for a key made by this type; kept fallible for symmetry.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_jwk(&self.public_jwk())
    }

    /// Signs `msg`: 64 bytes, Ed25519 or the JWS raw `r || s` for ES256.
    #[must_use]
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.inner {
            SecretInner::Ed25519(k) => k.sign(msg),
            SecretInner::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_bytes().to_vec()
            }
        }
    }

    /// The private JWK (to store with mode 0600).
    #[must_use]
    pub fn to_private_jwk(&self) -> PrivateJwk {
        let public = self.public_jwk();
        let d = match &self.inner {
            SecretInner::Ed25519(k) => Secret::new(b64::encode(k.key.to_bytes())),
            SecretInner::P256(k) => Secret::new(b64::encode(k.to_bytes())),
        };
        PrivateJwk {
            public: PrivateJwkPublic {
                kty: public.kty,
                crv: public.crv,
                x: public.x,
                y: public.y,
                kid: public.kid,
                alg: public.alg,
            },
            d,
        }
    }

    /// Reads a private JWK, checking that `d` matches the public members.
    ///
    /// # Errors
    /// See [`KeyError`].
    pub fn from_private_jwk(jwk: &PrivateJwk) -> Result<Self, KeyError> {
        let p = &jwk.public;
        let inner = match (p.kty.as_str(), p.crv.as_str()) {
            ("OKP", "Ed25519") => {
                let d = Zeroizing::new(decode_fixed::<32>(jwk.d.expose(), "d")?);
                SecretInner::Ed25519(Ed25519Secret::from_seed(&d))
            }
            ("EC", "P-256") => {
                let d = Zeroizing::new(decode_fixed::<32>(jwk.d.expose(), "d")?);
                let k = p256::ecdsa::SigningKey::from_bytes(&(*d).into())
                    .map_err(|_| KeyError::Encoding("d"))?;
                SecretInner::P256(k)
            }
            (kty, crv) => return Err(KeyError::Unsupported(format!("{kty}/{crv}"))),
        };
        let mut key = Self::with_thumbprint_kid(inner);
        let derived = key.public_jwk_without_kid();
        if derived.x != p.x || derived.y != p.y {
            return Err(KeyError::Mismatch);
        }
        if let Some(alg) = &p.alg
            && alg != key.algorithm().as_str()
        {
            return Err(KeyError::AlgMismatch(alg.clone()));
        }
        if let Some(kid) = &p.kid {
            key.kid = kid.clone();
        }
        Ok(key)
    }
}

/// Public keys by key id: what a verifier trusts for root mandates.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes every key of a JWKS.
    ///
    /// # Errors
    /// The first key that does not decode, with its index, or a duplicate `kid`.
    pub fn from_jwks(jwks: &Jwks) -> Result<Self, (usize, KeyError)> {
        let mut set = Self::new();
        for (i, jwk) in jwks.keys.iter().enumerate() {
            let key = VerifyingKey::from_jwk(jwk).map_err(|e| (i, e))?;
            if set.keys.contains_key(key.kid()) {
                return Err((
                    i,
                    KeyError::Unsupported(format!("duplicate kid `{}`", key.kid())),
                ));
            }
            set.insert(key);
        }
        Ok(set)
    }

    /// Reads an identity provider's JWKS (RFC 7517 §5): keys of a type this
    /// project does not verify with (RSA, other curves, `use` other than
    /// `sig`) are skipped, as the RFC says, and listed in the second value; a
    /// key of a supported type that does not decode, a private key, or a set
    /// with no usable key is an error naming it.
    ///
    /// # Errors
    /// `keys` missing, a bad supported key (with its index), no usable key.
    pub fn from_jwks_skipping_unknown(
        jwks: &serde_json::Value,
    ) -> Result<(Self, Vec<String>), String> {
        let keys = jwks
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or("keys: missing or not a list")?;
        let mut set = Self::new();
        let mut skipped = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let field = |f: &str| k.get(f).and_then(serde_json::Value::as_str);
            let supported = matches!(
                (field("kty"), field("crv")),
                (Some("OKP"), Some("Ed25519")) | (Some("EC"), Some("P-256"))
            );
            let for_signing = field("use").is_none_or(|u| u == "sig");
            if !supported || !for_signing {
                skipped.push(format!(
                    "keys[{i}]: kty `{}`{}{} skipped",
                    field("kty").unwrap_or("?"),
                    field("crv")
                        .map(|c| format!(", crv `{c}`"))
                        .unwrap_or_default(),
                    field("use")
                        .map(|u| format!(", use `{u}`"))
                        .unwrap_or_default(),
                ));
                continue;
            }
            let jwk: PublicJwk =
                serde_json::from_value(k.clone()).map_err(|e| format!("keys[{i}]: {e}"))?;
            let key = VerifyingKey::from_jwk(&jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
            if set.keys.contains_key(key.kid()) {
                return Err(format!("keys[{i}]: duplicate kid `{}`", key.kid()));
            }
            set.insert(key);
        }
        if set.keys.is_empty() {
            return Err("keys: no Ed25519 or P-256 signing key in the set".into());
        }
        Ok((set, skipped))
    }

    /// Adds a key under its id.
    pub fn insert(&mut self, key: VerifyingKey) {
        self.keys.insert(key.kid.clone(), key);
    }

    /// The key with this id.
    #[must_use]
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// The public JWKS.
    #[must_use]
    pub fn to_jwks(&self) -> Jwks {
        let mut keys: Vec<PublicJwk> = self.keys.values().map(VerifyingKey::to_jwk).collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        Jwks { keys }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_providers_jwks_with_rsa_and_encryption_keys_keeps_the_usable_ones() {
        let ec = SigningKey::from_seed(Algorithm::ES256, [5; 32]).public_jwk();
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": "0vx7", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "a", "y": "b"},
            serde_json::to_value(&ec).unwrap_or_default(),
            {"kty": "OKP", "crv": "X25519", "kid": "enc", "use": "enc", "x": "abc"},
        ]});
        let (set, skipped) =
            KeySet::from_jwks_skipping_unknown(&jwks).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.to_jwks().keys.len(), 1);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("RSA"));
        // A supported key that does not decode is not skipped: it is wrong.
        let bad = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "not-a-key"}]});
        assert!(KeySet::from_jwks_skipping_unknown(&bad).is_err());
        // Nothing usable at all.
        let none = serde_json::json!({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]});
        assert!(KeySet::from_jwks_skipping_unknown(&none).is_err());
    }

    /// RFC 8032 §7.1, TEST 1 and TEST 3: the secret key, and the
    /// signature of the empty message and of `af82`.
    #[test]
    fn ed25519_signatures_are_rfc_8032s_test_vectors() {
        let hex32 = |h: &str| -> [u8; 32] {
            hex_bytes(h)
                .try_into()
                .unwrap_or_else(|_| panic!("32 bytes"))
        };
        for (seed, msg, sig) in [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ] {
            let key = SigningKey::from_seed(Algorithm::EdDSA, hex32(seed));
            assert_eq!(key.sign(&hex_bytes(msg)), hex_bytes(sig));
        }
    }

    fn hex_bytes(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// ed25519-dalek's `verify_strict`, the rule [`VerifyingKey::verify`] keeps.
    fn dalek_strict(key: &ed25519_dalek::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| key.verify_strict(msg, &s).is_ok())
    }

    /// An Ed25519 key from its 32 bytes, through the JWK path every key takes.
    fn ed25519_key(bytes: &[u8; 32]) -> Result<VerifyingKey, KeyError> {
        let jwk: PublicJwk = serde_json::from_value(
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(bytes)}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        VerifyingKey::from_jwk(&jwk)
    }

    /// `s = k·a` for the secret scalar `a`, so that `[s]B - [k]A` is `-[k]T`
    /// for the key `A = [a]B + T`: the identity when `T` is, else a point of
    /// small order. Signed with `R` = that point's encoding, the equation
    /// holds, and only the small-order rule refuses it.
    fn small_order_r_signature(
        a: curve25519_dalek::Scalar,
        torsion: curve25519_dalek::EdwardsPoint,
        msg: &[u8],
    ) -> Option<([u8; 32], Vec<u8>)> {
        use curve25519_dalek::{EdwardsPoint, Scalar};
        use sha2::Sha512;
        let public = EdwardsPoint::mul_base(&a) + torsion;
        let a_bytes = public.compress().to_bytes();
        // k hashes R, and R must be -[k]T: try each point of small order
        // as R (none may close for a given message; the caller tries
        // another message).
        for candidate in curve25519_dalek::constants::EIGHT_TORSION {
            let r = candidate.compress().to_bytes();
            let mut h = Sha512::new();
            h.update(r);
            h.update(a_bytes);
            h.update(msg);
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            if (-(torsion * k)).compress().to_bytes() == r {
                let mut sig = r.to_vec();
                sig.extend_from_slice((k * a).as_bytes());
                return Some((a_bytes, sig));
            }
        }
        None
    }

    #[test]
    fn a_signature_whose_r_has_small_order_is_refused_though_its_equation_holds() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        use curve25519_dalek::{EdwardsPoint, Scalar};
        let a = Scalar::from_bytes_mod_order([7; 32]);
        let mut tried = 0;
        // The key in the prime-order subgroup (R the identity), then keys
        // with a torsion part (R of order 2, 4 or 8), which are not weak.
        for (t, torsion) in [(0, EdwardsPoint::default())]
            .into_iter()
            .chain(EIGHT_TORSION.into_iter().enumerate().skip(1))
        {
            for m in 0..64_u8 {
                let msg = [b'm', m];
                let Some((a_bytes, sig)) = small_order_r_signature(a, torsion, &msg) else {
                    continue;
                };
                let key = ed25519_key(&a_bytes).unwrap_or_else(|e| panic!("torsion {t}: {e}"));
                let dalek = *key.ed25519().unwrap_or_else(|| panic!("an Ed25519 key"));
                let lenient = ed25519_dalek::Signature::from_slice(&sig)
                    .is_ok_and(|s| ed25519_dalek::Verifier::verify(&dalek, &msg, &s).is_ok());
                assert!(
                    lenient,
                    "torsion {t}: the equation holds (RFC 8032 accepts it)"
                );
                assert!(
                    !dalek_strict(&dalek, &msg, &sig),
                    "torsion {t}: verify_strict refuses"
                );
                assert!(!key.verify(&msg, &sig), "torsion {t}: so does ours");
                // In a batch with an honest signature: refused there too
                // (dalek's batch check would let it through).
                let honest = SigningKey::from_seed(Algorithm::EdDSA, [9; 32]);
                let honest_key = honest.verifying_key().unwrap_or_else(|e| panic!("{e}"));
                let honest_sig = honest.sign(b"honest");
                assert!(
                    !VerifyingKey::verify_batch(
                        [
                            (&key, &msg[..], &sig[..]),
                            (&honest_key, b"honest", &honest_sig[..])
                        ]
                        .into_iter()
                    ),
                    "torsion {t}: the batch refuses it"
                );
                tried += 1;
                break;
            }
        }
        assert_eq!(tried, 8, "one crafted signature for each torsion point");
    }

    #[test]
    fn an_empty_batch_does_not_pass() {
        assert!(!VerifyingKey::verify_batch(std::iter::empty()));
    }

    #[test]
    fn a_small_order_key_is_refused_when_decoded_so_verify_need_not_check_it() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        for point in EIGHT_TORSION {
            assert_eq!(
                ed25519_key(&point.compress().to_bytes()).err(),
                Some(KeyError::InvalidPoint)
            );
        }
    }

    proptest::proptest! {
        /// AWS-LC signs; its signature is ed25519-dalek's, byte for byte, for
        /// any key and message (so keys, mandates and proofs signed before
        /// the change read the same), and dalek verifies it strictly.
        #[test]
        fn ed25519_signatures_by_aws_lc_are_dalek_s(
            seed in proptest::array::uniform32(proptest::num::u8::ANY),
            msg in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
        ) {
            let key = SigningKey::from_seed(Algorithm::EdDSA, seed);
            let SecretInner::Ed25519(secret) = &key.inner else { panic!("an Ed25519 key") };
            proptest::prop_assert!(secret.fast.is_some(), "AWS-LC refused a seed");
            let dalek = {
                use ed25519_dalek::Signer as _;
                ed25519_dalek::SigningKey::from_bytes(&seed).sign(&msg).to_bytes().to_vec()
            };
            let signed = key.sign(&msg);
            proptest::prop_assert_eq!(&signed, &dalek);
            let verifying = key.verifying_key().unwrap_or_else(|e| panic!("{e}"));
            proptest::prop_assert!(verifying.verify(&msg, &signed));
        }
    }

    proptest::proptest! {
        /// `VerifyingKey::verify` accepts exactly what ed25519-dalek's
        /// `verify_strict` accepts: the signature as made, and after any one
        /// change (a bit of the signature or of the message flipped, `S`
        /// replaced by `S + ℓ`, which is the same scalar but not canonical,
        /// the signature cut short or lengthened).
        #[test]
        fn ed25519_verify_accepts_what_verify_strict_accepts(
            seed in proptest::array::uniform32(proptest::num::u8::ANY),
            msg in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            change in 0_usize..6,
            at in 0_usize..512,
        ) {
            let key = SigningKey::from_seed(Algorithm::EdDSA, seed);
            let verifying = key.verifying_key().unwrap_or_else(|e| panic!("{e}"));
            let dalek = *verifying.ed25519().unwrap_or_else(|| panic!("an Ed25519 key"));
            let mut sig = key.sign(&msg);
            let mut msg = msg;
            match change {
                1 => sig[at / 8 % 64] ^= 1 << (at % 8),
                2 if !msg.is_empty() => {
                    let i = at % msg.len();
                    msg[i] ^= 1;
                }
                3 => {
                    // S + ℓ, ℓ the group order (little-endian); S < ℓ < 2^253,
                    // so the sum fits in the 32 bytes.
                    const ORDER: [u8; 32] = [
                        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2,
                        0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0x10,
                    ];
                    let mut carry = 0_u16;
                    for (i, l) in ORDER.iter().enumerate() {
                        let sum = u16::from(sig[32 + i]) + u16::from(*l) + carry;
                        sig[32 + i] = (sum & 0xff) as u8;
                        carry = sum >> 8;
                    }
                    proptest::prop_assert_eq!(carry, 0);
                }
                4 => sig.truncate(at % 64),
                5 => sig.push(0),
                _ => {}
            }
            let expected = dalek_strict(&dalek, &msg, &sig);
            proptest::prop_assert_eq!(verifying.verify(&msg, &sig), expected);
            if change == 0 {
                proptest::prop_assert!(expected);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// A batch passes exactly when every signature in it passes the
        /// strict check alone, whichever keys repeat: honest batches, and
        /// batches where one signature or message was changed (a bit
        /// flipped, or `S` and `R` swapped for another signature's, which
        /// makes a valid signature on another message). Dalek's batch check
        /// agrees on all of these.
        #[test]
        fn a_batch_passes_exactly_when_each_signature_passes_alone(
            signers in proptest::collection::vec(0_u8..4, 2..12),
            msgs in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..300), 12),
            change in 0_usize..4,
            victim in 0_usize..12,
            at in 0_usize..512,
        ) {
            let keys: Vec<SigningKey> = (0..4_u8)
                .map(|i| SigningKey::from_seed(Algorithm::EdDSA, [i.wrapping_mul(31).wrapping_add(1); 32]))
                .collect();
            let verifying: Vec<VerifyingKey> =
                keys.iter().map(|k| k.verifying_key().unwrap_or_else(|e| panic!("{e}"))).collect();
            let mut items: Vec<(usize, Vec<u8>, Vec<u8>)> = signers
                .iter()
                .zip(&msgs)
                .map(|(&k, m)| (usize::from(k), m.clone(), keys[usize::from(k)].sign(m)))
                .collect();
            let v = victim % items.len();
            match change {
                1 => items[v].2[at / 8 % 64] ^= 1 << (at % 8),
                2 => items[v].1.push(b'!'),
                3 => {
                    // Another signature of the same key: valid, but not on this message.
                    let other = keys[items[v].0].sign(b"another message");
                    items[v].2 = other;
                }
                _ => {}
            }
            let alone = items.iter().all(|(k, m, sig)| verifying[*k].verify(m, sig));
            let batch = VerifyingKey::verify_batch(
                items.iter().map(|(k, m, sig)| (&verifying[*k], m.as_slice(), sig.as_slice())),
            );
            proptest::prop_assert_eq!(batch, alone);
            proptest::prop_assert_eq!(alone, change == 0);
            let dalek_keys: Vec<ed25519_dalek::VerifyingKey> =
                items.iter().map(|(k, _, _)| *verifying[*k].ed25519().unwrap_or_else(|| panic!("Ed25519"))).collect();
            let dalek_msgs: Vec<&[u8]> = items.iter().map(|(_, m, _)| m.as_slice()).collect();
            let dalek_sigs: Vec<ed25519_dalek::Signature> = items
                .iter()
                .map(|(_, _, s)| ed25519_dalek::Signature::from_slice(s).unwrap_or_else(|e| panic!("{e}")))
                .collect();
            proptest::prop_assert_eq!(
                ed25519_dalek::verify_batch(&dalek_msgs, &dalek_sigs, &dalek_keys).is_ok(),
                alone
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// ES256 is verified by AWS-LC; the RustCrypto `p256` crate, which
        /// verified it before, is the reference: the same answer for an
        /// honest signature, its high-`s` twin (both accept: JWS does not
        /// require low `s`), a damaged signature or message, `r` or `s`
        /// zero or out of range, and a signature of the wrong length.
        #[test]
        fn es256_verification_by_aws_lc_answers_as_p256_did(
            seed in proptest::array::uniform32(proptest::num::u8::ANY),
            msg in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            flip in 0usize..64,
        ) {
            use p256::ecdsa::signature::Verifier as _;
            let key = SigningKey::from_seed(Algorithm::ES256, seed);
            let ours = key.verifying_key().unwrap_or_else(|e| panic!("{e}"));
            let SecretInner::P256(secret) = &key.inner else { panic!("a P-256 key") };
            let reference = *secret.verifying_key();
            let p256_says = |m: &[u8], sig: &[u8]| {
                p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| reference.verify(m, &s).is_ok())
            };
            let signed = key.sign(&msg);
            let honest = p256::ecdsa::Signature::from_slice(&signed).unwrap_or_else(|e| panic!("{e}"));
            let high_s = p256::ecdsa::Signature::from_scalars(honest.r(), -*honest.s())
                .unwrap_or_else(|e| panic!("{e}"))
                .to_vec();
            let mut damaged = signed.clone();
            damaged[flip] ^= 0x01;
            let mut other_msg = msg.clone();
            other_msg.push(b'x');
            let order = hex_bytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
            let zero_r = [vec![0; 32], signed[32..].to_vec()].concat();
            let zero_s = [signed[..32].to_vec(), vec![0; 32]].concat();
            let s_is_n = [signed[..32].to_vec(), order.clone()].concat();
            let r_is_n = [order, signed[32..].to_vec()].concat();
            let cases: [(&[u8], &[u8], bool); 9] = [
                (&msg, &signed, true),
                (&msg, &high_s, true),
                (&msg, &damaged, false),
                (&other_msg, &signed, false),
                (&msg, &zero_r, false),
                (&msg, &zero_s, false),
                (&msg, &s_is_n, false),
                (&msg, &r_is_n, false),
                (&msg, &signed[..63], false),
            ];
            for (i, (m, sig, expected)) in cases.into_iter().enumerate() {
                let answer = ours.verify(m, sig);
                proptest::prop_assert_eq!(answer, p256_says(m, sig), "case {}", i);
                proptest::prop_assert_eq!(answer, expected, "case {}", i);
            }
        }
    }

    #[test]
    fn ed25519_and_es256_sign_and_verify() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = SigningKey::from_seed(alg, [7; 32]);
            let vk = key.verifying_key().unwrap();
            let sig = key.sign(b"hello");
            assert_eq!(sig.len(), 64);
            assert!(vk.verify(b"hello", &sig));
            assert!(!vk.verify(b"hellp", &sig));
            assert_eq!(vk.algorithm(), alg);
        }
    }

    #[test]
    fn private_jwk_round_trips_and_debug_hides_d() {
        let key = SigningKey::from_seed(Algorithm::EdDSA, [1; 32]);
        let jwk = key.to_private_jwk();
        let again = SigningKey::from_private_jwk(&jwk).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(!format!("{jwk:?}").contains(jwk.d.expose()));
        assert!(!format!("{key:?}").contains(jwk.d.expose()));
    }

    #[test]
    fn a_public_jwk_with_a_private_part_is_refused() {
        let key = SigningKey::from_seed(Algorithm::EdDSA, [1; 32]);
        let text = serde_json::to_string(&key.to_private_jwk()).unwrap();
        let jwk: PublicJwk = serde_json::from_str(&text).unwrap();
        assert_eq!(
            VerifyingKey::from_jwk(&jwk).unwrap_err(),
            KeyError::PrivatePartPresent
        );
    }

    #[test]
    fn alg_must_match_the_key_type() {
        let mut jwk = SigningKey::from_seed(Algorithm::EdDSA, [1; 32]).public_jwk();
        jwk.alg = Some("ES256".into());
        assert!(matches!(
            VerifyingKey::from_jwk(&jwk),
            Err(KeyError::AlgMismatch(_))
        ));
    }

    #[test]
    fn thumbprint_matches_rfc_8037_appendix_a3() {
        let jwk: PublicJwk = serde_json::from_str(
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        )
        .unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn weak_ed25519_keys_are_refused() {
        // The identity point: a small-order key that "verifies" forged signatures.
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        let jwk: PublicJwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": b64::encode(bytes)
        }))
        .unwrap();
        assert_eq!(
            VerifyingKey::from_jwk(&jwk).unwrap_err(),
            KeyError::InvalidPoint
        );
    }
}
