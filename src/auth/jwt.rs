//! Reading a Bearer token far enough to choose how to verify it, and verifying it.
//!
//! The token's `alg` only selects *which* of the relay's own verifiers to try;
//! each verifier accepts exactly one algorithm with a key of its own kind, so a
//! token cannot pick a weaker check (`none`, HS256 "signed" with a public key).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::AuthError;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

/// Longest accepted `Authorization` header.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The claims of a verified token.
pub type Claims = Map<String, Value>;

/// The token's JOSE header, as far as the relay reads it before verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedHeader {
    pub alg: String,
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<Value>,
}

/// `Bearer <token>` → `<token>`.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let authorization = authorization.ok_or(AuthError::MissingHeader)?;
    if authorization.len() > MAX_HEADER_BYTES {
        return Err(AuthError::HeaderTooLarge {
            limit: MAX_HEADER_BYTES,
        });
    }
    let mut parts = authorization.split_whitespace();
    let scheme = parts.next().ok_or(AuthError::WrongType)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::WrongType);
    }
    match (parts.next(), parts.next()) {
        (Some(token), None) => Ok(token),
        _ => Err(AuthError::WrongStructure),
    }
}

/// The header and payload segments of a compact JWS.
fn segments(token: &str) -> Result<(&str, &str), AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::WrongStructure);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(AuthError::WrongStructure);
    }
    Ok((header, payload))
}

fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| AuthError::WrongStructure)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::WrongStructure)
}

/// The claims of a token whose signature has **not** been checked: only for
/// choosing where to find the key (`jwks_host`), never for credentials.
pub fn unverified_claims(token: &str) -> Result<Claims, AuthError> {
    let (_, payload) = segments(token)?;
    decode_segment(payload)
}

/// Splits a compact JWS and decodes its header, without trusting anything in it.
pub fn unverified_header(token: &str) -> Result<UnverifiedHeader, AuthError> {
    let (header, _) = segments(token)?;
    let raw: RawHeader = decode_segment(header)?;
    Ok(UnverifiedHeader {
        alg: raw.alg,
        kid: match raw.kid {
            Some(Value::String(kid)) => Some(kid),
            _ => None,
        },
    })
}

/// What to check besides the signature.
pub struct Checks<'a> {
    pub algorithm: Algorithm,
    /// `Some`: `aud` must be present and equal this (a trailing `/` on either
    /// side is ignored); an empty audience (no origin to name, as in
    /// Backbone mode without `RELAY_AUDIENCE`) is named by no token. `None`:
    /// `aud` is not checked.
    pub audience: Option<&'a str>,
}

