//! Strict JSON for untrusted input: duplicate member names are refused (the
//! classic JSON parser-differential attack), and every error names the JSON
//! path where it happened.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON document that could not be read, with the path where reading failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct JsonError {
    /// JSON path of the offending member (`lifecycle.hard_expiry`), or `.` for
    /// the document itself.
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
    /// Whether the problem was a duplicate member name.
    pub duplicate: bool,
}

/// Walks a document and fails on the first object that names a member twice.
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

/// Deepest nesting of arrays and objects accepted in untrusted JSON: one
/// limit for every document that enters (requests, facts, events, mandates),
/// well inside what any parser on the signal path accepts after wrapping.
pub const MAX_DEPTH: usize = 32;

/// Marker placed in the error message so the caller can tell a duplicate
/// member from any other syntax problem.
const DUPLICATE_MARK: &str = "duplicate member";

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E: de::Error>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        // Objects are small: a linear scan beats hashing until they are not.
        // Keys are borrowed from the input when they have no escapes, so
        // the common object costs no allocation per member.
        let mut few: Vec<Key<'de>> = Vec::new();
        let mut many: HashSet<Key<'de>> = HashSet::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let duplicate = if many.is_empty() && few.len() < 32 {
                few.contains(&key)
            } else {
                if many.is_empty() {
                    many.extend(few.drain(..));
                }
                many.contains(&key)
            };
            if duplicate {
                return Err(de::Error::custom(format!("{DUPLICATE_MARK} `{}`", key.0)));
            }
            if many.is_empty() && few.len() < 32 {
                few.push(key);
            } else {
                many.insert(key);
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

/// A member name: borrowed from the input when it has no escapes.
#[derive(PartialEq, Eq, Hash)]
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(std::borrow::Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(std::borrow::Cow::Owned(v)))
    }
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s.is_empty() { ".".to_owned() } else { s }
}

/// Checks that `bytes` is one JSON value with no duplicate member names, no
/// nesting deeper than [`MAX_DEPTH`], and no number that would lose precision
/// when read (see [`crate::number`]).
///
/// # Errors
/// A syntax error or a duplicate member, with its path.
pub fn check_no_duplicates(bytes: &[u8]) -> Result<(), JsonError> {
    // The common document is settled in one pass over its bytes plus
    // serde_json's validating skip (valid UTF-8 and syntax); anything else
    // takes the full walk, which names the problem.
    if plainly_valid(bytes) {
        return Ok(());
    }
    check_thoroughly(bytes)
}

/// Whether `bytes` is certainly valid JSON (UTF-8 included) with no
/// duplicate member, no excess depth and no inexact number.
fn plainly_valid(bytes: &[u8]) -> bool {
    plainly_clean(bytes).is_some_and(|text| serde_json::from_str::<de::IgnoredAny>(text).is_ok())
}

/// UTF-8 and the one-pass scan ([`crate::number::plainly_clean`]): for a
/// document whose syntax something else establishes (a validating skip, or
/// a typed read that succeeds), no duplicate member, no excess depth and no
/// inexact number. Returns the document as text: read with
/// `serde_json::from_str`, its strings are not validated as UTF-8 a second
/// time, one by one, as `from_slice` would.
pub(crate) fn plainly_clean(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|_| crate::number::plainly_clean(bytes))
}

/// [`check_no_duplicates`] by walking every value through serde, without its
/// one-pass shortcut: the reference the shortcut is tested (and fuzzed)
/// against.
///
/// # Errors
/// As [`check_no_duplicates`].
pub fn check_thoroughly(bytes: &[u8]) -> Result<(), JsonError> {
    // Fast path without path tracking; on failure, walk again to name the path.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if NoDuplicates::deserialize(&mut de).is_ok() && de.end().is_ok() {
        return crate::number::check_exact_numbers(bytes);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let res: Result<NoDuplicates, _> = serde_path_to_error::deserialize(&mut de);
    match res {
        Ok(_) => de.end().map_err(|e| JsonError {
            path: ".".into(),
            message: e.to_string(),
            duplicate: false,
        }),
        Err(e) => {
            let message = e.inner().to_string();
            Err(JsonError {
                path: path_string(e.path()),
                duplicate: message.contains(DUPLICATE_MARK),
                message,
            })
        }
    }
}

/// Parses untrusted JSON into `T`: duplicates refused, errors with paths.
///
/// # Errors
/// A syntax error, a duplicate member, or a value that does not fit `T`.
pub fn from_slice_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    // A successful typed read establishes valid syntax, so the common
    // document needs only the one pass besides it. Every other case runs
    // the full checks in their usual order, so errors are the same.
    if let Some(text) = plainly_clean(bytes)
        && let Ok(value) = serde_json::from_str(text)
    {
        return Ok(value);
    }
    check_thoroughly(bytes)?;
    from_checked_slice(bytes)
}

/// Reads into `T` a document [`check_no_duplicates`] has already accepted
/// (as [`crate::jws::decode`] does for every payload), naming the path of
/// any member that does not fit `T`.
///
/// # Errors
/// A value that does not fit `T`.
pub(crate) fn from_checked_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| JsonError {
        path: path_string(e.path()),
        message: e.inner().to_string(),
        duplicate: false,
    })?;
    de.end().map_err(|e| JsonError {
        path: ".".into(),
        message: e.to_string(),
        duplicate: false,
    })?;
    Ok(value)
}

