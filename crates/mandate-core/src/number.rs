//! Numbers without loss.
//!
//! JSON numbers are decimal text; a reader that turns them into `f64` quietly
//! rounds: `500.00000000000001` becomes `500`, and `9007199254740993` becomes
//! `9007199254740992`. A spending cap of 500 must not admit the first, and an
//! integer constraint must not confuse the second with its neighbour. So:
//!
//! - untrusted JSON is refused when a number in it would not read back as the
//!   same value ([`check_exact_numbers`]): an integer outside the 64-bit
//!   range, or a fraction with more digits than an `f64` keeps. The error
//!   names the member and quotes the number;
//! - numbers that were read are compared exactly ([`compare`]): integers as
//!   integers, an integer against a fraction without rounding either.

use std::cmp::Ordering;

use serde_json::Number;

use crate::json::{JsonError, MAX_DEPTH};

/// Compares two JSON numbers exactly (`None` only for a NaN, which JSON
/// cannot carry).
#[must_use]
pub fn compare(a: &Number, b: &Number) -> Option<Ordering> {
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (Some(x), None) => b.as_f64().and_then(|f| cmp_int_float(x, f)),
        (None, Some(y)) => a
            .as_f64()
            .and_then(|f| cmp_int_float(y, f))
            .map(Ordering::reverse),
        (None, None) => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Compares a number with an `f64` bound exactly.
#[must_use]
pub fn compare_f64(a: &Number, bound: f64) -> Option<Ordering> {
    match integer(a) {
        Some(x) => cmp_int_float(x, bound),
        None => a.as_f64()?.partial_cmp(&bound),
    }
}

fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// `x` against `f` without rounding `x` to a float.
fn cmp_int_float(x: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^100 is beyond every 64-bit integer and exact as an f64.
    const LIMIT: f64 = 1_267_650_600_228_229_401_496_703_205_376.0;
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f <= -LIMIT {
        return Some(Ordering::Greater);
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "|f| < 2^100 and trunc() makes it integral: the cast is exact"
    )]
    let whole = f.trunc() as i128;
    Some(match x.cmp(&whole) {
        Ordering::Equal => 0.0_f64.partial_cmp(&f.fract())?,
        other => other,
    })
}

