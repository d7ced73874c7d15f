//! The one place where errors become CTIM error objects and HTTP responses.
//!
//! Following the Threat Response relay convention, errors about the request's
//! content, its credentials or an upstream service are answered with HTTP 200
//! and an `{"errors": [...]}` envelope; routing errors, oversized bodies and
//! unsupported media keep their HTTP status (with the same envelope).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::auth::AuthError;
use crate::providers::{ProviderError, ProviderName};

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
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// `{"type": "fatal", "code": "...", "message": "..."}`. Every error the relay
/// reports is fatal for the part of the request it concerns.
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

/// The error envelope alone: `{"errors": [...]}`.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    pub errors: &'a [CtimError],
}

/// Why a whole request failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("authorization failed: {0:?}")]
    Auth(#[from] AuthError),
    #[error("invalid request payload: {0}")]
    InvalidPayload(String),
    #[error("upstream failure: {0:?}")]
    Provider(#[from] ProviderError),
    #[error("watchdog request without a Health-Check header")]
    HealthCheckFailed,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type {0:?}")]
    UnsupportedMediaType(String),
    /// A wiring mistake in the relay itself, never caused by a request.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl RelayError {
    pub fn to_ctim(&self) -> CtimError {
        match self {
            RelayError::Auth(error) => auth_error(error),
            RelayError::InvalidPayload(detail) => CtimError::new(
                ErrorCode::InvalidArgument,
                format!("Invalid JSON payload received. {detail}"),
            ),
            RelayError::Provider(error) => provider_error(error),
            RelayError::HealthCheckFailed => {
                CtimError::new(ErrorCode::HealthCheckFailed, "Invalid Health Check")
            }
            RelayError::NotFound => CtimError::new(ErrorCode::NotFound, "Not Found"),
            RelayError::MethodNotAllowed => {
                CtimError::new(ErrorCode::MethodNotAllowed, "Method Not Allowed")
            }
            RelayError::PayloadTooLarge { limit } => CtimError::new(
                ErrorCode::PayloadTooLarge,
                format!("Request body is larger than {limit} bytes"),
            ),
            RelayError::UnsupportedMediaType(content_type) => CtimError::new(
                ErrorCode::UnsupportedMediaType,
                format!("Unsupported Content-Type {content_type:?}: expected application/json"),
            ),
            RelayError::Internal(_) => CtimError::new(ErrorCode::Unknown, "Internal error"),
        }
    }
}

impl ResponseError for RelayError {
    fn status_code(&self) -> StatusCode {
        match self {
            RelayError::NotFound => StatusCode::NOT_FOUND,
            RelayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RelayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RelayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RelayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::OK,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let error = self.to_ctim();
        match self {
            RelayError::Internal(detail) => tracing::error!(detail, "request failed"),
            _ => tracing::warn!(
                error_code = error.code.as_str(),
                error_message = %error.message,
                "request failed"
            ),
        }
        HttpResponse::build(self.status_code()).json(ErrorEnvelope { errors: &[error] })
    }
}

fn auth_error(error: &AuthError) -> CtimError {
    let reason = match error {
        AuthError::MissingHeader => "Authorization header is missing",
        AuthError::WrongType => "Wrong authorization type",
        AuthError::WrongStructure => "Wrong JWT structure",
        AuthError::HeaderTooLarge { .. } => "Authorization header is too large",
        AuthError::WrongKey => {
            "Failed to decode JWT with provided key. Make sure domain in custom_jwks_host \
             corresponds to your SecureX instance region."
        }
        AuthError::WrongAudience => "Wrong configuration-token-audience",
        AuthError::MissingJwksHost => {
            "jwks_host is missing in JWT payload. Make sure custom_jwks_host field is present \
             in module_type"
        }
        AuthError::WrongJwksHost => {
            "Wrong jwks_host in JWT payload. Make sure domain follows the \
             visibility.<region>.cisco.com structure"
        }
        AuthError::KidNotFound => "kid from JWT header not found in API response",
        AuthError::Expired => "Expired token",
        AuthError::NotYetValid => "Token not yet valid",
        AuthError::WrongPayload => "Wrong JWT payload structure",
    };
    CtimError::new(
        ErrorCode::AuthorizationError,
        format!("Authorization failed: {reason}"),
    )
}

/// The CTIM code for an unexpected upstream HTTP status.
fn status_code(status: u16) -> ErrorCode {
    match status {
        400 => ErrorCode::InvalidArgument,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        429 => ErrorCode::TooManyRequests,
        _ => ErrorCode::Unknown,
    }
}

pub fn provider_error(error: &ProviderError) -> CtimError {
    match error {
        ProviderError::UnexpectedStatus {
            provider,
            status,
            body,
        } => {
            let message = match provider {
                ProviderName::C1fApp => format!("Unexpected response from {provider}: {body}"),
                ProviderName::CyberScan => {
                    format!("Unexpected response from {provider}: {status} {body}")
                }
            };
            CtimError::new(status_code(*status), message)
        }
        ProviderError::WrongApiKey { .. } => CtimError::new(
            ErrorCode::AuthorizationError,
            "Authorization failed: wrong api_key",
        ),
        ProviderError::Malformed { provider, .. } => CtimError::new(
            ErrorCode::KeyError,
            format!("The data structure of {provider} API has changed. The module is broken."),
        ),
        ProviderError::Tls { reason, .. } => CtimError::new(
            ErrorCode::Unknown,
            format!("Unable to verify SSL certificate: {reason}"),
        ),
        ProviderError::Connect { provider, url } => CtimError::new(
            ErrorCode::ConnectionError,
            format!("Unable to connect to {provider}, validate the configured API endpoint: {url}"),
        ),
        ProviderError::Interrupted { provider } => CtimError::new(
            ErrorCode::ConnectionError,
            format!(
                "The connection to {provider} was interrupted before the response was complete"
            ),
        ),
        ProviderError::Timeout { provider, after } => CtimError::new(
            ErrorCode::Timeout,
            format!(
                "{provider} did not respond within {} seconds",
                seconds(*after)
            ),
        ),
        ProviderError::TooLarge { provider, limit } => CtimError::new(
            ErrorCode::Unknown,
            format!("The response from {provider} is larger than {limit} bytes"),
        ),
    }
}

/// `10`, `2.5`, `0.25`: a duration in seconds without trailing zeros.
fn seconds(duration: Duration) -> String {
    let text = format!("{:.3}", duration.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_has_type_code_and_message() {
        let error = RelayError::InvalidPayload("0.value: missing field".to_owned()).to_ctim();
        assert_eq!(
            serde_json::to_value(ErrorEnvelope { errors: &[error] }).unwrap(),
            json!({"errors": [{
                "type": "fatal",
                "code": "invalid argument",
                "message": "Invalid JSON payload received. 0.value: missing field"
            }]})
        );
    }

    #[test]
    fn upstream_statuses_map_to_codes() {
        let codes = [
            (400, "invalid argument"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not found"),
            (429, "too many requests"),
            (500, "unknown"),
            (503, "unknown"),
            (418, "unknown"),
        ];
        for (status, code) in codes {
            let error = provider_error(&ProviderError::UnexpectedStatus {
                provider: ProviderName::C1fApp,
                status,
                body: "nope".to_owned(),
            });
            assert_eq!(serde_json::to_value(error.code).unwrap(), json!(code));
            assert_eq!(error.message, "Unexpected response from C1fApp: nope");
        }
    }

    #[test]
    fn cyberscan_status_messages_carry_the_status() {
        let error = provider_error(&ProviderError::UnexpectedStatus {
            provider: ProviderName::CyberScan,
            status: 500,
            body: "boom".to_owned(),
        });
        assert_eq!(
            error.message,
            "Unexpected response from CyberScan: 500 boom"
        );
    }

    #[test]
    fn timeouts_are_written_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(10)), "10");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25");
    }

    #[test]
    fn routing_errors_keep_their_status_and_content_errors_are_200() {
        assert_eq!(RelayError::NotFound.status_code(), StatusCode::NOT_FOUND);
        assert_eq!(
            RelayError::MethodNotAllowed.status_code(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            RelayError::PayloadTooLarge { limit: 1 }.status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            RelayError::UnsupportedMediaType("text/plain".to_owned()).status_code(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            RelayError::Auth(AuthError::Expired).status_code(),
            StatusCode::OK
        );
        assert_eq!(RelayError::HealthCheckFailed.status_code(), StatusCode::OK);
    }
}
