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

    /// Whether this location covers a requested one.
    pub(crate) fn covers_requested(&self, other: &Requested<'_>) -> bool {
        match other {
            Requested::Parsed(l) => self.covers(l),
            Requested::Plain {
                scheme,
                host,
                port,
                path,
            } => {
                let mut theirs = path
                    .as_bytes()
                    .split(|&b| b == b'/')
                    .filter(|s| !s.is_empty());
                self.scheme == *scheme
                    && self.host == *host
                    && self.port == *port
                    && self
                        .segments
                        .iter()
                        .all(|s| theirs.next().is_some_and(|t| t == s.as_bytes()))
            }
        }
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

/// A grant location as parsed, shared with the per-thread cache.
type ParsedGrant = Result<std::sync::Arc<Location>, LocationError>;

thread_local! {
    static GRANTS: std::cell::RefCell<std::collections::HashMap<String, ParsedGrant>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// [`Location::parse_grant`], answered from the per-thread cache when the
/// same string was parsed before (validation, attenuation and decisions all
/// read the same few grant locations over and over).
///
/// # Errors
/// See [`LocationError`].
pub(crate) fn grant(s: &str) -> ParsedGrant {
    GRANTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(parsed) = cache.get(s) {
            return parsed.clone();
        }
        let parsed = Location::parse_grant(s).map(std::sync::Arc::new);
        if cache.len() >= PARSED_GRANTS {
            cache.clear();
        }
        cache.insert(s.to_owned(), parsed.clone());
        parsed
    })
}

/// Whether any of `grants` covers `requested` (both as strings; anything
/// unparseable covers nothing).
#[must_use]
pub fn any_covers(grants: &[String], requested: &Location) -> bool {
    any_grant(grants, |p| p.covers(requested))
}

/// [`any_covers`] for a location read by [`Requested::parse`].
pub(crate) fn any_covers_requested(grants: &[String], requested: &Requested<'_>) -> bool {
    any_grant(grants, |p| p.covers_requested(requested))
}

fn any_grant(grants: &[String], covers: impl Fn(&Location) -> bool) -> bool {
    GRANTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        grants.iter().any(|g| {
            if let Some(parsed) = cache.get(g.as_str()) {
                return parsed.as_deref().is_ok_and(&covers);
            }
            let parsed = Location::parse_grant(g).map(std::sync::Arc::new);
            let answer = parsed.as_deref().is_ok_and(&covers);
            if cache.len() >= PARSED_GRANTS {
                cache.clear();
            }
            cache.insert(g.clone(), parsed);
            answer
        })
    })
}

/// A requested location, read without copying when it is plain (see
/// [`Requested::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requested<'a> {
    /// Read in place: `host` is lower case and the path has no dot segment
    /// and nothing a URL parser would change.
    Plain {
        scheme: &'static str,
        host: &'a str,
        port: u16,
        path: &'a str,
    },
    /// Read by the URL parser.
    Parsed(Location),
}

impl<'a> Requested<'a> {
    /// Reads a request's location: in place when it is plain — `https://` or
    /// `http://`, a lower-case DNS name whose last label starts with a
    /// letter, an optional port, and a path of unreserved characters and
    /// sub-delimiters without `.` or `..` segments, `%` or `\` — and by the
    /// URL parser otherwise. Both read a plain location alike (a property
    /// test holds them to it); only the URL parser refuses.
    ///
    /// # Errors
    /// See [`LocationError`].
    pub(crate) fn parse(s: &'a str) -> Result<Self, LocationError> {
        match plain(s) {
            Some(r) => Ok(r),
            None => Location::parse_request(s).map(Requested::Parsed),
        }
    }

    #[cfg(test)]
    fn to_location(&self) -> Location {
        match self {
            Requested::Plain {
                scheme,
                host,
                port,
                path,
            } => Location {
                scheme: (*scheme).to_owned(),
                host: (*host).to_owned(),
                port: *port,
                segments: segments(path).map(str::to_owned).collect(),
            },
            Requested::Parsed(l) => l.clone(),
        }
    }
}

