//! What both providers share about talking HTTP to an upstream: one pooled
//! client each, a bounded body read, and one classification of failures.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::RETRY_AFTER;
use reqwest::{Client, ClientBuilder, Method, Request, RequestBuilder, StatusCode};
use tokio::sync::Semaphore;
use url::Url;

use super::{ProviderError, ProviderName};
use crate::config::UpstreamSettings;
use crate::metrics::Metrics;

pub const USER_AGENT: &str = concat!("ctr-relay/", env!("CARGO_PKG_VERSION"));

/// A call with less time than this left is not started: it could not finish.
const MIN_CALL_TIME: Duration = Duration::from_millis(10);

/// The pause before the one retry of an idempotent call: uniformly random in
/// this range (in milliseconds), so many failed calls do not retry in step.
const RETRY_BACKOFF_MS: std::ops::RangeInclusive<u64> = 50..=150;

/// After an HTTP 429, calls with the same credential wait this long when the
/// answer has no usable `Retry-After`, and never longer than the cap, whatever
/// it says.
const RATE_LIMIT_DEFAULT: Duration = Duration::from_secs(2);
const RATE_LIMIT_CAP: Duration = Duration::from_secs(300);
/// Credentials remembered as rate limited, per provider.
const RATE_LIMITED_CAPACITY: usize = 10_000;
/// How much of a 429 answer is kept to repeat while the credential waits.
const RATE_LIMITED_BODY_BYTES: usize = 4096;

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
    /// The `Retry-After` header, when present and readable.
    pub retry_after: Option<String>,
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

/// What every call to one provider passes through: the bound on calls in
/// flight (`UPSTREAM_MAX_IN_FLIGHT`) and the memory of credentials the
/// provider has rate limited (HTTP 429), so they are not sent again before
/// its `Retry-After`.
#[derive(Debug)]
pub struct Gate {
    in_flight: Semaphore,
    /// Rate-limited credentials (by keyed hash). Rare: `any_rate_limited`
    /// keeps the lock off the path of every call until the first 429.
    rate_limited: RwLock<HashMap<u64, Arc<RateLimited>>>,
    any_rate_limited: AtomicBool,
    /// Most credentials remembered ([`RATE_LIMITED_CAPACITY`]).
    capacity: usize,
    hasher: RandomState,
}

#[derive(Debug)]
struct RateLimited {
    until: Instant,
    /// The 429 answer (its body cut short), repeated until then.
    status: StatusCode,
    body: Vec<u8>,
}

impl Gate {
    pub fn new(settings: &UpstreamSettings) -> Self {
        Self {
            in_flight: Semaphore::new(settings.max_in_flight),
            rate_limited: RwLock::new(HashMap::new()),
            any_rate_limited: AtomicBool::new(false),
            capacity: RATE_LIMITED_CAPACITY,
            hasher: RandomState::new(),
        }
    }

    /// The 429 a credential is waiting out, if any.
    fn rate_limited(&self, credential: u64) -> Option<Arc<RateLimited>> {
        if !self.any_rate_limited.load(Ordering::Relaxed) {
            return None;
        }
        let limited = self
            .rate_limited
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        limited
            .get(&credential)
            .filter(|limited| limited.until > Instant::now())
            .cloned()
    }

    /// Remembers a 429. Expired entries are dropped first; when `capacity`
    /// credentials are waiting, the one whose wait
    /// ends first makes room.
    fn remember(&self, credential: u64, limited: RateLimited) {
        let mut map = self
            .rate_limited
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        map.retain(|_, entry| entry.until > now);
        if map.len() >= self.capacity && !map.contains_key(&credential) {
            let soonest = map
                .iter()
                .min_by_key(|(_, entry)| entry.until)
                .map(|(key, _)| *key);
            if let Some(key) = soonest {
                map.remove(&key);
            }
        }
        map.insert(credential, Arc::new(limited));
        self.any_rate_limited.store(true, Ordering::Relaxed);
    }

    /// The key under which a credential is remembered: a keyed hash, so the
    /// gate never holds the credential itself.
    pub fn credential(&self, credential: impl Hash) -> u64 {
        self.hasher.hash_one(credential)
    }
}

/// One upstream endpoint of one provider, for error messages, logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub provider: ProviderName,
    pub metrics: &'a Metrics,
    pub gate: &'a Gate,
    /// [`Gate::credential`] of the credential the call is made with.
    pub credential: u64,
    /// What is shown in a connection error ("validate the configured API endpoint").
    pub configured: &'a Url,
    /// A short name for logs: `search`, `token`, `vulnerabilities`, …
    pub operation: &'static str,
}

