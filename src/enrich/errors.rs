//! The one place where errors become CTIM error objects: every code and message
//! a caller can see, for every front end (HTTP, Threat Bus, Backbone).
//! Internal detail is logged where the error is handled, never sent.

use std::time::Duration;

use crate::auth::AuthError;
use crate::ctim::{CtimError, ErrorCode};
use crate::domain::ProviderName;
use crate::providers::ProviderError;
use crate::providers::scope::Limit;

/// Why a whole request failed, whichever front end it came through.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("authorization failed: {0:?}")]
    Auth(#[from] AuthError),
    /// A bus request without a token, to a relay without credentials of its own.
    #[error("no token and no configured credentials")]
    NoCredentials,
    #[error("invalid request payload: {0}")]
    InvalidPayload(String),
    #[error("watchdog request without a Health-Check header")]
    HealthCheckFailed,
    /// `/readyz` after SIGTERM: the relay still serves, but is stopping.
    #[error("shutting down")]
    ShuttingDown,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type {0:?}")]
    UnsupportedMediaType(String),
    /// A Backbone answer larger than the broker takes.
    #[error("the answer is {bytes} bytes, over the broker's {limit}")]
    AnswerTooLarge { bytes: usize, limit: usize },
    /// A Backbone request delivered again after its answer could not be
    /// delivered (`what`: what happened to it).
    #[error("the answer could not be delivered: {what}")]
    AnswerUndeliverable { what: String },
    /// A wiring mistake in the relay itself, never caused by a request.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl RequestError {
    pub fn to_ctim(&self) -> CtimError {
        match self {
            RequestError::Auth(error) => auth_error(error),
            RequestError::NoCredentials => CtimError::new(
                ErrorCode::AuthorizationError,
                "Authorization failed: the request carries no token, and the relay has no \
                 credentials of its own (C1FAPP_KEY, CYBERSCAN_API_KEY and CYBERSCAN_HOST)",
            ),
            RequestError::InvalidPayload(detail) => CtimError::new(
                ErrorCode::InvalidArgument,
                format!("Invalid JSON payload received. {detail}"),
            ),
            RequestError::HealthCheckFailed => {
                CtimError::new(ErrorCode::HealthCheckFailed, "Invalid Health Check")
            }
            RequestError::ShuttingDown => CtimError::new(
                ErrorCode::ServiceUnavailable,
                "The relay is shutting down: send new requests to another replica",
            ),
            RequestError::NotFound => CtimError::new(ErrorCode::NotFound, "Not Found"),
            RequestError::MethodNotAllowed => {
                CtimError::new(ErrorCode::MethodNotAllowed, "Method Not Allowed")
            }
            RequestError::PayloadTooLarge { limit } => CtimError::new(
                ErrorCode::PayloadTooLarge,
                format!("Request body is larger than {limit} bytes"),
            ),
            RequestError::UnsupportedMediaType(content_type) => CtimError::new(
                ErrorCode::UnsupportedMediaType,
                format!("Unsupported Content-Type {content_type:?}: expected application/json"),
            ),
            RequestError::AnswerTooLarge { bytes, limit } => CtimError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "The answer is {bytes} bytes, more than the broker takes \
                     (BACKBONE_MAX_MESSAGE_BYTES = {limit}): ask about fewer observables, or \
                     with a lower CTR_ENTITIES_LIMIT"
                ),
            ),
            RequestError::AnswerUndeliverable { what } => CtimError::new(
                ErrorCode::Unknown,
                format!(
                    "The answer to this request could not be delivered when it was first \
                     made: {what}. The request is not looked up again"
                ),
            ),
            RequestError::Internal(_) => CtimError::new(ErrorCode::Unknown, "Internal error"),
        }
    }
}

