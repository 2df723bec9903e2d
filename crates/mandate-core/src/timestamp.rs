//! Time as the core sees it: whole seconds since the Unix epoch, given by the
//! caller (the core has no clock of its own).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since 1970-01-01T00:00:00Z. Used for JWT NumericDate claims and
/// serialized in the mandate body as RFC 3339 (`lifecycle.hard_expiry`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(i64);

/// The earliest and latest instants accepted (years 1970 to 9999), so that
/// every value converts to RFC 3339 and to CEL timestamps.
const MIN: i64 = 0;
const MAX: i64 = 253_402_300_799;

impl UnixTime {
    /// 1970-01-01T00:00:00Z. Before every mandate's `nbf`, so a decision at
    /// this time denies: the fallback when a clock cannot be read.
    pub const EPOCH: UnixTime = UnixTime(0);

    /// A time from seconds since the epoch.
    ///
    /// # Errors
    /// Outside years 1970..=9999.
    pub fn from_secs(secs: i64) -> Result<Self, TimeError> {
        if (MIN..=MAX).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(TimeError::OutOfRange)
        }
    }

    /// Seconds since the epoch.
    #[must_use]
    pub fn secs(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 timestamp (`2025-10-15T17:00:00Z`); fractions of a
    /// second are truncated.
    ///
    /// # Errors
    /// When the text is not RFC 3339 or is out of range.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeError> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| TimeError::NotRfc3339)?;
        Self::from_secs(t.unix_timestamp())
    }

    /// Formats as RFC 3339 in UTC (`2025-10-15T17:00:00Z`).
    #[must_use]
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }

    /// This time plus `secs` seconds, saturating at the bounds.
    #[must_use]
    pub fn plus(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs).clamp(MIN, MAX))
    }
}

impl fmt::Debug for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Why a time was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not an RFC 3339 date-time.
    #[error("must be an RFC 3339 date-time such as `2025-10-15T17:00:00Z`")]
    NotRfc3339,
    /// Before 1970 or after 9999.
    #[error("must be between 1970 and 9999")]
    OutOfRange,
}

/// Serde for JWT NumericDate claims (`iat`, `nbf`, `exp`): an integer.
pub mod numeric_date {
    use super::{Deserialize, Deserializer, Serializer, UnixTime};

    /// Serializes as an integer.
    ///
    /// # Errors
    /// Never, for a valid time.
    pub fn serialize<S: Serializer>(t: &UnixTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.0)
    }

    /// Deserializes an integer NumericDate in range.
    ///
    /// # Errors
    /// When the value is not an integer or out of range.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixTime, D::Error> {
        let n = i64::deserialize(d).map_err(|_| {
            serde::de::Error::custom("must be a NumericDate (integer seconds since the epoch)")
        })?;
        UnixTime::from_secs(n).map_err(serde::de::Error::custom)
    }
}

impl Serialize for UnixTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for UnixTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for UnixTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An instant, RFC 3339 (`2099-01-01T00:00:00Z`)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        let t = UnixTime::parse_rfc3339("2025-10-15T17:00:00Z").unwrap();
        assert_eq!(t.secs(), 1_760_547_600);
        assert_eq!(t.to_rfc3339(), "2025-10-15T17:00:00Z");
    }

    #[test]
    fn rejects_non_rfc3339_and_out_of_range() {
        assert_eq!(
            UnixTime::parse_rfc3339("15/10/2025"),
            Err(TimeError::NotRfc3339)
        );
        assert_eq!(UnixTime::from_secs(-1), Err(TimeError::OutOfRange));
    }
}
