//! The caller's [`Credentials`] as an actix extractor: the request's Bearer
//! token, verified by this worker's [`Authenticator`].

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::state::Worker;
use crate::auth::AuthError;
use crate::domain::Credentials;
use crate::enrich::RequestError;

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
                Some(Err(_)) => return Err(AuthError::WrongStructure.into()),
            };
            let origin = || {
                let connection = request.connection_info();
                format!("{}://{}", connection.scheme(), connection.host())
            };
            Ok(worker
                .authenticator
                .authenticate(authorization, origin)
                .await?)
        })
    }
}
