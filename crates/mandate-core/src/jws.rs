//! The compact JWS codec (RFC 7515) with the checks that keep a token from
//! choosing how it is verified.
//!
//! Decoding checks structure and the protected header only; the signature is
//! checked by [`crate::chain::Verifier`] with a key the *verifier* chose.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::b64;
use crate::json::{check_no_duplicates, plainly_clean};
use crate::keys::{Algorithm, PublicJwk, SigningKey};

/// Largest accepted compact JWS, in bytes.
pub const MAX_JWS_BYTES: usize = 64 * 1024;

/// Header parameters that would let a token name its own verification key.
pub const KEY_CHOOSING_PARAMETERS: [&str; 5] = ["jwk", "jku", "x5u", "x5c", "x5t#S256"];

/// Why a JWS was refused. Each variant has a stable [`code`](JwsError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url segments of JSON.
    #[error("malformed JWS: {0}")]
    Malformed(String),
    /// Larger than [`MAX_JWS_BYTES`].
    #[error("JWS is larger than {MAX_JWS_BYTES} bytes")]
    TooLarge,
    /// A JSON member name appears twice.
    #[error("duplicate JSON member in the {part}: {detail}")]
    DuplicateMember {
        /// `header` or `payload`.
        part: &'static str,
        /// Which member.
        detail: String,
    },
    /// `alg: none`.
    #[error("alg: `none` is never accepted")]
    AlgNone,
    /// An algorithm outside the verifier's allow-list (HS256, RS256, ...).
    #[error("alg: `{0}` is not in the allowed algorithms")]
    AlgNotAllowed(String),
    /// The header's algorithm is not the key's.
    #[error("alg: `{header}` does not match the key's algorithm `{key}`")]
    AlgKeyMismatch {
        /// The header's `alg`.
        header: String,
        /// The key's algorithm.
        key: Algorithm,
    },
    /// No `kid`.
    #[error("kid: missing")]
    KidMissing,
    /// A `kid` the verifier does not know.
    #[error("kid: `{0}` is not a trusted key")]
    UnknownKid(String),
    /// `typ` is not the expected one.
    #[error("typ: expected `{expected}`, found `{found}`")]
    TypInvalid {
        /// What was expected.
        expected: &'static str,
        /// What the header said.
        found: String,
    },
    /// `jwk`, `jku`, `x5u`, `x5c` in the header.
    #[error("{0}: a token may not name its own verification key")]
    KeyParameterInHeader(String),
    /// A `crit` extension (none is understood).
    #[error("crit: extension `{0}` is not understood")]
    CritUnsupported(String),
    /// The signature does not verify.
    #[error("signature does not verify")]
    SignatureInvalid,
}

impl JwsError {
    /// The stable reason code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            JwsError::Malformed(_) => "malformed",
            JwsError::TooLarge => "too_large",
            JwsError::DuplicateMember { .. } => "duplicate_member",
            JwsError::AlgNone => "alg_none",
            JwsError::AlgNotAllowed(_) => "alg_not_allowed",
            JwsError::AlgKeyMismatch { .. } => "alg_key_mismatch",
            JwsError::KidMissing => "kid_missing",
            JwsError::UnknownKid(_) => "unknown_kid",
            JwsError::TypInvalid { .. } => "typ_invalid",
            JwsError::KeyParameterInHeader(_) => "header_key_parameter",
            JwsError::CritUnsupported(_) => "crit_unsupported",
            JwsError::SignatureInvalid => "signature_invalid",
        }
    }
}

/// A decoded, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct DecodedJws<'a> {
    /// The header's algorithm (already in the allow-list).
    pub alg: Algorithm,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The decoded payload (JSON, free of duplicate members).
    pub payload: Vec<u8>,
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// The header's `jwk`: only a DPoP proof (see [`decode_dpop`]) may carry
    /// one, and its verifier compares it with the key it already trusts.
    pub jwk: Option<PublicJwk>,
}

fn segment(text: &str, what: &str) -> Result<Vec<u8>, JwsError> {
    b64::decode(text)
        .map_err(|_| JwsError::Malformed(format!("{what} is not base64url without padding")))
}

