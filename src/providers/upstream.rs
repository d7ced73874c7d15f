//! What both providers share about talking HTTP to an upstream: one pooled
//! client each, a bounded body read, and one classification of failures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, ClientBuilder, RequestBuilder, StatusCode};
use url::Url;

use super::{ProviderError, ProviderName};
use tokio::sync::Semaphore;

use crate::config::UpstreamSettings;
use crate::metrics::Metrics;

pub const USER_AGENT: &str = concat!("ctr-relay/", env!("CARGO_PKG_VERSION"));

/// A call with less time than this left is not started: it could not finish.
const MIN_CALL_TIME: Duration = Duration::from_millis(10);

/// Builds the pooled client for one upstream: rustls with the bundled
/// webpki roots (no CA files needed at run time), a total timeout per call, and
/// no redirects, so credentials are never replayed to another host.
pub fn client(settings: &UpstreamSettings) -> Result<Client, BuildError> {
    Ok(client_builder(settings)?.build()?)
}

/// The builder behind [`client`], for a provider that adds to it.
pub fn client_builder(settings: &UpstreamSettings) -> Result<ClientBuilder, BuildError> {
    Ok(Client::builder()
        .user_agent(USER_AGENT)
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .tls_backend_preconfigured(tls_config()?))
}

/// A client with no upstream policy (no redirects, the given total timeout):
/// for the relay's own health check of itself.
pub fn plain_client(timeout: Duration) -> Result<Client, BuildError> {
    Ok(Client::builder()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls_config()?)
        .build()?)
}

/// Why an upstream client could not be built (at start-up only).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A finished upstream exchange: its status and the whole (bounded) body.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl UpstreamResponse {
    /// The body as text for an error message: lossy UTF-8, trimmed, cut at
    /// 1,000 characters, and with `secret` (the caller's key) blanked out in
    /// case the upstream echoes it.
    pub fn body_text(&self, secret: &str) -> String {
        const MAX_CHARS: usize = 1000;
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let mut cut: String = text.chars().take(MAX_CHARS).collect();
        if cut.len() < text.len() {
            cut.push('…');
        }
        if secret.is_empty() {
            cut
        } else {
            cut.replace(secret, "***")
        }
    }
}

/// One upstream endpoint of one provider, for error messages, logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub provider: ProviderName,
    pub metrics: &'a Metrics,
    /// The provider's bound on calls in flight (`UPSTREAM_MAX_IN_FLIGHT`).
    pub in_flight: &'a Semaphore,
    /// What is shown in a connection error ("validate the configured API endpoint").
    pub configured: &'a Url,
    /// A short name for logs: `search`, `token`, `vulnerabilities`, …
    pub operation: &'static str,
}

/// Sends `request` and reads the body, at most `settings.max_response_bytes`.
pub async fn send(
    endpoint: Endpoint<'_>,
    request: RequestBuilder,
    settings: &UpstreamSettings,
) -> Result<UpstreamResponse, ProviderError> {
    let started = Instant::now();
    let result = exchange(endpoint, request, settings).await;
    let elapsed = started.elapsed();
    endpoint.metrics.upstream_call(
        endpoint.provider.as_str(),
        endpoint.operation,
        result.as_ref().map(|response| response.status.as_u16()),
        elapsed,
    );
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    match &result {
        Ok(response) => tracing::info!(
            provider = %endpoint.provider,
            operation = endpoint.operation,
            status = response.status.as_u16(),
            latency_ms,
            "upstream call"
        ),
        Err(error) => tracing::info!(
            provider = %endpoint.provider,
            operation = endpoint.operation,
            outcome = error.kind(),
            latency_ms,
            "upstream call failed"
        ),
    }
    result
}

async fn exchange(
    endpoint: Endpoint<'_>,
    request: RequestBuilder,
    settings: &UpstreamSettings,
) -> Result<UpstreamResponse, ProviderError> {
    let started = Instant::now();
    let classify = |error: reqwest::Error| classify(endpoint, settings.timeout, error);
    // Waiting for a place counts against the timeout: the whole lookup, wait
    // and call, is bounded by UPSTREAM_TIMEOUT_SECONDS.
    let timeout = || ProviderError::Timeout {
        provider: endpoint.provider,
        after: settings.timeout,
    };
    let _permit = tokio::time::timeout(settings.timeout, endpoint.in_flight.acquire())
        .await
        .map_err(|_| timeout())?
        .map_err(|_| timeout())?;
    let remaining = settings.timeout.saturating_sub(started.elapsed());
    if remaining < MIN_CALL_TIME {
        return Err(timeout());
    }
    let mut response = request.timeout(remaining).send().await.map_err(classify)?;
    let status = response.status();
    let limit = settings.max_response_bytes;
    let too_large = || ProviderError::TooLarge {
        provider: endpoint.provider,
        limit,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(UpstreamResponse { status, body })
}

fn classify(endpoint: Endpoint<'_>, timeout: Duration, error: reqwest::Error) -> ProviderError {
    let provider = endpoint.provider;
    if let Some(reason) = tls_failure(&error) {
        return ProviderError::Tls { provider, reason };
    }
    if error.is_timeout() {
        return ProviderError::Timeout {
            provider,
            after: timeout,
        };
    }
    if error.is_connect() {
        return ProviderError::Connect {
            provider,
            url: endpoint.configured.clone(),
        };
    }
    ProviderError::Interrupted { provider }
}

/// The rustls error somewhere in the chain, if the failure was the TLS handshake.
fn tls_failure(error: &reqwest::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // `io::Error::source` skips the error it wraps, so step into it instead.
        current = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str) -> UpstreamResponse {
        UpstreamResponse {
            status: StatusCode::BAD_REQUEST,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn body_text_is_trimmed_and_bounded() {
        assert_eq!(response("  oops \n").body_text(""), "oops");
        let long = "x".repeat(5000);
        let text = response(&long).body_text("");
        assert_eq!(text.chars().count(), 1001);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn body_text_blanks_out_the_callers_key() {
        assert_eq!(
            response("Invalid API key: abc123").body_text("abc123"),
            "Invalid API key: ***"
        );
    }

    #[test]
    fn the_tls_configuration_builds() {
        let config = tls_config().unwrap();
        assert!(config.alpn_protocols.is_empty());
    }
}