pub fn auth_error(error: &AuthError) -> CtimError {
    let reason = match error {
        AuthError::MissingHeader => "Authorization header is missing",
        AuthError::WrongType => "Wrong authorization type",
        AuthError::WrongStructure => "Wrong JWT structure",
        AuthError::HeaderTooLarge { .. } => "Authorization header is too large",
        AuthError::WrongKey => {
            "Failed to decode JWT with provided key. Make sure domain in custom_jwks_host \
             corresponds to your SecureX instance region."
        }
        AuthError::UnsupportedAlgorithm => {
            "The token is signed with an algorithm this relay does not accept: only HS256 \
             (signed with the relay's SECRET_KEY) and RS256 (issued by XDR, keys from \
             jwks_host) are."
        }
        AuthError::KeySetUnavailable { timed_out: true } => {
            "The key set of jwks_host did not arrive in time (UPSTREAM_TIMEOUT_SECONDS). The \
             host is allowed; try again."
        }
        AuthError::KeySetUnavailable { timed_out: false } => {
            "The key set of jwks_host could not be fetched: the host answered an error, or no \
             key set with an RS256 signing key. The host is allowed; try again."
        }
        AuthError::WrongSecret => {
            "Failed to decode JWT with the relay's SECRET_KEY. Make sure the token was signed \
             with the SECRET_KEY this relay runs with (ctr-relay jwt signs with it)."
        }
        AuthError::NoSecretKey => {
            "HS256 tokens are not accepted: this relay has no SECRET_KEY. Set SECRET_KEY and \
             sign the token with it, or use a token issued by XDR (RS256)."
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
        ProviderError::NotPublic { provider, host } => CtimError::new(
            ErrorCode::ConnectionError,
            format!(
                "Unable to connect to {provider}: {host} is a private or local address, and the \
                 relay connects {provider} only to public addresses (the relay's operator can \
                 allow private ones with CYBERSCAN_ALLOW_PRIVATE_HOSTS=true)"
            ),
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
        ProviderError::Deadline { provider, after } => CtimError::new(
            ErrorCode::Timeout,
            format!(
                "{provider} did not answer within the request's time limit of {} seconds",
                seconds(*after)
            ),
        ),
        ProviderError::OverBudget { limit, .. } => over_budget(*limit),
        ProviderError::QuotaReached {
            provider,
            quota,
            resets,
        } => CtimError::new(
            ErrorCode::TooManyRequests,
            format!(
                "{provider} quota reached for this key: {quota}. No {provider} lookup is made \
                 until it resets at {}",
                resets.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
        ProviderError::QuotaUnavailable { provider } => CtimError::new(
            ErrorCode::TooManyRequests,
            format!(
                "{provider} quota cannot be checked: the shared store (Redis) does not answer, \
                 and QUOTA_WITHOUT_REDIS=refuse. Try again shortly"
            ),
        ),
    }
}

/// A request that reached a memory limit: its remaining lookups were not made.
fn over_budget(limit: Limit) -> CtimError {
    match limit {
        Limit::UpstreamBytes(bytes) => CtimError::new(
            ErrorCode::Unknown,
            format!(
                "The request reached its limit of {bytes} bytes of upstream answers \
                 (REQUEST_MAX_UPSTREAM_BYTES); its remaining lookups were not made"
            ),
        ),
        Limit::ResponseBytes(bytes) => CtimError::new(
            ErrorCode::Unknown,
            format!(
                "The answer reached its limit of {bytes} bytes (REQUEST_MAX_RESPONSE_BYTES); \
                 its remaining lookups were not made"
            ),
        ),
        Limit::HeldBytes(bytes) => CtimError::new(
            ErrorCode::TooManyRequests,
            format!(
                "The relay holds its limit of {bytes} bytes for the requests in flight \
                 (MAX_HELD_BYTES); try again shortly"
            ),
        ),
        Limit::TenantBytes(bytes) => CtimError::new(
            ErrorCode::TooManyRequests,
            format!(
                "The relay holds its limit of {bytes} bytes for this credential's or this \
                 host's requests in flight (MAX_HELD_BYTES_PER_TENANT); try again shortly"
            ),
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
    fn an_invalid_payload_says_so_first() {
        let error = RequestError::InvalidPayload("0.value: missing field".to_owned()).to_ctim();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert_eq!(
            error.message,
            "Invalid JSON payload received. 0.value: missing field"
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
}