/// Splits and decodes a compact JWS, checking the protected header:
/// exactly three segments, `alg` in `allowed` (never `none`), `typ` equal to
/// `expected_typ` (case-insensitively, with or without `application/`), no
/// key-choosing parameters, no `crit`, no duplicate members.
///
/// # Errors
/// See [`JwsError`].
pub fn decode<'a>(
    compact: &'a str,
    allowed: &BTreeSet<Algorithm>,
    expected_typ: &'static str,
) -> Result<DecodedJws<'a>, JwsError> {
    decode_with(compact, allowed, expected_typ, Rules::Strict)
}

/// The `typ` of a DPoP proof (RFC 9449 §4.2).
pub const DPOP_TYP: &str = "dpop+jwt";

/// As [`decode`] for a DPoP proof (RFC 9449 §4.2): `typ` is `dpop+jwt` and
/// the header must carry the public `jwk` (no private part) and no other
/// key-choosing parameter. The `jwk` is returned, never trusted: the caller
/// compares it with the holder key the mandate binds and verifies with that.
///
/// # Errors
/// See [`JwsError`]; a missing or unreadable `jwk` is `Malformed`.
pub fn decode_dpop<'a>(
    compact: &'a str,
    allowed: &BTreeSet<Algorithm>,
) -> Result<DecodedJws<'a>, JwsError> {
    decode_with(compact, allowed, DPOP_TYP, Rules::Dpop)
}

/// As [`decode`] for a caller's access token from an identity provider:
/// `typ` absent, `JWT` or `at+jwt` (RFC 9068), as real providers issue them.
///
/// # Errors
/// See [`JwsError`].
pub fn decode_access_token<'a>(
    compact: &'a str,
    allowed: &BTreeSet<Algorithm>,
) -> Result<DecodedJws<'a>, JwsError> {
    decode_with(compact, allowed, "JWT", Rules::AccessToken)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rules {
    Strict,
    IdToken,
    AccessToken,
    Dpop,
}

/// As [`decode`] for an OpenID Connect ID token: `typ` may be absent or `JWT`.
///
/// # Errors
/// See [`JwsError`].
pub fn decode_id_token<'a>(
    compact: &'a str,
    allowed: &BTreeSet<Algorithm>,
) -> Result<DecodedJws<'a>, JwsError> {
    decode_with(compact, allowed, "JWT", Rules::IdToken)
}

fn decode_with<'a>(
    compact: &'a str,
    allowed: &BTreeSet<Algorithm>,
    expected_typ: &'static str,
    rules: Rules,
) -> Result<DecodedJws<'a>, JwsError> {
    decode_checking::<serde::de::IgnoredAny>(compact, allowed, expected_typ, rules, false)
        .map(|(d, _)| d)
}

/// A protected header as a JSON object: strict JSON (no duplicate member,
/// no excess depth, no inexact number). The read into a map establishes the
/// syntax the one-pass check needs; anything else takes the full checks,
/// which name the problem ([`read_header_thoroughly`], the reference).
fn read_header(bytes: &[u8]) -> Result<Map<String, Value>, JwsError> {
    if let Some(text) = plainly_clean(bytes)
        && let Ok(header) = serde_json::from_str(text)
    {
        return Ok(header);
    }
    read_header_thoroughly(bytes)
}

fn read_header_thoroughly(bytes: &[u8]) -> Result<Map<String, Value>, JwsError> {
    check_no_duplicates(bytes).map_err(|e| refused("header", e))?;
    serde_json::from_slice(bytes)
        .map_err(|_| JwsError::Malformed("header is not a JSON object".into()))
}

/// A header or payload refused by [`check_no_duplicates`], as the decoder
/// reports it.
fn refused(part: &'static str, e: crate::json::JsonError) -> JwsError {
    if e.duplicate {
        JwsError::DuplicateMember {
            part,
            detail: e.to_string(),
        }
    } else {
        JwsError::Malformed(format!("{part}: {e}"))
    }
}

