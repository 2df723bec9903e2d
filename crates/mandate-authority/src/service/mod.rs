//! The authority's operations, independent of HTTP: plain arguments in,
//! domain results out, and typed errors ([`Error`]: a [`Refusal`] —
//! conflict, not found, forbidden, malformed, invalid — or a storage
//! failure). The JSON API (`routes`) and the console (`console`) are
//! adapters over these; neither calls the other.
//!
//! Requests (create, approve, deny), lifecycle (suspend, resume, revoke
//! with cascade, amend), delegation (register a child, grant a discovered
//! tool once, consume a one-time mandate), facts, business events,
//! decisions in the audit log (and shipped ones), SSF streams, and listing
//! with cursor pagination. Below it, `crate::store` and `crate::signals`
//! hold the SQL; above it, nothing does.

pub mod decisions;
pub mod delegation;
pub mod events;
pub mod facts;
pub mod lifecycle;
pub mod listing;
pub mod requests;
pub mod streams;

pub use mandate_store::Refusal;
use mandate_store::StoreError;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The authority refused it; nothing was changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed; nothing acknowledged was lost.
    #[error("store: {0}")]
    Store(StoreError),
    /// Something that should not happen (a poisoned lock, a record that
    /// does not parse).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(r) => Self::Refused(r),
            other => Self::Store(other),
        }
    }
}

impl Error {
    /// A conflict with the current state.
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::Refused(Refusal::conflict(code, detail))
    }
    /// An unknown object (or another tenant's).
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::Refused(Refusal::not_found(what))
    }
    /// The caller may not.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Refused(Refusal::forbidden(detail))
    }
    /// Input that cannot be accepted.
    pub fn invalid(code: &str, detail: impl Into<String>) -> Self {
        Self::Refused(Refusal::invalid(code, detail))
    }
    /// An internal failure.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
}

/// Random id with a prefix.
pub fn new_id(prefix: &str) -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 10];
    rand_core::OsRng.fill_bytes(&mut b);
    format!("{prefix}-{}", hex::encode(b))
}

/// A service result.
pub type Result<T> = std::result::Result<T, Error>;

/// The parts of the authority not yet moved here answer with
/// [`ApiError`](crate::error::ApiError); its status says which refusal it is.
impl From<crate::error::ApiError> for Error {
    fn from(e: crate::error::ApiError) -> Self {
        use axum::http::StatusCode;
        match e.status {
            StatusCode::BAD_REQUEST => Self::Refused(Refusal::malformed(e.detail)),
            StatusCode::FORBIDDEN => Self::forbidden(e.detail),
            StatusCode::NOT_FOUND => Self::not_found(
                e.detail
                    .strip_suffix(" not found")
                    .unwrap_or(&e.detail)
                    .to_owned(),
            ),
            StatusCode::CONFLICT => Self::conflict(&e.code, e.detail),
            StatusCode::UNPROCESSABLE_ENTITY => Self::invalid(&e.code, e.detail),
            _ => Self::Internal(e.detail),
        }
    }
}

#[cfg(test)]
mod plans {
    //! The lookups that would otherwise read every mandate or every event of
    //! a tenant find their rows through an index (SQLite's plan, read).
    #![allow(clippy::unwrap_used, reason = "test code")]

    #[test]
    fn tenant_wide_lookups_search_their_indexes() {
        let dir = std::env::temp_dir().join(format!("mandate-plans-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = mandate_core::keys::SigningKey::from_seed(
            mandate_core::keys::Algorithm::EdDSA,
            [3; 32],
        );
        let store = mandate_store::Store::open(&dir, key).unwrap();
        let plan = |sql: &str| store.read(|c| Ok(c.sqlite_plan(sql)?.unwrap())).unwrap();
        assert_eq!(
            plan(super::events::RECENT),
            ["SEARCH events USING INDEX events_tenant_received (tenant=?)"],
            "newest first, without sorting the tenant's events"
        );
        assert_eq!(
            plan(super::lifecycle::SUPERSEDED),
            ["SEARCH mandates USING INDEX mandates_superseded_by (superseded_by=?)"]
        );
        assert_eq!(
            plan(super::listing::PRINCIPAL_MANDATES),
            ["SEARCH mandates USING INDEX mandates_tenant_principal (tenant=? AND principal=?)"]
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
