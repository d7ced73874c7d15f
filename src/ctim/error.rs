//! The CTIM error object: `{"type": "fatal", "code": "...", "message": "..."}`.
//! Which error gets which code and message is decided in one place,
//! `enrich/errors.rs`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    AuthorizationError,
    Unauthorized,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unknown,
    KeyError,
    ConnectionError,
    Timeout,
    HealthCheckFailed,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    ServiceUnavailable,
}

impl ErrorCode {
    /// The code as it appears in the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::AuthorizationError => "authorization error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not found",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::Unknown => "unknown",
            ErrorCode::KeyError => "key error",
            ErrorCode::ConnectionError => "connection error",
            ErrorCode::Timeout => "timeout",
            ErrorCode::HealthCheckFailed => "health check failed",
            ErrorCode::MethodNotAllowed => "method not allowed",
            ErrorCode::PayloadTooLarge => "payload too large",
            ErrorCode::UnsupportedMediaType => "unsupported media type",
            ErrorCode::ServiceUnavailable => "service unavailable",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Every error the relay reports is fatal for the part of the request it
/// concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename = "fatal")]
pub struct CtimError {
    pub code: ErrorCode,
    pub message: String,
}

impl CtimError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A warning: the answer stands, but something in it is worth knowing
/// (`{"type": "warning", "code", "message"}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename = "warning")]
pub struct CtimWarning {
    pub code: ErrorCode,
    pub message: String,
}

/// The error envelope alone: `{"errors": [...]}`.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    pub errors: &'a [CtimError],
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_has_type_code_and_message() {
        let error = CtimError::new(ErrorCode::InvalidArgument, "0.value: missing field");
        assert_eq!(
            serde_json::to_value(ErrorEnvelope { errors: &[error] }).unwrap(),
            json!({"errors": [{
                "type": "fatal",
                "code": "invalid argument",
                "message": "0.value: missing field"
            }]})
        );
    }
}