/// Sends `request` and reads the body, at most `settings.max_response_bytes`.
///
/// The whole exchange — waiting for a place among the calls in flight, the
/// call, and for a GET its one retry — is bounded by `settings.timeout`. A GET
/// (idempotent) that fails to connect, is cut off, or gets 502, 503 or 504 is
/// tried once more after a short random pause, when time is left. A 429 is
/// returned as it is and remembered: until its `Retry-After` (default
/// [`RATE_LIMIT_DEFAULT`], at most [`RATE_LIMIT_CAP`]) calls with the same
/// credential are answered with that 429 without being sent.
pub async fn send(
    endpoint: Endpoint<'_>,
    request: RequestBuilder,
    settings: &UpstreamSettings,
) -> Result<UpstreamResponse, ProviderError> {
    let started = Instant::now();
    let timeout = || ProviderError::Timeout {
        provider: endpoint.provider,
        after: settings.timeout,
    };
    if let Some(limited) = endpoint.gate.rate_limited(endpoint.credential) {
        tracing::info!(
            provider = %endpoint.provider,
            operation = endpoint.operation,
            retry_in_ms = limited.until.saturating_duration_since(Instant::now()).as_millis() as u64,
            "upstream call not sent: rate limited"
        );
        endpoint
            .metrics
            .upstream_skipped(endpoint.provider.as_str(), "rate_limited");
        return Ok(UpstreamResponse {
            status: limited.status,
            body: limited.body.clone(),
            retry_after: None,
        });
    }
    let (client, request) = request.build_split();
    let request = request.map_err(|error| classify(endpoint, settings.timeout, error))?;
    let idempotent = request.method() == Method::GET;

    // Waiting for a place counts against the timeout.
    let _permit = tokio::time::timeout(settings.timeout, endpoint.gate.in_flight.acquire())
        .await
        .map_err(|_| timeout())?
        .map_err(|_| timeout())?;

    let retry = if idempotent {
        request.try_clone()
    } else {
        None
    };
    let remaining = settings.timeout.saturating_sub(started.elapsed());
    if remaining < MIN_CALL_TIME {
        return Err(timeout());
    }
    // Boxed: two inline calls would lay out two copies of the (large) HTTP
    // future in every lookup's state, for calls that are mostly never retried.
    let first = Box::pin(attempt(endpoint, &client, request, remaining, settings)).await;
    let result = match retry {
        Some(again) if worth_retrying(&first) => {
            let pause = Duration::from_millis(rand::rng().random_range(RETRY_BACKOFF_MS));
            let remaining = settings
                .timeout
                .saturating_sub(started.elapsed())
                .saturating_sub(pause);
            if remaining < MIN_CALL_TIME {
                first
            } else {
                tracing::info!(
                    provider = %endpoint.provider,
                    operation = endpoint.operation,
                    pause_ms = pause.as_millis() as u64,
                    "upstream call retried"
                );
                endpoint
                    .metrics
                    .upstream_retry(endpoint.provider.as_str(), endpoint.operation);
                tokio::time::sleep(pause).await;
                Box::pin(attempt(endpoint, &client, again, remaining, settings)).await
            }
        }
        _ => first,
    };
    if let Ok(response) = &result {
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            remember_rate_limit(endpoint, response);
        }
    }
    result
}

