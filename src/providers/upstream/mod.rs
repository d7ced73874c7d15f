//! What both providers share about talking HTTP to an upstream: the gate every
//! call passes, a bounded body read, one retry for idempotent calls, and one
//! classification of failures.

mod gate;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::RETRY_AFTER;
use reqwest::{Client, Method, Request, RequestBuilder, StatusCode};
use url::Url;

pub use gate::Gate;
use gate::{RateLimited, Unresolved};

use super::ProviderError;
use super::address::{Machine, NotPublic};
use super::quota::FleetUse;
use super::scope::{Scope, Tenant};
use crate::config::UpstreamSettings;
use crate::domain::ProviderName;
use crate::metrics::Metrics;
use crate::outbound::Tls;

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
/// Secrets shorter than this are not masked in upstream text.
pub const MIN_MASKED_CHARS: usize = 8;

/// How much of a 429 answer is kept to repeat while the credential waits.
const RATE_LIMITED_BODY_BYTES: usize = 4096;

/// The most room reserved for a body before its bytes arrive, whatever
/// length it declares: a declared length is a promise, not bytes.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// A builder for one runtime's client to an upstream: the relay's outbound
/// policy (TLS, no redirects, the call timeout) and User-Agent, with pooled
/// connections kept a minute.
pub fn client_builder(tls: &Tls, settings: &UpstreamSettings) -> reqwest::ClientBuilder {
    tls.client_builder(settings.timeout)
        .user_agent(settings.user_agent.as_str())
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
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
    /// 1,000 characters, and with each of `secrets` (the caller's key, an
    /// access token) blanked out in case the upstream echoes it. A "secret"
    /// shorter than [`MIN_MASKED_CHARS`] is not masked: it cannot be a real
    /// key, and masking it would garble the text ("Invalid API ***ey").
    pub fn body_text(&self, secrets: &[&str]) -> String {
        const MAX_CHARS: usize = 1000;
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let mut cut: String = text.chars().take(MAX_CHARS).collect();
        if cut.len() < text.len() {
            cut.push('…');
        }
        for secret in secrets {
            if secret.chars().count() >= MIN_MASKED_CHARS {
                cut = cut.replace(secret, "***");
            }
        }
        cut
    }
}

/// One upstream endpoint of one provider, and the request a call is made for.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub provider: ProviderName,
    pub metrics: &'a Metrics,
    pub gate: &'a Gate,
    /// [`Gate::credential`] of the credential the call is made with (never
    /// with the URL it goes to: a tenant cannot respell it).
    pub credential: u64,
    /// The API address: its host's machine keys per-host places, rate
    /// limits and memory; shown in a connection error ("validate the
    /// configured API endpoint").
    pub configured: &'a Url,
    /// A short name for logs: `search`, `token`, `vulnerabilities`, …
    pub operation: &'static str,
    /// The deadline and memory budget of the request the call is made for.
    pub scope: &'a Scope,
    /// What the call shares with the fleet: the credential's quota, when it
    /// has one (each call sent, a retry too, is counted in it first, and
    /// none is sent at its limit), and the rate-limit memory.
    pub fleet: FleetUse<'a>,
}

/// How long one call may take, and which limit that is.
#[derive(Debug, Clone, Copy)]
struct Budgeted {
    /// The earlier of the call's own timeout and the request's deadline.
    ends: Instant,
    /// The call's own timeout (`UPSTREAM_TIMEOUT_SECONDS`).
    timeout: Duration,
    /// Whether the request's deadline (rather than `UPSTREAM_TIMEOUT_SECONDS`)
    /// is what ends it.
    by_request: bool,
}

impl Budgeted {
    fn new(endpoint: Endpoint<'_>, timeout: Duration) -> Self {
        let started = Instant::now();
        let own = started + timeout;
        let deadline = endpoint.scope.deadline();
        Self {
            ends: own.min(deadline),
            timeout,
            by_request: deadline < own,
        }
    }

    fn remaining(&self) -> Duration {
        self.ends.saturating_duration_since(Instant::now())
    }

    fn expired(&self, endpoint: Endpoint<'_>, timeout: Duration) -> ProviderError {
        match self.by_request {
            true => ProviderError::Deadline {
                provider: endpoint.provider,
                after: endpoint.scope.allowed(),
            },
            false => ProviderError::Timeout {
                provider: endpoint.provider,
                after: timeout,
            },
        }
    }
}