/// Checks every number in `bytes` (one JSON value that already parsed) reads
/// back exactly, and that arrays and objects nest at most [`MAX_DEPTH`] deep.
///
/// # Errors
/// The first offending number or the member that nests too deep, with its path.
pub fn check_exact_numbers(bytes: &[u8]) -> Result<(), JsonError> {
    let mut path: Vec<Frame> = Vec::new();
    let mut i = 0;
    // After a string inside an object, whether it was a member name.
    let mut expect_key = false;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'{' | b'[' => {
                if path.len() >= MAX_DEPTH {
                    return Err(error(
                        bytes,
                        &path,
                        format!("nests deeper than {MAX_DEPTH} levels"),
                    ));
                }
                path.push(if c == b'{' {
                    Frame::Object(None)
                } else {
                    Frame::Array(0)
                });
                expect_key = c == b'{';
                i += 1;
            }
            b'}' | b']' => {
                path.pop();
                expect_key = false;
                i += 1;
            }
            b',' => {
                match path.last_mut() {
                    Some(Frame::Array(n)) => *n += 1,
                    Some(Frame::Object(_)) => expect_key = true,
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(bytes, i + 1);
                if expect_key {
                    if let Some(Frame::Object(key)) = path.last_mut() {
                        *key = Some(i + 1..end.saturating_sub(1));
                    }
                    expect_key = false;
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let text;
                (i, text) = number_at(bytes, i);
                if !is_exact(text) {
                    return Err(error(
                        bytes,
                        &path,
                        format!(
                            "number `{text}` cannot be read without losing precision \
                             (integers must fit in 64 bits, fractions in 17 significant digits)"
                        ),
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Where the walk is: inside an object (with the byte range of the member
/// name last read, so no name is copied unless an error must name it) or
/// an array (with the index of the element).
enum Frame {
    Object(Option<std::ops::Range<usize>>),
    Array(usize),
}

fn error(bytes: &[u8], path: &[Frame], message: String) -> JsonError {
    let mut p = String::new();
    for f in path {
        match f {
            Frame::Object(Some(k)) => {
                if !p.is_empty() {
                    p.push('.');
                }
                p.push_str(&String::from_utf8_lossy(
                    bytes.get(k.clone()).unwrap_or_default(),
                ));
            }
            Frame::Object(None) => {}
            Frame::Array(n) => p.push_str(&format!("[{n}]")),
        }
    }
    JsonError {
        path: if p.is_empty() { ".".into() } else { p },
        message,
        duplicate: false,
    }
}

/// The number literal that starts at `start`: the index just past it, and
/// its text (empty if it is not UTF-8, which `is_exact` refuses).
fn number_at(bytes: &[u8], start: usize) -> (usize, &str) {
    let mut i = start;
    while bytes
        .get(i)
        .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
    {
        i += 1;
    }
    let text = std::str::from_utf8(bytes.get(start..i).unwrap_or_default()).unwrap_or_default();
    (i, text)
}

/// Members an object may have for [`plainly_clean`] to compare their names
/// pairwise; a larger object takes the full check.
const PLAIN_MEMBERS: usize = 64;

/// One pass that answers, for a document that is valid JSON, whether it
/// certainly has no duplicate member name, no nesting deeper than
/// [`MAX_DEPTH`] and no number that would lose precision. `false` means "not
/// certain" (a member name with an escape, an object of more than
/// [`PLAIN_MEMBERS`] members, or a problem): the caller then runs the full
/// checks, which name the problem. The answer means nothing for a document
/// that is not valid JSON, so the caller must establish that separately.
#[must_use]
pub(crate) fn plainly_clean(bytes: &[u8]) -> bool {
    // Names of the members of every open object, as byte ranges; each frame
    // is `Some(where its object's names start)`, or `None` for an array.
    let mut names: Vec<(usize, usize)> = Vec::new();
    let mut frames: Vec<Option<usize>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'{' | b'[' => {
                if frames.len() >= MAX_DEPTH {
                    return false;
                }
                frames.push((c == b'{').then_some(names.len()));
                expect_key = c == b'{';
                i += 1;
            }
            b'}' | b']' => {
                if let Some(Some(start)) = frames.pop() {
                    names.truncate(start);
                }
                expect_key = false;
                i += 1;
            }
            b',' => {
                expect_key = matches!(frames.last(), Some(Some(_)));
                i += 1;
            }
            b'"' => {
                let end = string_end(bytes, i + 1);
                if expect_key {
                    let (Some(Some(start)), Some(name)) =
                        (frames.last(), bytes.get(i + 1..end.saturating_sub(1)))
                    else {
                        return false;
                    };
                    let open = names.get(*start..).unwrap_or_default();
                    if name.contains(&b'\\')
                        || open.len() >= PLAIN_MEMBERS
                        || open.iter().any(|&(s, e)| bytes.get(s..e) == Some(name))
                    {
                        return false;
                    }
                    names.push((i + 1, end.saturating_sub(1)));
                    expect_key = false;
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let text;
                (i, text) = number_at(bytes, i);
                if !is_exact(text) {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// Index just past the closing quote of a string whose body starts at `i`.
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    while let Some(rest) = bytes.get(i..) {
        match memchr::memchr2(b'"', b'\\', rest) {
            Some(at) if rest.get(at) == Some(&b'"') => return i + at + 1,
            Some(at) => i += at + 2,
            None => return bytes.len(),
        }
    }
    i
}

/// Whether the number literal `text` reads back as the same value.
fn is_exact(text: &str) -> bool {
    if !text.contains(['.', 'e', 'E']) {
        return text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok();
    }
    let Ok(f) = text.parse::<f64>() else {
        return false;
    };
    if !f.is_finite() {
        return false;
    }
    match (decimal(text), decimal(&format!("{f:e}"))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A decimal literal as (negative, significant digits, exponent of the last
/// digit); zero is `(false, "", 0)` whatever its sign.
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(at) => (
            rest.get(..at)?,
            rest.get(at + 1..)?
                .trim_start_matches('+')
                .parse::<i64>()
                .ok()?,
        ),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{int}{frac}");
    let exp = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
    let trimmed_end = digits.trim_end_matches('0');
    let exp = exp.checked_add(i64::try_from(digits.len() - trimmed_end.len()).ok()?)?;
    let significant = trimmed_end.trim_start_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    Some((neg, significant.to_owned(), exp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(v: serde_json::Value) -> Number {
        match v {
            serde_json::Value::Number(n) => n,
            _ => unreachable!(),
        }
    }

    #[test]
    fn refuses_numbers_that_would_be_rounded() {
        for bad in [
            "500.00000000000001",
            "18446744073709551616",
            "-9223372036854775809",
            "1e400",
            "0.10000000000000000001",
        ] {
            let doc = format!(r#"{{"a":[{{"amount":{bad}}}]}}"#);
            let err = check_exact_numbers(doc.as_bytes()).unwrap_err();
            assert_eq!(err.path, "a[0].amount", "{bad}");
            assert!(err.message.contains(bad), "{}", err.message);
        }
    }

    #[test]
    fn names_the_path_after_strings_with_escaped_quotes_and_brackets() {
        let doc = r#"{"s":"x\"[,{\\","t\"k":["]\\\"",{"amount":1e400}]}"#;
        let err = check_exact_numbers(doc.as_bytes()).unwrap_err();
        assert_eq!(err.path, r#"t\"k[1].amount"#);
    }

    #[test]
    fn accepts_numbers_that_read_back_exactly() {
        for good in [
            "0",
            "-0",
            "0.0",
            "500",
            "500.0",
            "5e2",
            "0.1",
            "4999.5",
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "1.7976931348623157e308",
            "12.50",
        ] {
            let doc = format!(r#"{{"k":"x,\"[","v":{good}}}"#);
            check_exact_numbers(doc.as_bytes()).unwrap();
        }
    }

    #[test]
    fn refuses_documents_nested_deeper_than_the_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        check_exact_numbers(ok.as_bytes()).unwrap();
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(check_exact_numbers(deep.as_bytes()).is_err());
    }

    #[test]
    fn compares_integers_beyond_two_to_the_53_exactly() {
        let a = n(json!(9_007_199_254_740_993_u64));
        let b = n(json!(9_007_199_254_740_992_u64));
        assert_eq!(compare(&a, &b), Some(Ordering::Greater));
        assert_eq!(
            compare_f64(&a, 9_007_199_254_740_992.0),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare(&n(json!(500)), &n(json!(500.0))),
            Some(Ordering::Equal)
        );
        assert_eq!(
            compare(&n(json!(500)), &n(json!(500.5))),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare(&n(json!(-3)), &n(json!(-3.5))),
            Some(Ordering::Greater)
        );
    }
}