/// Connection failures and the gateway statuses that say "try again".
fn worth_retrying(result: &Result<UpstreamResponse, ProviderError>) -> bool {
    match result {
        Ok(response) => matches!(
            response.status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
        Err(error) => matches!(
            error,
            ProviderError::Connect { .. } | ProviderError::Interrupted { .. }
        ),
    }
}

fn remember_rate_limit(endpoint: Endpoint<'_>, response: &UpstreamResponse) {
    let wait = response
        .retry_after
        .as_deref()
        .and_then(|value| retry_after(value, Utc::now()))
        .unwrap_or(RATE_LIMIT_DEFAULT)
        .min(RATE_LIMIT_CAP);
    tracing::warn!(
        provider = %endpoint.provider,
        operation = endpoint.operation,
        wait_ms = wait.as_millis() as u64,
        "rate limited by the upstream; calls with this credential wait"
    );
    let body = response.body[..response.body.len().min(RATE_LIMITED_BODY_BYTES)].to_vec();
    endpoint.gate.remember(
        endpoint.credential,
        RateLimited {
            until: Instant::now() + wait,
            status: response.status,
            body,
        },
    );
}

/// A `Retry-After` value: delay seconds, or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past is no wait; anything unreadable is `None`.
fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (date.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// One call: send, then read the body, at most `settings.max_response_bytes`.
/// Logged and counted on its own, so a retried call shows as two.
async fn attempt(
    endpoint: Endpoint<'_>,
    client: &Client,
    mut request: Request,
    timeout: Duration,
    settings: &UpstreamSettings,
) -> Result<UpstreamResponse, ProviderError> {
    let started = Instant::now();
    *request.timeout_mut() = Some(timeout);
    let result = exchange(endpoint, client, request, settings).await;
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
    client: &Client,
    request: Request,
    settings: &UpstreamSettings,
) -> Result<UpstreamResponse, ProviderError> {
    let classify = |error: reqwest::Error| classify(endpoint, settings.timeout, error);
    let mut response = client.execute(request).await.map_err(classify)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
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
    Ok(UpstreamResponse {
        status,
        body,
        retry_after,
    })
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
            retry_after: None,
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
    fn retry_after_is_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Mon, 23 Nov 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        for unreadable in ["", "soon", "-5", "1.5", "99999999999999999999999"] {
            assert_eq!(retry_after(unreadable, now), None, "{unreadable:?}");
        }
    }

    fn answer(status: StatusCode) -> Result<UpstreamResponse, ProviderError> {
        Ok(UpstreamResponse {
            status,
            body: Vec::new(),
            retry_after: None,
        })
    }

    #[test]
    fn only_connection_failures_and_gateway_statuses_are_retried() {
        let provider = ProviderName::CyberScan;
        for status in [502, 503, 504] {
            assert!(worth_retrying(&answer(
                StatusCode::from_u16(status).unwrap()
            )));
        }
        for status in [200, 400, 401, 403, 404, 429, 500] {
            assert!(
                !worth_retrying(&answer(StatusCode::from_u16(status).unwrap())),
                "{status}"
            );
        }
        let url = Url::parse("https://cyberscan.example/api/v1").unwrap();
        assert!(worth_retrying(&Err(ProviderError::Connect {
            provider,
            url
        })));
        assert!(worth_retrying(&Err(ProviderError::Interrupted {
            provider
        })));
        for error in [
            ProviderError::Timeout {
                provider,
                after: Duration::from_secs(1),
            },
            ProviderError::TooLarge { provider, limit: 1 },
            ProviderError::Tls {
                provider,
                reason: "bad".to_owned(),
            },
        ] {
            assert!(!worth_retrying(&Err(error)));
        }
    }

    fn limited_for(wait: Duration) -> RateLimited {
        RateLimited {
            until: Instant::now() + wait,
            status: StatusCode::TOO_MANY_REQUESTS,
            body: b"slow down".to_vec(),
        }
    }

    #[test]
    fn the_gate_remembers_rate_limits_until_they_end_within_its_bound() {
        let mut gate = Gate::new(&crate::config::Settings::default().upstream);
        gate.capacity = 3;
        let (a, b) = (gate.credential("key-a"), gate.credential("key-b"));
        assert_ne!(a, b);
        assert!(gate.rate_limited(a).is_none());
        gate.remember(a, limited_for(Duration::from_secs(60)));
        assert_eq!(gate.rate_limited(a).unwrap().body, b"slow down");
        assert!(gate.rate_limited(b).is_none(), "per credential");
        gate.remember(b, limited_for(Duration::ZERO));
        assert!(gate.rate_limited(b).is_none(), "a wait that has ended");

        // Full: the wait that ends first makes room.
        let keys: Vec<u64> = (0..4).map(|n| gate.credential(n)).collect();
        gate.remember(keys[0], limited_for(Duration::from_secs(10)));
        gate.remember(keys[1], limited_for(Duration::from_secs(30)));
        gate.remember(keys[2], limited_for(Duration::from_secs(90)));
        let map = gate.rate_limited.read().unwrap();
        assert_eq!(map.len(), 3);
        assert!(!map.contains_key(&keys[0]));
        assert!(map.contains_key(&a) && map.contains_key(&keys[2]));
    }

    #[test]
    fn the_tls_configuration_builds() {
        let config = tls_config().unwrap();
        assert!(config.alpn_protocols.is_empty());
    }
}
