//! How the relay builds its outbound HTTP clients: rustls with the bundled
//! webpki roots (no OpenSSL, no CA files at run time), no redirects, a total
//! timeout per call, and the relay's User-Agent.
//!
//! A client holds a connection pool whose connections live on the runtime that
//! opened them, so clients are built per runtime (each HTTP worker, the Threat
//! Bus loop), never shared between runtimes. The TLS configuration is the
//! expensive part and is built once ([`Tls`]).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, ClientBuilder};

pub use crate::domain::USER_AGENT;

/// Why a client could not be built (at start-up only).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The TLS client configuration every outbound client uses: built once, cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct Tls(rustls::ClientConfig);

impl Tls {
    pub fn new() -> Result<Self, BuildError> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self(config))
    }

    /// This configuration, also trusting the CA certificates of `pem` (a
    /// private CA). `Err` when `pem` holds no certificate or one that does
    /// not parse.
    pub fn with_extra_roots(&self, pem: &str) -> Result<Self, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let certificate = certificate.map_err(|error| format!("not PEM: {error}"))?;
            roots
                .add(certificate)
                .map_err(|error| format!("a certificate does not parse: {error}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("no PEM certificate in it".to_owned());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self(config))
    }

    /// The rustls configuration, for a TLS connection that is not HTTP.
    pub fn rustls(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(self.0.clone())
    }

    /// A builder with the relay's policy: this TLS configuration, no redirects
    /// (credentials are never replayed to another host), `timeout` for the
    /// whole call and for connecting, and the relay's User-Agent.
    pub fn client_builder(&self, timeout: Duration) -> ClientBuilder {
        Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(self.0.clone())
    }

    /// [`Self::client_builder`], built.
    pub fn client(&self, timeout: Duration) -> Result<Client, BuildError> {
        Ok(self.client_builder(timeout).build()?)
    }
}

/// What went wrong with an answer that does not parse, without the text it
/// quotes: serde_json's own message can quote a string of the document, and
/// an upstream can echo a caller's key or token there. This is what is logged
/// and kept; the document never is.
pub fn json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    // serde names a missing field by the `&'static str` of the type being
    // read: the relay's own field names, never the document's text.
    let message = error.to_string();
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        return format!(
            "lacks the field {field} (line {}, column {})",
            error.line(),
            error.column()
        );
    }
    let what = match error.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "is JSON of an unexpected shape",
        Category::Eof => "ends too early",
    };
    format!("{what} (line {}, column {})", error.line(), error.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_error_never_quotes_the_document() {
        #[derive(Debug, serde::Deserialize)]
        struct Token {
            #[allow(dead_code)]
            access_token: String,
        }
        for body in [
            &br#""secret-api-key""#[..],
            br#"{"access_token": ["secret-api-key"]}"#,
            br#"{"secret-api-key": tru"#,
            b"<html>secret-api-key</html>",
        ] {
            let error = serde_json::from_slice::<Token>(body).unwrap_err();
            let described = json_error(&error);
            assert!(!described.contains("secret"), "{described}");
            assert!(described.contains("line 1"), "{described}");
        }
        let missing = serde_json::from_slice::<Token>(br#"{"secret-api-key": 1}"#).unwrap_err();
        assert_eq!(
            json_error(&missing),
            "lacks the field access_token (line 1, column 21)"
        );
    }

    #[test]
    fn the_tls_configuration_builds() {
        let tls = Tls::new().unwrap();
        assert!(tls.0.alpn_protocols.is_empty());
        assert!(tls.client(Duration::from_secs(1)).is_ok());
    }
}
