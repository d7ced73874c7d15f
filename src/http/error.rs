//! A failed request as an HTTP response: the CTIM error (from
//! `enrich/errors.rs`) in the JSON envelope, with the status the Threat Response
//! relay convention gives it — 200 for errors about the request's content, its
//! credentials or an upstream; the real status for routing errors, oversized
//! bodies and unsupported media.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::ctim::ErrorEnvelope;
use crate::enrich::RequestError;

impl ResponseError for RequestError {
    fn status_code(&self) -> StatusCode {
        match self {
            RequestError::NotFound => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::OK,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let error = self.to_ctim();
        match self {
            RequestError::Internal(detail) => tracing::error!(detail, "request failed"),
            _ => tracing::warn!(
                error_code = error.code.as_str(),
                error_message = %error.message,
                "request failed"
            ),
        }
        HttpResponse::build(self.status_code()).json(ErrorEnvelope { errors: &[error] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;

    #[test]
    fn routing_errors_keep_their_status_and_content_errors_are_200() {
        assert_eq!(RequestError::NotFound.status_code(), StatusCode::NOT_FOUND);
        assert_eq!(
            RequestError::MethodNotAllowed.status_code(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            RequestError::PayloadTooLarge { limit: 1 }.status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            RequestError::UnsupportedMediaType("text/plain".to_owned()).status_code(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            RequestError::Auth(AuthError::Expired).status_code(),
            StatusCode::OK
        );
        assert_eq!(
            RequestError::ShuttingDown.status_code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            RequestError::HealthCheckFailed.status_code(),
            StatusCode::OK
        );
    }
}
