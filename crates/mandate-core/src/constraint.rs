//! Constraints: bounds on an action's inputs, and how a child narrows them.
//!
//! A constraint value is one of:
//!
//! | form | meaning | a request value is admitted when | a child narrows it with |
//! | --- | --- | --- | --- |
//! | a scalar (`"standard-logistics-v3"`, `5`, `true`) | exactly this | equal | the same scalar |
//! | an array of scalars (`["us", "ca"]`) | one of these | a member | a subset, or one member |
//! | `{"min": a, "max": b}` (either may be absent) | a number in `[a, b]` | within | a range inside it, or a number inside it |
//!
//! A request must supply every constrained input in `resource.properties`
//! (an array value is admitted when each element is); a missing input denies.
//! A child keeps every constraint of the parent (narrowed or equal) and may
//! add new ones.

use std::cmp::Ordering;

use serde_json::Value;

/// A parsed constraint, borrowing the JSON it was read from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Constraint<'a> {
    /// Exactly this scalar.
    Exact(&'a Value),
    /// One of these scalars.
    OneOf(&'a [Value]),
    /// A number within bounds (inclusive), each kept as the JSON number it
    /// was written as and compared exactly.
    Range {
        /// Lower bound.
        min: Option<&'a serde_json::Number>,
        /// Upper bound.
        max: Option<&'a serde_json::Number>,
    },
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Equal, comparing numbers exactly (`5` equals `5.0`; `2^53 + 1` is not `2^53`).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            crate::number::compare(x, y) == Some(std::cmp::Ordering::Equal)
        }
        _ => a == b,
    }
}

/// Whether `v` is on the admitted side of a range's bound (none: any).
fn bound_admits(
    bound: Option<&serde_json::Number>,
    v: &serde_json::Number,
    ok: fn(Ordering) -> bool,
) -> bool {
    bound.is_none_or(|b| crate::number::compare(v, b).is_some_and(ok))
}