/// What [`decode_typed`] refused: the JWS (as [`decode`] would), or its
/// payload as the type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypedError {
    /// The JWS itself, as [`decode`] refuses it.
    Jws(JwsError),
    /// The payload is strict JSON but not a `T`: the path and the problem.
    Payload(crate::json::JsonError),
}

/// As [`decode`], and reads the payload into `T`: the errors, and their
/// order, are those of [`decode`] followed by the typed read (which names
/// the path of a member that does not fit). The payload's JSON is walked once
/// besides the one-pass check, since a successful typed read establishes the
/// syntax that [`decode`] checks with a pass of its own.
///
/// # Errors
/// See [`TypedError`].
pub fn decode_typed<'a, T: serde::de::DeserializeOwned>(
    compact: &'a str,
    allowed: &BTreeSet<Algorithm>,
    expected_typ: &'static str,
) -> Result<(DecodedJws<'a>, T), TypedError> {
    let (d, value) = decode_checking::<T>(compact, allowed, expected_typ, Rules::Strict, true)
        .map_err(TypedError::Jws)?;
    let value = value.unwrap_or_else(|| crate::json::from_checked_slice(&d.payload));
    value.map(|v| (d, v)).map_err(TypedError::Payload)
}

/// Decodes and checks a compact JWS; with `typed`, also reads its payload
/// into `T` (the read, or the error it met, is returned beside the JWS).
fn decode_checking<'a, T: serde::de::DeserializeOwned>(
    compact: &'a str,
    allowed: &BTreeSet<Algorithm>,
    expected_typ: &'static str,
    rules: Rules,
    typed: bool,
) -> Result<(DecodedJws<'a>, Option<Result<T, crate::json::JsonError>>), JwsError> {
    if compact.len() > MAX_JWS_BYTES {
        return Err(JwsError::TooLarge);
    }
    let mut parts = compact.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed(
            "expected three `.`-separated segments".into(),
        ));
    };
    let header = read_header(&segment(h, "header")?)?;

    let alg_name = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => {
            return Err(JwsError::Malformed(
                "header: `alg` missing or not a string".into(),
            ));
        }
    };
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(JwsError::AlgNone);
    }
    let alg = match Algorithm::from_name(alg_name) {
        Some(a) if allowed.contains(&a) => a,
        _ => return Err(JwsError::AlgNotAllowed(alg_name.to_owned())),
    };
    for p in KEY_CHOOSING_PARAMETERS {
        if header.contains_key(p) && !(rules == Rules::Dpop && p == "jwk") {
            return Err(JwsError::KeyParameterInHeader(p.to_owned()));
        }
    }
    if let Some(crit) = header.get("crit") {
        let first = crit
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("crit")
            .to_owned();
        return Err(JwsError::CritUnsupported(first));
    }
    let typ = match header.get("typ") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => "<not a string>",
        None => "<missing>",
    };
    let typ_norm = typ
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(typ, |_| typ.get(12..).unwrap_or_default());
    let absent_ok =
        matches!(rules, Rules::IdToken | Rules::AccessToken) && header.get("typ").is_none();
    let alternative_ok = rules == Rules::AccessToken && typ_norm.eq_ignore_ascii_case("at+jwt");
    if !absent_ok && !alternative_ok && !typ_norm.eq_ignore_ascii_case(expected_typ) {
        return Err(JwsError::TypInvalid {
            expected: expected_typ,
            found: typ.to_owned(),
        });
    }
    let kid = match header.get("kid") {
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwsError::Malformed("header: `kid` is not a string".into())),
        None => None,
    };

    let jwk = match (rules, header.get("jwk")) {
        (Rules::Dpop, Some(v)) => Some(
            serde_json::from_value::<PublicJwk>(v.clone())
                .map_err(|e| JwsError::Malformed(format!("header: `jwk`: {e}")))?,
        ),
        (Rules::Dpop, None) => {
            return Err(JwsError::Malformed(
                "header: `jwk` missing (a DPoP proof names its public key)".into(),
            ));
        }
        _ => None,
    };

    let payload = segment(p, "payload")?;
    // A typed read that succeeds establishes the syntax the one-pass check
    // needs; anything else takes the full checks, then the typed read.
    let fast = if typed && let Some(text) = plainly_clean(&payload) {
        serde_json::from_str::<T>(text).ok()
    } else {
        None
    };
    let value = match fast {
        Some(v) => Some(Ok(v)),
        None => {
            check_no_duplicates(&payload).map_err(|e| refused("payload", e))?;
            typed.then(|| crate::json::from_checked_slice(&payload))
        }
    };
    let signature = segment(s, "signature")?;
    let signing_input = compact
        .get(..h.len() + 1 + p.len())
        .ok_or_else(|| JwsError::Malformed("segments".into()))?;
    let decoded = DecodedJws {
        alg,
        kid,
        signing_input,
        payload,
        signature,
        jwk,
    };
    Ok((decoded, value))
}

