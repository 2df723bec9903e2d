//! Locations and how one covers another.
//!
//! A location is an absolute `https` or `http` URL with no user info, query or
//! fragment. Location `P` covers location `C` when they have the same scheme,
//! host (case-insensitive) and port (default ports made explicit), and `P`'s
//! path segments are a prefix of `C`'s: `https://h/repos/acme` covers
//! `https://h/repos/acme` and `https://h/repos/acme/app/pulls/1`, but not
//! `https://h/repos/acme-evil` nor `https://h/repos`. Dot segments are
//! resolved before comparing (`/repos/acme/../evil` is `/repos/evil`); empty
//! segments are ignored; a segment holding an encoded `/` or `\` is refused,
//! because servers disagree on what it means. A request's location may carry a
//! query, which plays no part in coverage.

use url::Url;

/// A parsed location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    scheme: String,
    host: String,
    port: u16,
    segments: Vec<String>,
}

/// Why a location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// Not an absolute URL.
    #[error("`{0}` is not an absolute URL")]
    NotAUrl(String),
    /// Not `https` or `http`.
    #[error("`{0}` must use https or http")]
    Scheme(String),
    /// Carries user info, or (in a mandate) a query or fragment.
    #[error("`{0}` must not carry user info, a query or a fragment")]
    Extra(String),
    /// An encoded slash or backslash in the path.
    #[error("`{0}` holds an encoded `/` or `\\` in its path")]
    EncodedSeparator(String),
}

impl Location {
    fn parse_inner(s: &str, allow_query: bool) -> Result<Self, LocationError> {
        let url = Url::parse(s).map_err(|_| LocationError::NotAUrl(s.to_owned()))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(LocationError::Scheme(s.to_owned()));
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.fragment().is_some()
            || (!allow_query && url.query().is_some())
        {
            return Err(LocationError::Extra(s.to_owned()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| LocationError::NotAUrl(s.to_owned()))?
            .to_ascii_lowercase();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| LocationError::NotAUrl(s.to_owned()))?;
        let mut segments = Vec::new();
        for seg in url.path_segments().into_iter().flatten() {
            if seg.is_empty() {
                continue;
            }
            if encodes_separator(seg) {
                return Err(LocationError::EncodedSeparator(s.to_owned()));
            }
            segments.push(seg.to_owned());
        }
        Ok(Self {
            scheme: url.scheme().to_owned(),
            host,
            port,
            segments,
        })
    }

    /// Parses a location written in a mandate (no query allowed).
    ///
    /// # Errors
    /// See [`LocationError`].
    pub fn parse_grant(s: &str) -> Result<Self, LocationError> {
        Self::parse_inner(s, false)
    }

    /// Parses the location of a requested action (a query is allowed and
    /// ignored).
    ///
    /// # Errors
    /// See [`LocationError`].
    pub fn parse_request(s: &str) -> Result<Self, LocationError> {
        Self::parse_inner(s, true)
    }

    /// Whether this location covers `other` (see the module docs).
    #[must_use]
    pub fn covers(&self, other: &Location) -> bool {
        self.scheme == other.scheme
            && self.host == other.host
            && self.port == other.port
            && other.segments.len() >= self.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a == b)
    }
}

/// Whether a path segment holds `%2F` or `%5C` (any case).
fn encodes_separator(seg: &str) -> bool {
    seg.as_bytes().windows(3).any(|w| {
        matches!(w, [b'%', b'2', c] if c.eq_ignore_ascii_case(&b'f'))
            || matches!(w, [b'%', b'5', c] if c.eq_ignore_ascii_case(&b'c'))
    })
}

/// Grant locations parsed before, per thread: a mandate's locations are
/// judged on every decision, and parsing a URL costs more than the rest of
/// the comparison. Bounded; emptied when full.
const PARSED_GRANTS: usize = 4096;