impl<'a> Constraint<'a> {
    /// Parses a constraint value.
    ///
    /// # Errors
    /// A message saying which form was expected.
    pub fn parse(v: &'a Value) -> Result<Self, String> {
        match v {
            v if is_scalar(v) => Ok(Constraint::Exact(v)),
            Value::Array(items) => {
                if items.is_empty() || !items.iter().all(is_scalar) {
                    return Err("must be a non-empty array of strings, numbers or booleans".into());
                }
                Ok(Constraint::OneOf(items))
            }
            Value::Object(m) => {
                if m.is_empty() || m.keys().any(|k| k != "min" && k != "max") {
                    return Err("a range object holds only `min` and/or `max`".into());
                }
                let num = |k: &str| -> Result<Option<&'a serde_json::Number>, String> {
                    match m.get(k) {
                        None => Ok(None),
                        Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
                            Ok(Some(n))
                        }
                        Some(_) => Err(format!("`{k}` must be a finite number")),
                    }
                };
                let (min, max) = (num("min")?, num("max")?);
                if let (Some(a), Some(b)) = (min, max)
                    && crate::number::compare(a, b) == Some(Ordering::Greater)
                {
                    return Err("`min` must not exceed `max`".into());
                }
                Ok(Constraint::Range { min, max })
            }
            _ => Err("must be a scalar, an array of scalars, or a {min, max} range".into()),
        }
    }

    fn admits_scalar(&self, v: &Value) -> bool {
        match self {
            Constraint::Exact(e) => scalar_eq(e, v),
            Constraint::OneOf(items) => items.iter().any(|i| scalar_eq(i, v)),
            Constraint::Range { min, max } => match v {
                Value::Number(x) => {
                    bound_admits(*min, x, Ordering::is_ge) && bound_admits(*max, x, Ordering::is_le)
                }
                _ => false,
            },
        }
    }

    /// Whether a requested input value is within this constraint.
    #[must_use]
    pub fn admits(&self, v: &Value) -> bool {
        match v {
            Value::Array(items) => !items.is_empty() && items.iter().all(|i| self.admits_scalar(i)),
            v if is_scalar(v) => self.admits_scalar(v),
            _ => false,
        }
    }

    /// Whether `self` (a child's constraint) is within `parent`.
    #[must_use]
    pub fn within(&self, parent: &Constraint) -> bool {
        match self {
            Constraint::Exact(v) => parent.admits_scalar(v),
            Constraint::OneOf(items) => items.iter().all(|i| parent.admits_scalar(i)),
            Constraint::Range { min, max } => match parent {
                Constraint::Range {
                    min: pmin,
                    max: pmax,
                } => {
                    let lower = match (pmin, min) {
                        (None, _) => true,
                        (Some(_), Some(c)) => bound_admits(*pmin, c, Ordering::is_ge),
                        (Some(_), None) => false,
                    };
                    let upper = match (pmax, max) {
                        (None, _) => true,
                        (Some(_), Some(c)) => bound_admits(*pmax, c, Ordering::is_le),
                        (Some(_), None) => false,
                    };
                    lower && upper
                }
                Constraint::Exact(_) | Constraint::OneOf(_) => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses a constraint that lives as long as the test (leaked: tests
    /// only).
    fn c(v: Value) -> Constraint<'static> {
        Constraint::parse(Box::leak(Box::new(v))).unwrap()
    }

    #[test]
    fn admits_values_within_and_refuses_values_outside() {
        assert!(c(json!("pre-approved")).admits(&json!("pre-approved")));
        assert!(!c(json!("pre-approved")).admits(&json!("any")));
        assert!(c(json!(["us", "ca"])).admits(&json!("ca")));
        assert!(c(json!(["us", "ca"])).admits(&json!(["us", "ca"])));
        assert!(!c(json!(["us", "ca"])).admits(&json!(["us", "mx"])));
        assert!(c(json!({"max": 5000})).admits(&json!(4999.5)));
        assert!(!c(json!({"max": 5000})).admits(&json!(5001)));
        assert!(!c(json!({"max": 5000})).admits(&json!("4000")));
        assert!(!c(json!("x")).admits(&json!({"x": 1})));
    }

    #[test]
    fn compares_amounts_and_integers_exactly() {
        let cap = c(json!({"max": 500}));
        assert!(cap.admits(&json!(500)));
        assert!(cap.admits(&json!(500.0)));
        assert!(!cap.admits(&json!(500.5)));
        let big = 9_007_199_254_740_992_u64;
        assert!(!c(json!(big)).admits(&json!(big + 1)));
        assert!(!c(json!([big])).admits(&json!(big + 1)));
        assert!(!c(json!({"max": big})).admits(&json!(big + 1)));
        assert!(c(json!({"max": big + 1})).admits(&json!(big + 1)));
        assert!(!c(json!({"max": big + 1})).within(&c(json!({"max": big}))));
    }

    #[test]
    fn a_child_narrows_and_never_widens() {
        assert!(c(json!("us")).within(&c(json!(["us", "ca"]))));
        assert!(c(json!(["us"])).within(&c(json!(["us", "ca"]))));
        assert!(!c(json!(["us", "mx"])).within(&c(json!(["us", "ca"]))));
        assert!(c(json!({"min": 1, "max": 10})).within(&c(json!({"max": 100}))));
        assert!(!c(json!({"min": 1})).within(&c(json!({"max": 100}))));
        assert!(c(json!(50)).within(&c(json!({"max": 100}))));
        assert!(!c(json!({"max": 1})).within(&c(json!(1))));
    }

    #[test]
    fn malformed_constraints_are_refused() {
        for bad in [
            json!(null),
            json!([]),
            json!([{}]),
            json!({"max": "x"}),
            json!({"lt": 1}),
            json!({"min": 2, "max": 1}),
        ] {
            assert!(Constraint::parse(&bad).is_err(), "{bad}");
        }
    }
}