/// Verifies the signature with `key` for exactly `checks.algorithm`, then
/// `exp` and `nbf` when present, then the audience when asked.
pub fn verify(token: &str, key: &DecodingKey, checks: &Checks<'_>) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(checks.algorithm);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.required_spec_claims.clear();
    match checks.audience {
        Some(audience) => {
            let bare = audience.trim_end_matches('/');
            if bare.trim().is_empty() {
                return Err(AuthError::WrongAudience);
            }
            validation.set_audience(&[bare.to_owned(), format!("{bare}/")]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        None => validation.validate_aud = false,
    }
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey => AuthError::WrongKey,
            _ => AuthError::WrongStructure,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn hs256(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn checks() -> Checks<'static> {
        Checks {
            algorithm: Algorithm::HS256,
            audience: None,
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn the_bearer_scheme_is_required_in_any_case() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer   abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::MissingHeader));
        assert_eq!(bearer_token(Some("Basic abc")), Err(AuthError::WrongType));
        assert_eq!(bearer_token(Some("")), Err(AuthError::WrongType));
        assert_eq!(bearer_token(Some("Bearer")), Err(AuthError::WrongStructure));
        assert_eq!(
            bearer_token(Some("Bearer a b")),
            Err(AuthError::WrongStructure)
        );
    }

    #[test]
    fn an_oversized_header_is_rejected_before_parsing() {
        let header = format!("Bearer {}", "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(
            bearer_token(Some(&header)),
            Err(AuthError::HeaderTooLarge {
                limit: MAX_HEADER_BYTES
            })
        );
    }

    #[test]
    fn the_header_is_read_without_verification() {
        let token = hs256(json!({"key": "k"}), "s");
        assert_eq!(
            unverified_header(&token).unwrap(),
            UnverifiedHeader {
                alg: "HS256".to_owned(),
                kid: None
            }
        );
    }

    #[test]
    fn anything_but_three_parts_with_a_json_header_is_the_wrong_structure() {
        for token in [
            "abc",
            "a.b",
            "a.b.c.d",
            ".payload.sig",
            "eyJ.",
            "bm90IGpzb24.e30.sig",
        ] {
            assert_eq!(
                unverified_header(token),
                Err(AuthError::WrongStructure),
                "{token}"
            );
        }
        // A header that is JSON but has no `alg`.
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT"}"#);
        assert_eq!(
            unverified_header(&format!("{header}.e30.sig")),
            Err(AuthError::WrongStructure)
        );
    }

    #[test]
    fn a_token_signed_with_the_key_verifies() {
        let token = hs256(json!({"key": "k", "exp": now() + 60}), "secret");
        let claims = verify(&token, &DecodingKey::from_secret(b"secret"), &checks()).unwrap();
        assert_eq!(claims["key"], "k");
    }

    #[test]
    fn a_token_signed_with_another_key_does_not() {
        let token = hs256(json!({"key": "k"}), "other");
        assert_eq!(
            verify(&token, &DecodingKey::from_secret(b"secret"), &checks()),
            Err(AuthError::WrongKey)
        );
    }

    #[test]
    fn a_tampered_payload_does_not_verify() {
        let token = hs256(json!({"key": "k"}), "secret");
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"key":"attacker"}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(
                &parts.join("."),
                &DecodingKey::from_secret(b"secret"),
                &checks()
            ),
            Err(AuthError::WrongKey)
        );
    }

    #[test]
    fn exp_and_nbf_are_honoured_with_a_small_leeway() {
        let key = DecodingKey::from_secret(b"s");
        let expired = hs256(json!({"key": "k", "exp": now() - 3600}), "s");
        assert_eq!(verify(&expired, &key, &checks()), Err(AuthError::Expired));
        let future = hs256(json!({"key": "k", "nbf": now() + 3600}), "s");
        assert_eq!(
            verify(&future, &key, &checks()),
            Err(AuthError::NotYetValid)
        );
        let just_expired = hs256(json!({"key": "k", "exp": now() - 5}), "s");
        assert!(verify(&just_expired, &key, &checks()).is_ok());
    }

    #[test]
    fn the_audience_is_checked_only_when_asked() {
        let key = DecodingKey::from_secret(b"s");
        let token = hs256(json!({"key": "k", "aud": "https://relay.example"}), "s");
        assert!(verify(&token, &key, &checks()).is_ok());
        let expecting = |audience| Checks {
            algorithm: Algorithm::HS256,
            audience: Some(audience),
        };
        assert!(verify(&token, &key, &expecting("https://relay.example")).is_ok());
        assert_eq!(
            verify(&token, &key, &expecting("https://other.example")),
            Err(AuthError::WrongAudience)
        );
        let without_aud = hs256(json!({"key": "k"}), "s");
        assert_eq!(
            verify(&without_aud, &key, &expecting("https://relay.example")),
            Err(AuthError::WrongAudience)
        );
    }

    #[test]
    fn no_token_names_an_empty_audience() {
        let key = DecodingKey::from_secret(b"s");
        for (aud, expected) in [("", ""), ("/", ""), ("", "/"), ("/", " ")] {
            let token = hs256(json!({"key": "k", "aud": aud}), "s");
            let checks = Checks {
                algorithm: Algorithm::HS256,
                audience: Some(expected),
            };
            assert_eq!(
                verify(&token, &key, &checks),
                Err(AuthError::WrongAudience),
                "aud {aud:?} for {expected:?}"
            );
        }
    }

    #[test]
    fn a_trailing_slash_does_not_change_the_audience() {
        let key = DecodingKey::from_secret(b"s");
        let token = hs256(json!({"key": "k", "aud": "https://relay.example/"}), "s");
        let checks = Checks {
            algorithm: Algorithm::HS256,
            audience: Some("https://relay.example"),
        };
        assert!(verify(&token, &key, &checks).is_ok());
    }

    #[test]
    fn unverified_claims_are_readable_but_need_a_jwt_shape() {
        let token = hs256(json!({"jwks_host": "visibility.amp.cisco.com"}), "s");
        assert_eq!(
            unverified_claims(&token).unwrap()["jwks_host"],
            "visibility.amp.cisco.com"
        );
        assert_eq!(unverified_claims("a.b"), Err(AuthError::WrongStructure));
        assert_eq!(
            unverified_claims("e30.bm90IGpzb24.sig"),
            Err(AuthError::WrongStructure)
        );
    }

    #[test]
    fn a_claim_of_the_wrong_type_is_the_wrong_structure() {
        let token = hs256(json!({"key": "k", "exp": "tomorrow"}), "s");
        assert_eq!(
            verify(&token, &DecodingKey::from_secret(b"s"), &checks()),
            Err(AuthError::WrongStructure)
        );
    }
}
