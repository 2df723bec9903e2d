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

/// A parsed constraint.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Exactly this scalar.
    Exact(Value),
    /// One of these scalars.
    OneOf(Vec<Value>),
    /// A number within bounds (inclusive).
    Range {
        /// Lower bound (a JSON number, compared exactly).
        min: Option<Value>,
        /// Upper bound (a JSON number, compared exactly).
        max: Option<Value>,
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

/// A range's bound, kept as the JSON number it was written as.
fn bound_admits(bound: Option<&Value>, v: &serde_json::Number, ok: fn(Ordering) -> bool) -> bool {
    match bound {
        None => true,
        Some(Value::Number(b)) => crate::number::compare(v, b).is_some_and(ok),
        Some(_) => false,
    }
}

impl Constraint {
    /// Parses a constraint value.
    ///
    /// # Errors
    /// A message saying which form was expected.
    pub fn parse(v: &Value) -> Result<Self, String> {
        match v {
            v if is_scalar(v) => Ok(Constraint::Exact(v.clone())),
            Value::Array(items) => {
                if items.is_empty() || !items.iter().all(is_scalar) {
                    return Err("must be a non-empty array of strings, numbers or booleans".into());
                }
                Ok(Constraint::OneOf(items.clone()))
            }
            Value::Object(m) => {
                if m.is_empty() || m.keys().any(|k| k != "min" && k != "max") {
                    return Err("a range object holds only `min` and/or `max`".into());
                }
                let num = |k: &str| -> Result<Option<Value>, String> {
                    match m.get(k) {
                        None => Ok(None),
                        Some(v @ Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
                            Ok(Some(v.clone()))
                        }
                        Some(_) => Err(format!("`{k}` must be a finite number")),
                    }
                };
                let (min, max) = (num("min")?, num("max")?);
                if let (Some(Value::Number(a)), Some(Value::Number(b))) = (&min, &max)
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
                    bound_admits(min.as_ref(), x, Ordering::is_ge)
                        && bound_admits(max.as_ref(), x, Ordering::is_le)
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
                        (Some(_), Some(Value::Number(c))) => {
                            bound_admits(pmin.as_ref(), c, Ordering::is_ge)
                        }
                        (Some(_), _) => false,
                    };
                    let upper = match (pmax, max) {
                        (None, _) => true,
                        (Some(_), Some(Value::Number(c))) => {
                            bound_admits(pmax.as_ref(), c, Ordering::is_le)
                        }
                        (Some(_), _) => false,
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

    fn c(v: Value) -> Constraint {
        Constraint::parse(&v).unwrap()
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
