//! Bearer JWT → verified claims → typed [`Credentials`] (an actix extractor).

mod jwks_host;
pub mod jwt;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

pub use jwks_host::JwksHost;

use crate::config::Settings;
use crate::error::RelayError;
use crate::providers::EntitiesLimit;
use crate::secret::Secret;

/// Why a request's token was refused; the reasons of SPEC section 3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header")]
    MissingHeader,
    #[error("the Authorization scheme is not Bearer")]
    WrongType,
    #[error("the token is not a JWT")]
    WrongStructure,
    #[error("the Authorization header is longer than {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("the signature does not verify with the relay's key")]
    WrongKey,
    #[error("the audience does not name this relay")]
    WrongAudience,
    #[error("RS256 token without jwks_host")]
    MissingJwksHost,
    #[error("jwks_host is not allowed or its key set is unavailable")]
    WrongJwksHost,
    #[error("the key set has no key with the token's kid")]
    KidNotFound,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the payload carries no complete provider credentials")]
    WrongPayload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C1fAppCredentials {
    pub key: Secret,
}

/// The provider credentials and options a verified token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub c1fapp: Option<C1fAppCredentials>,
    /// The token's `CTR_ENTITIES_LIMIT`, when it holds a positive integer.
    pub entities_limit: Option<EntitiesLimit>,
}

impl Credentials {
    /// A provider is used when all of its keys are present and non-empty.
    pub fn from_claims(claims: &jwt::Claims) -> Result<Self, AuthError> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let c1fapp = text("key").map(|key| C1fAppCredentials {
            key: Secret::new(key),
        });
        if c1fapp.is_none() {
            return Err(AuthError::WrongPayload);
        }
        Ok(Self {
            c1fapp,
            entities_limit: claims
                .get("CTR_ENTITIES_LIMIT")
                .and_then(EntitiesLimit::from_claim),
        })
    }
}

/// Verifies Bearer tokens with the relay's keys.
pub struct Authenticator {
    /// The HS256 key; `None` when `SECRET_KEY` is unset, and HS256 is refused.
    secret_key: Option<DecodingKey>,
}

impl Authenticator {
    pub fn new(settings: &Settings) -> Self {
        Self {
            secret_key: settings
                .secret_key
                .as_ref()
                .map(|secret| DecodingKey::from_secret(secret.expose().as_bytes())),
        }
    }

    /// The credentials of a request whose `Authorization` header is `authorization`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Credentials, AuthError> {
        let token = jwt::bearer_token(authorization)?;
        let header = jwt::unverified_header(token)?;
        let claims = match header.alg.as_str() {
            "HS256" => {
                let key = self.secret_key.as_ref().ok_or(AuthError::WrongKey)?;
                let checks = jwt::Checks {
                    algorithm: Algorithm::HS256,
                    audience: None,
                };
                jwt::verify(token, key, &checks)?
            }
            // `none`, and every algorithm the relay has no key of its own for.
            _ => return Err(AuthError::WrongKey),
        };
        Credentials::from_claims(&claims)
    }
}

impl FromRequest for Credentials {
    type Error = RelayError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let authenticator = request
                .app_data::<web::Data<Authenticator>>()
                .ok_or(RelayError::Internal("the authenticator is not configured"))?;
            let header = request
                .headers()
                .get(actix_web::http::header::AUTHORIZATION);
            // A header that is not visible ASCII cannot hold a JWT.
            let authorization = match header.map(|value| value.to_str()) {
                None => None,
                Some(Ok(text)) => Some(text),
                Some(Err(_)) => return Err(AuthError::WrongStructure.into()),
            };
            Ok(authenticator.authenticate(authorization).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> jwt::Claims {
        match value {
            Value::Object(map) => map,
            _ => panic!("claims must be an object"),
        }
    }

    #[test]
    fn a_c1fapp_key_makes_c1fapp_credentials() {
        let credentials = Credentials::from_claims(&claims(json!({"key": " abc "}))).unwrap();
        assert_eq!(credentials.c1fapp.unwrap().key.expose(), "abc");
        assert_eq!(credentials.entities_limit, None);
    }

    #[test]
    fn no_complete_provider_is_the_wrong_payload() {
        for payload in [
            json!({}),
            json!({"key": ""}),
            json!({"key": 5}),
            json!({"user": "x"}),
        ] {
            assert_eq!(
                Credentials::from_claims(&claims(payload.clone())),
                Err(AuthError::WrongPayload),
                "{payload}"
            );
        }
    }

    #[test]
    fn the_entities_limit_is_read_when_it_is_a_positive_integer() {
        let read = |limit: Value| {
            Credentials::from_claims(&claims(json!({"key": "k", "CTR_ENTITIES_LIMIT": limit})))
                .unwrap()
                .entities_limit
                .map(EntitiesLimit::get)
        };
        assert_eq!(read(json!(5)), Some(5));
        assert_eq!(read(json!("7")), Some(7));
        assert_eq!(read(json!(2000)), Some(1000));
        assert_eq!(read(json!("many")), None);
        assert_eq!(read(json!(-1)), None);
    }
}
