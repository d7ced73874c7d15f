//! Bearer JWT → verified claims → typed [`Credentials`].
//!
//! [`KeyCache`] (the key sets of the allowlisted JWKS hosts) is built once and
//! shared; an [`Authenticator`] is built per runtime around it, with that
//! runtime's HTTP client for key set fetches.

pub mod jwks;
pub mod jwt;
pub mod sign;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

pub use jwks::KeyCache;

use crate::config::Settings;
use crate::domain::{
    C1fAppCredentials, Credentials, CyberScanCredentials, EntitiesLimit, Quota, Secret,
};

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
    #[error("the token's alg is neither HS256 nor RS256")]
    UnsupportedAlgorithm,
    #[error("the key set of jwks_host could not be fetched")]
    KeySetUnavailable { timed_out: bool },
    #[error("the HS256 signature does not verify with SECRET_KEY")]
    WrongSecret,
    #[error("an HS256 token, and the relay has no SECRET_KEY")]
    NoSecretKey,
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

impl AuthError {
    /// A fixed, short name of the reason, for a metric label and a log field.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingHeader => "missing_header",
            AuthError::WrongType => "wrong_type",
            AuthError::WrongStructure => "wrong_structure",
            AuthError::HeaderTooLarge { .. } => "header_too_large",
            AuthError::WrongKey => "wrong_key",
            AuthError::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthError::KeySetUnavailable { .. } => "key_set_unavailable",
            AuthError::WrongSecret => "wrong_secret",
            AuthError::NoSecretKey => "no_secret_key",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingJwksHost => "missing_jwks_host",
            AuthError::WrongJwksHost => "wrong_jwks_host",
            AuthError::KidNotFound => "kid_not_found",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongPayload => "wrong_payload",
        }
    }
}

/// Who a verified token says issued it and for whom: its `iss` and `aud`
/// claims, for the request log (never the token itself). Each is clipped to
/// [`Identity::MAX_CHARS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl Identity {
    pub const MAX_CHARS: usize = 256;

    fn of(claims: &jwt::Claims) -> Self {
        let clip = |text: &str| text.chars().take(Self::MAX_CHARS).collect::<String>();
        let audience = match claims.get("aud") {
            Some(Value::String(aud)) => Some(clip(aud)),
            Some(Value::Array(auds)) => Some(clip(
                &auds
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            )),
            _ => None,
        };
        Self {
            issuer: claims.get("iss").and_then(Value::as_str).map(clip),
            audience,
        }
    }
}

/// The credentials a verified token carries. A provider is used when all of
/// its keys are present and non-empty.
pub fn credentials(claims: &jwt::Claims) -> Result<Credentials, AuthError> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    // A quota claim that does not parse is a broken payload (an
    // administrator's typo is shown, not silently ignored).
    let quota = |name: &str| match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => Quota::parse(text)
            .map(Some)
            .map_err(|_| AuthError::WrongPayload),
        Some(_) => Err(AuthError::WrongPayload),
    };
    let c1fapp = match text("key") {
        Some(key) => Some(C1fAppCredentials {
            key: Secret::new(key),
            quota: quota("c1fapp_quota")?,
        }),
        None => None,
    };
    let cyberscan = match (text("api_key"), text("host")) {
        // A host the relay cannot make an API address of is a broken payload.
        (Some(api_key), Some(host)) => {
            let mut credentials =
                CyberScanCredentials::new(api_key, host).map_err(|_| AuthError::WrongPayload)?;
            credentials.quota = quota("cyberscan_quota")?;
            Some(credentials)
        }
        _ => None,
    };
    if c1fapp.is_none() && cyberscan.is_none() {
        return Err(AuthError::WrongPayload);
    }
    Ok(Credentials {
        c1fapp,
        cyberscan,
        entities_limit: claims
            .get("CTR_ENTITIES_LIMIT")
            .and_then(EntitiesLimit::from_claim),
    })
}

/// Verifies Bearer tokens with the relay's keys.
pub struct Authenticator {
    /// The HS256 key; `None` when `SECRET_KEY` is unset, and HS256 is refused.
    secret_key: Option<DecodingKey>,
    /// The key sets of the allowlisted `jwks_host`s, for RS256 (shared).
    keys: Arc<KeyCache>,
    /// Fetches key sets; its timeout bounds how long a request can wait for one.
    jwks_http: reqwest::Client,
    /// `RELAY_AUDIENCE`; when unset, the audience is the request's own origin.
    audience: Option<String>,
}

