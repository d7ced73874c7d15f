//! The caller's [`Credentials`] as an actix extractor: the request's Bearer
//! token, verified by this worker's [`Authenticator`]. What the request log
//! line says about the token — its issuer and audience, or why it was
//! refused — is left in the request's extensions as [`TokenLog`]; a refusal
//! is counted by reason.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::state::{AppState, Worker};
use crate::auth::{AuthError, Identity};
use crate::domain::Credentials;
use crate::enrich::RequestError;

/// What became of the request's token, for its log line.
#[derive(Debug, Clone)]
pub enum TokenLog {
    Accepted(Identity),
    Refused(&'static str),
}

impl FromRequest for Credentials {
    type Error = RequestError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let worker = request
                .app_data::<web::Data<Worker>>()
                .ok_or(RequestError::Internal("the worker state is not configured"))?;
            let header = request
                .headers()
                .get(actix_web::http::header::AUTHORIZATION);
            // A header that is not visible ASCII cannot hold a JWT.
            let authorization = match header.map(|value| value.to_str()) {
                None => None,
                Some(Ok(text)) => Some(text),
                Some(Err(_)) => return Err(refused(&request, AuthError::WrongStructure)),
            };
            let origin = || {
                let connection = request.connection_info();
                format!("{}://{}", connection.scheme(), connection.host())
            };
            match worker
                .authenticator
                .authenticate(authorization, origin)
                .await
            {
                Ok((credentials, identity)) => {
                    request
                        .extensions_mut()
                        .insert(TokenLog::Accepted(identity));
                    Ok(credentials)
                }
                Err(error) => Err(refused(&request, error)),
            }
        })
    }
}

/// Counts and notes a refused token.
fn refused(request: &HttpRequest, error: AuthError) -> RequestError {
    if let Some(state) = request.app_data::<web::Data<AppState>>() {
        state.metrics.auth_failure(error.reason());
    }
    request
        .extensions_mut()
        .insert(TokenLog::Refused(error.reason()));
    error.into()
}
