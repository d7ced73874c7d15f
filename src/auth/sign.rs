//! Making HS256 tokens the relay accepts: what `ctr-relay jwt` prints and
//! what `ctr-relay demo` hands out.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde::Serialize;

use crate::domain::Secret;

/// A new random key: 32 bytes from the OS generator, URL-safe base64.
pub fn new_secret_key() -> Secret {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `claims` signed with `secret` (HS256).
pub fn hs256(claims: &impl Serialize, secret: &Secret) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|error| format!("cannot sign the token: {error}"))
}