#[cfg(test)]
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn plain(s: &str) -> Option<Requested<'_>> {
    let (scheme, rest, default_port) = if let Some(rest) = s.strip_prefix("https://") {
        ("https", rest, 443)
    } else if let Some(rest) = s.strip_prefix("http://") {
        ("http", rest, 80)
    } else {
        return None;
    };
    // Byte positions of ASCII delimiters are char boundaries.
    let end = rest
        .bytes()
        .position(|b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.bytes().position(|b| b == b':') {
        Some(i) => {
            let (host, port) = authority.split_at(i);
            (host, plain_port(port.get(1..)?)?)
        }
        None => (authority, default_port),
    };
    if !plain_host(host) {
        return None;
    }
    let (path, query) = match tail.bytes().position(|b| b == b'?') {
        Some(i) => {
            let (path, query) = tail.split_at(i);
            (path, Some(query))
        }
        None => (tail, None),
    };
    // A fragment is refused by the URL parser; let it say so.
    if query.is_some_and(|q| q.bytes().any(|b| b == b'#')) {
        return None;
    }
    if !path.bytes().all(plain_path_byte)
        || path
            .as_bytes()
            .split(|&b| b == b'/')
            .any(|seg| seg == b"." || seg == b"..")
    {
        return None;
    }
    Some(Requested::Plain {
        scheme,
        host,
        port,
        path,
    })
}

/// Unreserved characters, sub-delimiters, `:`, `@` and `/`.
fn plain_path_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        | b':' | b'@' | b'/')
}

fn plain_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// Lower-case letters, digits, dots and hyphens, no empty label, no
/// internationalised (`xn--`) label, and a last label that starts with a
/// letter (so the URL parser would not read the host as an IPv4 number).
fn plain_host(host: &str) -> bool {
    let mut last_first = None;
    for label in host.as_bytes().split(|&b| b == b'.') {
        if label.is_empty()
            || label.starts_with(b"xn--")
            || !label
                .iter()
                .all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        {
            return false;
        }
        last_first = label.first().copied();
    }
    last_first.is_some_and(|b| b.is_ascii_lowercase())
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
    fn a_plain_location_is_read_in_place_and_anything_else_by_the_url_parser() {
        for plain in [
            "https://vendor-portal.example.com/search",
            "http://h.example:8080/a/b//c/?q=1&r=..",
            "https://h.example",
            "https://h.example/a:b@c/~x/",
        ] {
            assert!(
                matches!(Requested::parse(plain), Ok(Requested::Plain { .. })),
                "{plain}"
            );
        }
        for parsed in [
            "https://H.example/a",
            "https://h.example/a/../b",
            "https://h.example/a/%2e%2e/b",
            "https://h.example/a\\b",
            "https://127.0.0.1/a",
            "https://0x7f.1/a",
            "https://xn--nxasmq6b.example/a",
            "https://h.example./a",
            "https://u@h.example/a",
            "https://h.example:/a",
            "https://h.example/a b",
            " https://h.example/a",
            "https://h.example/a?x#f",
        ] {
            assert!(
                !matches!(Requested::parse(parsed), Ok(Requested::Plain { .. })),
                "{parsed}"
            );
        }
        assert!(matches!(
            Requested::parse("https://h.example/a?x#f"),
            Err(LocationError::Extra(_))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Where the in-place reader reads a location, the URL parser reads
        /// the same scheme, host, port and segments.
        #[test]
        fn the_plain_reader_agrees_with_the_url_parser(
            s in "(https?|HTTPS|ftp)://[a-zA-Z0-9.:@%_-]{0,14}(/(\\.|\\.\\.|[a-z0-9.~%:@ \\\\-]{0,6})){0,4}([?#][a-z#=.]{0,4})?"
        ) {
            if let Ok(r @ Requested::Plain { .. }) = Requested::parse(&s) {
                let parsed = Location::parse_request(&s);
                proptest::prop_assert_eq!(Ok(r.to_location()), parsed, "{}", s);
            }
        }
    }

    #[test]
    fn a_plain_location_is_covered_as_its_parsed_form_is() {
        let grant = Location::parse_grant("https://h.example/repos/acme").unwrap();
        for (requested, covered) in [
            ("https://h.example/repos/acme", true),
            ("https://h.example:443//repos//acme/app/?x", true),
            ("https://h.example/repos/acme-evil", false),
            ("https://h.example/repos", false),
            ("http://h.example/repos/acme", false),
            ("https://h.example:8443/repos/acme", false),
        ] {
            let r = Requested::parse(requested).unwrap();
            assert!(matches!(r, Requested::Plain { .. }), "{requested}");
            assert_eq!(grant.covers_requested(&r), covered, "{requested}");
            assert_eq!(grant.covers(&r.to_location()), covered, "{requested}");
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