impl Authenticator {
    /// `jwks_http` is this runtime's client for key set fetches; its timeout
    /// bounds how long a request can wait for one.
    pub fn new(settings: &Settings, keys: Arc<KeyCache>, jwks_http: reqwest::Client) -> Self {
        Self {
            secret_key: settings
                .secret_key
                .as_ref()
                .map(|secret| DecodingKey::from_secret(secret.expose().as_bytes())),
            keys,
            jwks_http,
            audience: settings.relay_audience.clone(),
        }
    }

    /// The credentials of a request whose `Authorization` header is
    /// `authorization`; `origin` gives the request's `scheme://host`, the
    /// audience RS256 tokens must name when `RELAY_AUDIENCE` is unset (asked
    /// for only then).
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        origin: impl FnOnce() -> String,
    ) -> Result<(Credentials, Identity), AuthError> {
        let token = jwt::bearer_token(authorization)?;
        self.verify_identified(token, origin).await
    }

    /// The credentials a bare token carries (a Communications Backbone
    /// request's `token`), verified exactly as a Bearer token is. Its length
    /// is bounded as a header's is.
    pub async fn verify(
        &self,
        token: &str,
        origin: impl FnOnce() -> String,
    ) -> Result<Credentials, AuthError> {
        Ok(self.verify_identified(token, origin).await?.0)
    }

    /// [`Self::verify`], with who the token names as issuer and audience.
    pub async fn verify_identified(
        &self,
        token: &str,
        origin: impl FnOnce() -> String,
    ) -> Result<(Credentials, Identity), AuthError> {
        if token.len() > jwt::MAX_HEADER_BYTES {
            return Err(AuthError::HeaderTooLarge {
                limit: jwt::MAX_HEADER_BYTES,
            });
        }
        let header = jwt::unverified_header(token)?;
        let claims = match header.alg.as_str() {
            "HS256" => {
                let key = self.secret_key.as_ref().ok_or(AuthError::NoSecretKey)?;
                let checks = jwt::Checks {
                    algorithm: Algorithm::HS256,
                    audience: None,
                };
                jwt::verify(token, key, &checks).map_err(|error| match error {
                    AuthError::WrongKey => AuthError::WrongSecret,
                    other => other,
                })?
            }
            "RS256" => {
                let key = self.rs256_key(token, header.kid.as_deref()).await?;
                let origin = match &self.audience {
                    Some(_) => None,
                    None => Some(origin()),
                };
                let checks = jwt::Checks {
                    algorithm: Algorithm::RS256,
                    audience: self.audience.as_deref().or(origin.as_deref()),
                };
                jwt::verify(token, &key, &checks)?
            }
            // `none`, and every algorithm the relay has no key of its own for.
            _ => return Err(AuthError::UnsupportedAlgorithm),
        };
        Ok((credentials(&claims)?, Identity::of(&claims)))
    }

    /// The public key an RS256 token names: its (unverified) `jwks_host` must be
    /// allowlisted before anything is fetched.
    async fn rs256_key(&self, token: &str, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        let unverified = jwt::unverified_claims(token)?;
        let claimed = match unverified.get("jwks_host") {
            Some(Value::String(host)) if !host.trim().is_empty() => host.trim(),
            Some(Value::String(_)) | None => return Err(AuthError::MissingJwksHost),
            Some(_) => return Err(AuthError::WrongJwksHost),
        };
        let Some(host) = self.keys.allowed(claimed) else {
            tracing::warn!(jwks_host = claimed, "jwks_host is not allowlisted");
            return Err(AuthError::WrongJwksHost);
        };
        let kid = kid.ok_or(AuthError::KidNotFound)?;
        self.keys.key(&self.jwks_http, host, kid).await
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
        let credentials = credentials(&claims(json!({"key": " abc "}))).unwrap();
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
                credentials(&claims(payload.clone())),
                Err(AuthError::WrongPayload),
                "{payload}"
            );
        }
    }

    #[test]
    fn the_entities_limit_is_read_when_it_is_a_positive_integer() {
        let read = |limit: Value| {
            credentials(&claims(json!({"key": "k", "CTR_ENTITIES_LIMIT": limit})))
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
