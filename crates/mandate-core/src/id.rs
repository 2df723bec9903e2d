//! Identifiers: newtypes with private fields, validated on parse.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest identifier accepted anywhere in a mandate.
pub const MAX_ID_LEN: usize = 256;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier was empty.
    #[error("must not be empty")]
    Empty,
    /// The identifier was longer than [`MAX_ID_LEN`].
    #[error("must be at most {MAX_ID_LEN} bytes")]
    TooLong,
    /// The identifier held a character outside the allowed set.
    #[error("`{0}` is not allowed (use letters, digits and `-_.:@/+#~`)")]
    BadChar(char),
}

fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    // Printable ASCII without spaces, quotes, `<`, `>`, `\`, control
    // characters or a tilde-free separator clash: identifiers end up in audit
    // records, HTTP headers and reason codes.
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:@/+#~".contains(*c)))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an identifier.
            ///
            /// # Errors
            /// When the string is empty, too long, or holds a disallowed character.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id(&s)?;
                Ok(Self(s))
            }

            /// The identifier as a string.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_LEN,
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A mandate's identifier (`mandate_id`, equal to the JWT `jti`).
    MandateId
);
id_type!(
    /// An agent's identifier (`agent.id`), e.g. `urn:agent:procurement/vendor-sourcing@3.2`.
    AgentId
);
id_type!(
    /// A condition's identifier, unique within a delegation chain.
    ConditionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_source_texts_identifiers() {
        assert!(MandateId::new("mnd-logistics-sourcing-7f2a").is_ok());
        assert!(AgentId::new("urn:agent:procurement/vendor-sourcing@3.2").is_ok());
    }

    #[test]
    fn rejects_empty_spaces_and_markup() {
        assert_eq!(MandateId::new(""), Err(IdError::Empty));
        assert_eq!(MandateId::new("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(AgentId::new("<script>"), Err(IdError::BadChar('<')));
        assert_eq!(MandateId::new("x".repeat(257)), Err(IdError::TooLong));
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<MandateId>("\"a\\nb\"").unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
    }
}