/// Sends `request` and reads the body, at most `settings.max_response_bytes`.
///
/// The whole exchange — waiting for places among the calls in flight, the
/// call, and for a GET its one retry — is bounded by `settings.timeout` and
/// by the request's deadline, whichever comes first; the bytes read count
/// against the request's budget. A GET (idempotent) that fails to connect, is
/// cut off, or gets 502, 503 or 504 is tried once more after a short random
/// pause, when time is left. A 429 is returned as it is and remembered: until
/// its `Retry-After` (default [`RATE_LIMIT_DEFAULT`], at most
/// [`RATE_LIMIT_CAP`]) calls with the same credential to the same host are
/// answered with that 429 without being sent.
pub async fn send(
    endpoint: Endpoint<'_>,
    request: RequestBuilder,
    settings: &UpstreamSettings,
) -> Result<UpstreamResponse, ProviderError> {
    let budget = Budgeted::new(endpoint, settings.timeout);
    let expired = || budget.expired(endpoint, settings.timeout);
    let machine = machine(endpoint, budget).await?;
    if let Some(limited) = endpoint.gate.rate_limited(machine, endpoint.credential) {
        tracing::info!(
            provider = %endpoint.provider,
            operation = endpoint.operation,
            retry_in_ms = limited.until.saturating_duration_since(Instant::now()).as_millis() as u64,
            "upstream call not sent: rate limited"
        );
        endpoint
            .metrics
            .upstream_skipped(endpoint.provider.as_str(), "rate_limited");
        crate::telemetry::trace::note_outcome("rate_limited");
        return Ok(UpstreamResponse {
            status: limited.status,
            body: limited.body.clone(),
            retry_after: None,
        });
    }
    if let Some(wait) = endpoint
        .fleet
        .shared_wait(endpoint.provider, endpoint.configured)
        .await
    {
        // Another replica was told to wait: so is this one, from now.
        tracing::info!(
            provider = %endpoint.provider,
            operation = endpoint.operation,
            retry_in_ms = wait.as_millis() as u64,
            "upstream call not sent: rate limited (learned by another replica)"
        );
        endpoint
            .metrics
            .upstream_skipped(endpoint.provider.as_str(), "rate_limited");
        crate::telemetry::trace::note_outcome("rate_limited");
        let limited = RateLimited {
            until: Instant::now() + wait,
            status: StatusCode::TOO_MANY_REQUESTS,
            body: SHARED_RATE_LIMIT_BODY.to_vec(),
        };
        endpoint
            .gate
            .remember(machine, endpoint.credential, limited);
        return Ok(UpstreamResponse {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: SHARED_RATE_LIMIT_BODY.to_vec(),
            retry_after: None,
        });
    }
    if budget.remaining() < MIN_CALL_TIME {
        endpoint
            .metrics
            .upstream_skipped(endpoint.provider.as_str(), "deadline");
        return Err(expired());
    }
    let mut request = request;
    if settings.traceparent && crate::telemetry::trace::on() {
        // Opt-in: the providers are third parties.
        for (name, value) in crate::telemetry::trace::call_headers() {
            request = request.header(name, value);
        }
    }
    let (client, request) = request.build_split();
    let request = request.map_err(|error| classify(endpoint, settings.timeout, error))?;
    let idempotent = request.method() == Method::GET;

    // Waiting for places counts against the time.
    let _places = tokio::time::timeout(
        budget.remaining(),
        endpoint.gate.places(machine, endpoint.credential),
    )
    .await
    .map_err(|_| expired())?
    .ok_or_else(expired)?;

    let tenant = Tenant {
        credential: endpoint.credential,
        machine,
    };
    let retry = if idempotent {
        request.try_clone()
    } else {
        None
    };
    let remaining = budget.remaining();
    if remaining < MIN_CALL_TIME {
        return Err(expired());
    }
    if let Some(quota) = endpoint.fleet.quota(endpoint.provider) {
        quota.quotas.take(endpoint.provider, quota).await?;
    }
    // Boxed: two inline calls would lay out two copies of the (large) HTTP
    // future in every lookup's state, for calls that are mostly never retried.
    let first = Box::pin(attempt(
        endpoint, tenant, &client, request, remaining, budget, settings,
    ))
    .await;
    let result = match retry {
        Some(again) if worth_retrying(&first) => {
            let pause = Duration::from_millis(rand::rng().random_range(RETRY_BACKOFF_MS));
            let remaining = budget.remaining().saturating_sub(pause);
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
                if let Some(quota) = endpoint.fleet.quota(endpoint.provider) {
                    quota.quotas.take(endpoint.provider, quota).await?;
                }
                Box::pin(attempt(
                    endpoint, tenant, &client, again, remaining, budget, settings,
                ))
                .await
            }
        }
        _ => first,
    };
    if let Ok(response) = &result {
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            let wait = remember_rate_limit(endpoint, machine, response);
            endpoint
                .fleet
                .share_wait(endpoint.provider, endpoint.configured, wait)
                .await;
        }
    }
    result
}

/// What a call held back by a 429 another replica got answers (the
/// upstream's own text is not shared: it might echo a key).
const SHARED_RATE_LIMIT_BODY: &[u8] =
    b"Too Many Requests (the provider told another replica of this relay to wait)";

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

/// The machine of the API address's host, when the caller chose it, within
/// the call's time.
async fn machine(
    endpoint: Endpoint<'_>,
    budget: Budgeted,
) -> Result<Option<Machine>, ProviderError> {
    let resolved = tokio::time::timeout(
        budget.remaining(),
        endpoint.gate.machine(endpoint.configured),
    )
    .await;
    match resolved {
        Ok(Ok(machine)) => Ok(machine),
        Ok(Err(Unresolved::NotPublic(host))) => {
            tracing::warn!(host, "refused: the host resolves to no public address");
            endpoint
                .metrics
                .upstream_skipped(endpoint.provider.as_str(), "not_public");
            Err(ProviderError::NotPublic {
                provider: endpoint.provider,
                host,
            })
        }
        Ok(Err(Unresolved::Failed)) => {
            endpoint
                .metrics
                .upstream_skipped(endpoint.provider.as_str(), "unresolved");
            Err(ProviderError::Connect {
                provider: endpoint.provider,
                url: endpoint.configured.clone(),
            })
        }
        Err(_) => Err(budget.expired(endpoint, budget.timeout)),
    }
}