/// Signs `payload` (JSON bytes) as a compact JWS with header
/// `{"alg", "kid", "typ"}`.
#[must_use]
pub fn sign(key: &SigningKey, typ: &str, payload: &[u8]) -> String {
    sign_with_kid(key, key.kid(), typ, payload)
}

/// As [`sign`], naming the key by `kid` in the header.
#[must_use]
pub fn sign_with_kid(key: &SigningKey, kid: &str, typ: &str, payload: &[u8]) -> String {
    let mut out = String::new();
    sign_into(&mut out, key, kid, typ, payload);
    out
}

/// Bytes of the base64url (unpadded) encoding of `n` bytes.
const fn encoded_len(n: usize) -> usize {
    n / 3 * 4 + (n % 3 * 4).div_ceil(3)
}

/// As [`sign_with_kid`], appending the JWS to `out` (which may already hold
/// the chain it extends): the payload is encoded straight into place and
/// the signature covers only what this call appended.
pub fn sign_into(out: &mut String, key: &SigningKey, kid: &str, typ: &str, payload: &[u8]) {
    // A struct, not a `json!` map: the bytes signed are the same whether or
    // not serde_json keeps insertion order (a feature any crate in the
    // build can turn on).
    #[derive(serde::Serialize)]
    struct Header<'a> {
        alg: &'a str,
        kid: &'a str,
        typ: &'a str,
    }
    let header = serde_json::to_string(&Header {
        alg: key.algorithm().as_str(),
        kid,
        typ,
    })
    .unwrap_or_default();
    // An ES256 signature is 64 bytes, as an Ed25519 one is.
    out.reserve(encoded_len(header.len()) + 1 + encoded_len(payload.len()) + 1 + encoded_len(64));
    let start = out.len();
    b64::encode_into(header, out);
    out.push('.');
    b64::encode_into(payload, out);
    let sig = key.sign(out.get(start..).unwrap_or_default().as_bytes());
    out.push('.');
    b64::encode_into(sig, out);
}