thread_local! {
    static GRANTS: std::cell::RefCell<std::collections::HashMap<String, Option<Location>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Whether any of `grants` covers `requested` (both as strings; anything
/// unparseable covers nothing).
#[must_use]
pub fn any_covers(grants: &[String], requested: &Location) -> bool {
    GRANTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        grants.iter().any(|g| {
            if let Some(parsed) = cache.get(g.as_str()) {
                return parsed.as_ref().is_some_and(|p| p.covers(requested));
            }
            let parsed = Location::parse_grant(g).ok();
            let covers = parsed.as_ref().is_some_and(|p| p.covers(requested));
            if cache.len() >= PARSED_GRANTS {
                cache.clear();
            }
            cache.insert(g.clone(), parsed);
            covers
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(p: &str, c: &str) -> bool {
        Location::parse_grant(p)
            .unwrap()
            .covers(&Location::parse_request(c).unwrap())
    }

    #[test]
    fn any_covers_gives_the_same_answer_from_its_cache() {
        let grants = vec![
            "https://h.example/repos/acme".to_owned(),
            "not a url".to_owned(),
        ];
        let inside = Location::parse_request("https://h.example/repos/acme/app").unwrap();
        let outside = Location::parse_request("https://h.example/repos/other").unwrap();
        for _ in 0..2 {
            assert!(any_covers(&grants, &inside));
            assert!(!any_covers(&grants, &outside));
            assert!(
                !any_covers(&grants[1..], &inside),
                "unparseable covers nothing"
            );
        }
    }

    #[test]
    fn encoded_separators_are_found_in_any_case() {
        for seg in ["a%2fb", "%2F", "x%5c", "%5Cy"] {
            assert!(encodes_separator(seg), "{seg}");
        }
        for seg in ["a%20b", "%2", "%5", "25f", "a%2eb"] {
            assert!(!encodes_separator(seg), "{seg}");
        }
    }

    #[test]
    fn a_location_covers_itself_and_what_is_below_it() {
        assert!(covers(
            "https://h.example/repos/acme",
            "https://h.example/repos/acme"
        ));
        assert!(covers(
            "https://h.example/repos/acme",
            "https://H.EXAMPLE:443/repos/acme/app/pulls/1?x=1"
        ));
        assert!(covers(
            "https://vendor-portal.example.com",
            "https://vendor-portal.example.com/search"
        ));
    }

    #[test]
    fn a_location_does_not_cover_siblings_parents_or_other_origins() {
        assert!(!covers(
            "https://h.example/repos/acme",
            "https://h.example/repos/acme-evil"
        ));
        assert!(!covers(
            "https://h.example/repos/acme",
            "https://h.example/repos"
        ));
        assert!(!covers(
            "https://h.example/repos/acme",
            "http://h.example/repos/acme"
        ));
        assert!(!covers(
            "https://h.example/repos/acme",
            "https://h.example:8443/repos/acme"
        ));
        assert!(!covers(
            "https://h.example/repos/acme",
            "https://evil.example/repos/acme"
        ));
        assert!(!covers(
            "https://h.example/repos/acme",
            "https://h.example/repos/acme/../evil"
        ));
        assert!(!covers(
            "https://h.example/repos/acme",
            "https://h.example/repos/acme/%2e%2e/evil"
        ));
    }

    #[test]
    fn refuses_encoded_separators_user_info_and_queries_in_grants() {
        assert!(matches!(
            Location::parse_request("https://h/a%2Fb"),
            Err(LocationError::EncodedSeparator(_))
        ));
        assert!(matches!(
            Location::parse_grant("https://u:p@h/a"),
            Err(LocationError::Extra(_))
        ));
        assert!(matches!(
            Location::parse_grant("https://h/a?x=1"),
            Err(LocationError::Extra(_))
        ));
        assert!(matches!(
            Location::parse_grant("ftp://h/a"),
            Err(LocationError::Scheme(_))
        ));
        assert!(matches!(
            Location::parse_grant("/relative"),
            Err(LocationError::NotAUrl(_))
        ));
    }
}
