//! The one place errors become HTTP responses: problem+json (RFC 9457) with
//! a stable `code`. Server errors log their detail and return a generic body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// A stable code (`forbidden`, `conflict`, `invalid_request`, ...).
    pub code: String,
    /// What went wrong, naming the field.
    pub detail: String,
}

impl ApiError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            detail: detail.into(),
        }
    }
    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }
    /// 401.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }
    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    /// 404: also the answer for another tenant's ids.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    /// 409.
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    /// 422.
    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    /// 500, with the detail logged and not returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

impl From<mandate_store::StoreError> for ApiError {
    fn from(e: mandate_store::StoreError) -> Self {
        match e {
            mandate_store::StoreError::Refused(r) => r.into(),
            other => Self::internal(other),
        }
    }
}

impl From<mandate_store::Refusal> for ApiError {
    fn from(r: mandate_store::Refusal) -> Self {
        use mandate_store::Refusal;
        match r {
            Refusal::Conflict { code, detail } => Self::conflict(&code, detail),
            Refusal::NotFound { what } => Self::not_found(&what),
            Refusal::Forbidden { detail } => Self::forbidden(detail),
            Refusal::Malformed { detail } => Self::bad_request(detail),
            Refusal::Invalid { code, detail } => Self::unprocessable(&code, detail),
        }
    }
}

impl From<crate::service::Error> for ApiError {
    fn from(e: crate::service::Error) -> Self {
        match e {
            crate::service::Error::Refused(r) => r.into(),
            crate::service::Error::Store(e) => Self::internal(e),
            crate::service::Error::Internal(m) => Self::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::http::wire::Problem {
            type_: format!("urn:mandate:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("error").to_owned(),
            status: self.status.as_u16(),
            code: self.code.to_string(),
            detail: self.detail,
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}

/// Parses an untrusted JSON body strictly: duplicate members refused, the
/// offending field named.
///
/// # Errors
/// 400 naming the JSON path.
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    mandate_core::json::from_slice_strict(bytes).map_err(|e| ApiError::bad_request(e.to_string()))
}