/// Objects with at most this many members are searched in order rather than
/// through their index: comparing a few short names costs less than hashing
/// the one looked up.
const SCAN_MEMBERS: usize = 8;

/// The member of `object` named `name`. Member names in a [`serde_json::Map`]
/// are unique, so searching in order and looking up by hash give the same
/// answer; small objects (a request's context, a resource's properties, a
/// fact set) take the cheaper of the two.
#[must_use]
pub(crate) fn member<'m>(
    object: &'m serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'m serde_json::Value> {
    if object.len() <= SCAN_MEMBERS {
        object
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    } else {
        object.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicate_members_at_any_depth() {
        let err = check_no_duplicates(br#"{"a":{"b":1,"b":2}}"#).unwrap_err();
        assert!(err.duplicate);
        assert_eq!(err.path, "a");
        assert!(err.message.contains("`b`"));
    }

    #[test]
    fn accepts_same_name_in_sibling_objects() {
        check_no_duplicates(br#"[{"a":1},{"a":2}]"#).unwrap();
    }

    #[test]
    fn names_the_path_of_a_type_error() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct T {
            x: Vec<u8>,
        }
        let err = from_slice_strict::<T>(br#"{"x":[1,"no"]}"#).unwrap_err();
        assert_eq!(err.path, "x[1]");
    }

    #[test]
    fn refuses_trailing_garbage() {
        assert!(check_no_duplicates(b"{} {}").is_err());
    }

    #[test]
    fn a_member_is_found_the_same_way_in_small_and_large_objects() {
        for size in [0usize, 1, 8, 9, 40] {
            let object: serde_json::Map<String, serde_json::Value> = (0..size)
                .map(|i| (format!("m{i}"), serde_json::Value::from(i)))
                .collect();
            for i in 0..=size {
                let name = format!("m{i}");
                assert_eq!(
                    member(&object, &name),
                    object.get(&name),
                    "size {size}, {name}"
                );
            }
            assert_eq!(member(&object, "m"), None);
        }
    }

    mod one_pass {
        use super::super::*;
        use proptest::prelude::*;

        /// JSON text (sometimes broken) built to hit what the one-pass
        /// check must get right: repeated and escaped member names, strings
        /// holding quotes and brackets, inexact numbers, deep nesting.
        fn text() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("0".to_owned()),
                Just("-12".to_owned()),
                Just("4999.5".to_owned()),
                Just("1e400".to_owned()),
                Just("18446744073709551616".to_owned()),
                Just("0.10000000000000000001".to_owned()),
                Just("true".to_owned()),
                Just("null".to_owned()),
                Just(r#""x\"[{,""#.to_owned()),
                Just(r#""\u0061""#.to_owned()),
                Just("\"é\"".to_owned()),
            ];
            let tree = leaf.prop_recursive(6, 48, 6, |inner| {
                let key = prop_oneof![
                    Just("a"),
                    Just("b"),
                    Just(r"\u0061"),
                    Just(r#"\""#),
                    Just(""),
                    Just("a]"),
                ];
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec((key, inner), 0..5).prop_map(|members| {
                        let members: Vec<String> = members
                            .into_iter()
                            .map(|(k, v)| format!("\"{k}\": {v}"))
                            .collect();
                        format!("{{{}}}", members.join(","))
                    }),
                ]
            });
            (tree, 0usize..4, any::<u8>(), any::<prop::sample::Index>()).prop_map(
                |(doc, damage, byte, at)| {
                    let mut bytes = doc.into_bytes();
                    let at = at.index(bytes.len() + 1);
                    match damage {
                        1 => bytes.insert(at, byte),
                        2 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => {}
                    }
                    String::from_utf8_lossy(&bytes).into_owned()
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]
            #[test]
            fn the_one_pass_check_agrees_with_the_full_walk(doc in text()) {
                let bytes = doc.as_bytes();
                let full = check_thoroughly(bytes);
                if plainly_valid(bytes) {
                    prop_assert_eq!(&full, &Ok(()));
                }
                prop_assert_eq!(check_no_duplicates(bytes), full.clone());
                let reference = full.and_then(|()| {
                    serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| JsonError {
                        path: ".".into(),
                        message: e.to_string(),
                        duplicate: false,
                    })
                });
                let strict = from_slice_strict::<serde_json::Value>(bytes);
                prop_assert_eq!(strict.is_ok(), reference.is_ok());
                if let (Ok(a), Ok(b)) = (&strict, &reference) {
                    prop_assert_eq!(a, b);
                }
            }
        }

        #[test]
        fn a_duplicate_hidden_by_an_escape_is_still_refused() {
            let doc = br#"{"a":1,"\u0061":2}"#;
            assert!(!plainly_valid(doc));
            assert!(check_no_duplicates(doc).unwrap_err().duplicate);
            let doc = br#"{"a":{"b":1},"c":[{"b":2}],"b":3}"#;
            assert!(plainly_valid(doc), "the same name in different objects");
            let doc = br#"{"a":{"b":1,"b":2}}"#;
            assert!(!plainly_valid(doc));
            assert_eq!(check_no_duplicates(doc).unwrap_err().path, "a");
        }
    }
}
