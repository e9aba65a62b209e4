//! API errors: an HTTP status plus the JSON body naming the field at fault.

use super::types::{ErrorBody, ErrorDetail};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            Some(field.into()),
            message,
        )
    }
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "conflict",
            Some(field.into()),
            message,
        )
    }
    pub fn not_found(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            field.map(str::to_string),
            message,
        )
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            None,
            message,
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", None, message)
    }
    fn new(
        status: StatusCode,
        code: &'static str,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            field,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                field: self.field,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body strictly, naming the field at fault on error.
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde reports a missing field at its parent's path, naming it only in the message.
        let missing = inner
            .to_string()
            .strip_prefix("missing field `")
            .and_then(|r| r.split_once('`'))
            .map(|(f, _)| f.to_string());
        let field = match (path.as_str(), missing) {
            (".", Some(f)) => f,
            (p, Some(f)) => format!("{p}.{f}"),
            (".", None) => "body".to_string(),
            (p, None) => p.to_string(),
        };
        let msg = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else {
            format!("{field}: {inner}")
        };
        ApiError::invalid(field, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::NetworkSpec;

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse_body::<NetworkSpec>(br#"{"subnet":"10.0.0.0/24","vni":"x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vni"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn bad_cidr_names_the_field() {
        let e = parse_body::<NetworkSpec>(br#"{"subnet":"10.0.0.0/33","vni":5000}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subnet"));
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = parse_body::<NetworkSpec>(br#"{"subnet":"10.0.0.0/24","vni":5000,"encrypt":true}"#)
            .unwrap_err();
        assert!(e.message.contains("encrypt"), "{}", e.message);
    }

    #[test]
    fn missing_field_is_named() {
        let e = parse_body::<NetworkSpec>(br#"{"subnet":"10.0.0.0/24"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vni"));
    }

    #[test]
    fn malformed_json() {
        let e = parse_body::<NetworkSpec>(b"{\"subnet\":").unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
    }
}