/// Reads the payload of a compact JWS without verifying anything.
///
/// # Errors
/// When the string is not a JWS with a base64url JSON payload.
pub fn unverified_payload(compact: &str) -> Result<Value, JwsError> {
    let p = compact
        .split('.')
        .nth(1)
        .ok_or_else(|| JwsError::Malformed("expected three `.`-separated segments".into()))?;
    serde_json::from_slice(&segment(p, "payload")?)
        .map_err(|_| JwsError::Malformed("payload is not JSON".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow_all() -> BTreeSet<Algorithm> {
        [Algorithm::EdDSA, Algorithm::ES256].into()
    }

    fn forge(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64::encode(header),
            b64::encode(payload),
            b64::encode([0u8; 64])
        )
    }

    #[test]
    fn a_jws_signed_into_a_buffer_is_the_jws_signed_alone() {
        for n in 0..200 {
            assert_eq!(encoded_len(n), b64::encode(vec![0u8; n]).len(), "{n} bytes");
        }
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = SigningKey::from_seed(alg, [5; 32]);
            let alone = sign_with_kid(&key, "k-1", "mandate+jwt", br#"{"a":[1,2,3]}"#);
            let mut chain = String::from("parent.jws.here~");
            sign_into(&mut chain, &key, "k-1", "mandate+jwt", br#"{"a":[1,2,3]}"#);
            let appended = chain.strip_prefix("parent.jws.here~").unwrap();
            let d = decode(appended, &allow_all(), "mandate+jwt").unwrap();
            // The signature covers the appended JWS only, not the prefix.
            assert!(
                key.verifying_key()
                    .unwrap()
                    .verify(d.signing_input.as_bytes(), &d.signature)
            );
            if alg == Algorithm::EdDSA {
                // Deterministic: byte for byte what signing alone gives.
                assert_eq!(appended, alone);
            }
        }
    }

    #[test]
    fn decodes_what_it_signs() {
        let key = SigningKey::from_seed(Algorithm::EdDSA, [3; 32]);
        let jws = sign(&key, "mandate+jwt", br#"{"a":1}"#);
        let d = decode(&jws, &allow_all(), "mandate+jwt").unwrap();
        assert_eq!(d.alg, Algorithm::EdDSA);
        assert_eq!(d.kid.as_deref(), Some(key.kid()));
        assert!(
            key.verifying_key()
                .unwrap()
                .verify(d.signing_input.as_bytes(), &d.signature)
        );
    }

    #[test]
    fn every_header_attack_has_its_own_reason() {
        let t = "mandate+jwt";
        let cases = [
            (r#"{"alg":"none","typ":"mandate+jwt"}"#, "alg_none"),
            (r#"{"alg":"NONE","typ":"mandate+jwt"}"#, "alg_none"),
            (
                r#"{"alg":"HS256","typ":"mandate+jwt","kid":"k"}"#,
                "alg_not_allowed",
            ),
            (r#"{"alg":"EdDSA","typ":"JWT","kid":"k"}"#, "typ_invalid"),
            (
                r#"{"alg":"EdDSA","typ":"mandate+jwt","jwk":{}}"#,
                "header_key_parameter",
            ),
            (
                r#"{"alg":"EdDSA","typ":"mandate+jwt","jku":"https://evil"}"#,
                "header_key_parameter",
            ),
            (
                r#"{"alg":"EdDSA","typ":"mandate+jwt","x5u":"https://evil"}"#,
                "header_key_parameter",
            ),
            (
                r#"{"alg":"EdDSA","typ":"mandate+jwt","x5c":[]}"#,
                "header_key_parameter",
            ),
            (
                r#"{"alg":"EdDSA","typ":"mandate+jwt","crit":["exp"],"exp":1}"#,
                "crit_unsupported",
            ),
            (
                r#"{"alg":"EdDSA","alg":"none","typ":"mandate+jwt"}"#,
                "duplicate_member",
            ),
        ];
        for (header, code) in cases {
            let err = decode(&forge(header, "{}"), &allow_all(), t).unwrap_err();
            assert_eq!(err.code(), code, "{header}");
        }
    }

    #[test]
    fn the_allow_list_is_the_verifiers_not_the_tokens() {
        let key = SigningKey::from_seed(Algorithm::ES256, [3; 32]);
        let jws = sign(&key, "mandate+jwt", b"{}");
        let only_eddsa: BTreeSet<_> = [Algorithm::EdDSA].into();
        assert_eq!(
            decode(&jws, &only_eddsa, "mandate+jwt").unwrap_err().code(),
            "alg_not_allowed"
        );
    }

    #[test]
    fn accepts_the_application_prefix_in_typ() {
        let jws = forge(r#"{"alg":"EdDSA","typ":"application/Mandate+JWT"}"#, "{}");
        assert!(decode(&jws, &allow_all(), "mandate+jwt").is_ok());
    }

    #[test]
    fn refuses_duplicate_payload_members_and_bad_shapes() {
        let jws = forge(
            r#"{"alg":"EdDSA","typ":"mandate+jwt"}"#,
            r#"{"exp":1,"exp":2}"#,
        );
        assert_eq!(
            decode(&jws, &allow_all(), "mandate+jwt")
                .unwrap_err()
                .code(),
            "duplicate_member"
        );
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.e30", "e30.e30=.e30"] {
            assert_eq!(
                decode(bad, &allow_all(), "mandate+jwt").unwrap_err().code(),
                "malformed",
                "{bad}"
            );
        }
    }

    mod typed {
        use super::*;
        use crate::model::MandateClaims;
        use proptest::prelude::*;

        const CLAIMS: &str = include_str!("../../../testdata/procurement-mandate.json");
        const HEADER: &str = r#"{"alg":"EdDSA","kid":"k","typ":"mandate+jwt"}"#;

        /// What `decode_typed` must answer: `decode`'s full checks, then the
        /// typed read of what they accepted.
        fn reference(compact: &str) -> Result<MandateClaims, TypedError> {
            let d = decode(compact, &allow_all(), MANDATE).map_err(TypedError::Jws)?;
            crate::json::from_checked_slice(&d.payload).map_err(TypedError::Payload)
        }

        const MANDATE: &str = "mandate+jwt";

        /// A valid document (a mandate's claims or a header), damaged in
        /// the ways the one-pass check and the typed read must agree on.
        fn damaged(doc: &'static str) -> impl Strategy<Value = Vec<u8>> {
            let insert = prop_oneof![
                Just(r#""iss":"https://x","#),
                Just(r#""a":1,"\u0061":2,"#),
                Just(r#""n":1e400,"#),
                Just(r#""n":18446744073709551616,"#),
                Just(
                    r#""deep":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"#
                ),
                Just(r#""jwk":{},"#),
                Just(r#"""#),
                Just(","),
                Just("}"),
                Just(r"\u0000"),
                Just(""),
            ];
            (0usize..4, insert, any::<u8>(), any::<prop::sample::Index>()).prop_map(
                move |(damage, text, byte, at)| {
                    let mut bytes = doc.as_bytes().to_vec();
                    let at = at.index(bytes.len() + 1);
                    match damage {
                        0 => bytes.splice(at..at, text.bytes()).for_each(drop),
                        1 => bytes.insert(at, byte),
                        2 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        // After the opening brace: a member the typed read sees.
                        _ => bytes.splice(1..1, text.bytes()).for_each(drop),
                    }
                    bytes
                },
            )
        }

        fn compact(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
            format!(
                "{}.{}.{}",
                b64::encode(header),
                b64::encode(payload),
                b64::encode(signature)
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]
            #[test]
            fn a_typed_decode_answers_as_decode_then_the_typed_read(
                payload in damaged(CLAIMS),
                bad_signature in any::<bool>(),
            ) {
                let signature: &[u8] = if bad_signature { b"\xff" } else { &[0; 64] };
                let mut jws = compact(HEADER.as_bytes(), &payload, signature);
                if bad_signature {
                    // Not base64url: the signature segment's own error.
                    jws.push('=');
                }
                let typed = decode_typed::<MandateClaims>(&jws, &allow_all(), MANDATE);
                prop_assert_eq!(typed.map(|(_, c)| c), reference(&jws));
            }

            #[test]
            fn a_header_reads_as_the_full_checks_read_it(header in damaged(HEADER)) {
                prop_assert_eq!(read_header(&header), read_header_thoroughly(&header));
            }
        }

        #[test]
        fn the_fast_path_is_taken_and_agrees_on_a_real_mandate() {
            let jws = compact(HEADER.as_bytes(), CLAIMS.as_bytes(), &[0; 64]);
            assert!(plainly_clean(CLAIMS.as_bytes()).is_some());
            let (_, claims) = decode_typed::<MandateClaims>(&jws, &allow_all(), MANDATE).unwrap();
            assert_eq!(Ok(claims), reference(&jws));
            // A duplicate member is refused as `decode` refuses it, not
            // read (serde would keep the last one).
            let twice = CLAIMS.replacen('{', r#"{"iss":"https://evil.example","#, 1);
            let jws = compact(HEADER.as_bytes(), twice.as_bytes(), &[0; 64]);
            let err = decode_typed::<MandateClaims>(&jws, &allow_all(), MANDATE).unwrap_err();
            assert!(
                matches!(
                    err,
                    TypedError::Jws(JwsError::DuplicateMember {
                        part: "payload",
                        ..
                    })
                ),
                "{err:?}"
            );
        }
    }
}