/// Remembers a 429 here; how long calls wait.
fn remember_rate_limit(
    endpoint: Endpoint<'_>,
    machine: Option<Machine>,
    response: &UpstreamResponse,
) -> Duration {
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
        machine,
        endpoint.credential,
        RateLimited {
            until: Instant::now() + wait,
            status: response.status,
            body,
        },
    );
    wait
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
/// Counted (and logged, at `debug` when it succeeded) on its own, so a
/// retried call shows as two.
async fn attempt(
    endpoint: Endpoint<'_>,
    tenant: Tenant,
    client: &Client,
    mut request: Request,
    timeout: Duration,
    budget: Budgeted,
    settings: &UpstreamSettings,
) -> Result<UpstreamResponse, ProviderError> {
    let started = Instant::now();
    *request.timeout_mut() = Some(timeout);
    let result = exchange(endpoint, tenant, client, request, budget, settings).await;
    let elapsed = started.elapsed();
    endpoint.metrics.upstream_call(
        endpoint.provider.as_str(),
        endpoint.operation,
        result
            .as_ref()
            .map(|response| response.status.as_u16())
            .map_err(ProviderError::kind),
        elapsed,
    );
    let latency_ms = crate::telemetry::millis(elapsed);
    if let Ok(response) = &result {
        crate::telemetry::trace::note_bytes(response.body.len());
    }
    match &result {
        // One line per request is the log at `info`: an answered call says
        // more only when its status is not a success (metrics count them
        // all; `RUST_LOG=info,ctr_relay::providers::upstream=debug` logs each).
        Ok(response) if response.status.is_success() => tracing::debug!(
            provider = %endpoint.provider,
            operation = endpoint.operation,
            status = response.status.as_u16(),
            latency_ms,
            "upstream call"
        ),
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
    tenant: Tenant,
    client: &Client,
    request: Request,
    budget: Budgeted,
    settings: &UpstreamSettings,
) -> Result<UpstreamResponse, ProviderError> {
    let classify = |error: reqwest::Error| match error.is_timeout() {
        true => budget.expired(endpoint, settings.timeout),
        false => classify(endpoint, settings.timeout, error),
    };
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
    let over_budget = |limit| ProviderError::OverBudget {
        provider: endpoint.provider,
        limit,
    };
    let request_budget = endpoint.scope.budget();
    // A declared length over the limit is refused unread; any other is only
    // a hint: bytes are charged as they arrive, never as announced.
    let declared = response.content_length();
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let hint = declared.map_or(0, |length| length as usize);
    let mut body = Vec::with_capacity(hint.min(INITIAL_BODY_CAPACITY));
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        request_budget
            .read(chunk.len(), tenant)
            .map_err(over_budget)?;
        body.extend_from_slice(&chunk);
    }
    // Grown by doubling: a large body may hold up to twice its length, which
    // the result cache (weighing lengths) would not see.
    if body.capacity() - body.len() > body.len() / 8 && body.len() > INITIAL_BODY_CAPACITY {
        body.shrink_to_fit();
    }
    Ok(UpstreamResponse {
        status,
        body,
        retry_after,
    })
}

fn classify(endpoint: Endpoint<'_>, timeout: Duration, error: reqwest::Error) -> ProviderError {
    let provider = endpoint.provider;
    if let Some(refused) = in_chain::<NotPublic>(&error) {
        return ProviderError::NotPublic {
            provider,
            host: refused.host.clone(),
        };
    }
    if let Some(tls) = in_chain::<rustls::Error>(&error) {
        return ProviderError::Tls {
            provider,
            reason: tls.to_string(),
        };
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

/// The error of type `T` somewhere in the chain of causes: the TLS handshake's
/// failure, or the address guard's refusal.
fn in_chain<T: std::error::Error + 'static>(error: &reqwest::Error) -> Option<&T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
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
        assert_eq!(response("  oops \n").body_text(&[]), "oops");
        let long = "x".repeat(5000);
        let text = response(&long).body_text(&[]);
        assert_eq!(text.chars().count(), 1001);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn body_text_blanks_out_the_callers_key_and_token() {
        assert_eq!(
            response("Invalid API key: abc12345, token tok-9876543")
                .body_text(&["abc12345", "tok-9876543"]),
            "Invalid API key: ***, token ***"
        );
    }

    #[test]
    fn a_key_too_short_to_be_a_key_is_not_masked() {
        assert_eq!(
            response("Invalid API key").body_text(&["k", "", "key"]),
            "Invalid API key"
        );
        assert_eq!(
            response("Invalid API key 1234567").body_text(&["1234567"]),
            "Invalid API key 1234567"
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
}
