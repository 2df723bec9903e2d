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
    check_no_duplicates(bytes)?;
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
}
