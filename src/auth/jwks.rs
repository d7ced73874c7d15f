//! Key sets of the allowlisted `jwks_host`s, fetched on demand and cached.
//!
//! One entry per allowlisted host is made at start-up, so the cache is bounded
//! by configuration and a token can never add a host. A key set is fetched the
//! first time a host is named, and again when a token names a `kid` it does not
//! hold — at most once a minute per host (`JwksSettings::refetch_interval`).
//! The wait is counted from when a fetch starts, and a fetch that never
//! finishes (its request was dropped) counts as a failed one. A failed fetch
//! never replaces a good key set, and for a few seconds after one, requests
//! fail at once. Requests that arrive while a fetch is under way wait for that
//! fetch, and then decide without fetching again.
//!
//! A key set is trusted for a maximum age (`JWKS_MAX_AGE_SECONDS`, shorter
//! when the host's `Cache-Control: max-age` says so, never under the refetch
//! interval); then the next token refetches it, so a key the host withdrew
//! stops being accepted. When that refetch fails, the keys held go on being
//! used (a host that is down has withdrawn nothing) and the failure is
//! logged. Only keys fit for RS256 signatures are kept: RSA, and `use`
//! `sig` and `alg` `RS256` where the key names them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use reqwest::header::CACHE_CONTROL;
use serde::Deserialize;
use serde_json::Value;
use std::sync::{Mutex, PoisonError};
use tokio::sync::watch;

use super::AuthError;
use crate::config::{JwksSettings, UpstreamSettings};
use crate::domain::JwksHost;
use crate::metrics::Metrics;
use crate::outbound::{BuildError, Tls, json_error};

/// One runtime's client for key set fetches: the relay's outbound policy,
/// bounded by the upstream timeout, with the upstream User-Agent.
pub fn client(tls: &Tls, upstream: &UpstreamSettings) -> Result<reqwest::Client, BuildError> {
    Ok(tls
        .client_builder(upstream.timeout)
        .user_agent(upstream.user_agent.as_str())
        .build()?)
}

/// Largest key set document the relay reads.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Shared by every runtime; holds no connections (each runtime fetches with
/// its own client).
pub struct KeyCache {
    metrics: Arc<Metrics>,
    hosts: HashMap<String, HostKeys>,
    refetch_interval: Duration,
    failure_backoff: Duration,
    max_age: Duration,
}

struct HostKeys {
    host: JwksHost,
    /// Never held across an await.
    state: Mutex<KeySetState>,
}

#[derive(Default)]
struct KeySetState {
    keys: Arc<HashMap<String, DecodingKey>>,
    /// When `keys` are to be fetched again before they are used.
    expires: Option<Instant>,
    /// When the last fetch started, and whether it succeeded (until it does,
    /// it counts as failed).
    last_attempt: Option<(Instant, bool)>,
    /// Why the last fetch failed, while it is the last.
    failure: Option<AuthError>,
    /// Signals the end of the fetch under way, if any (its sender is dropped
    /// when the fetch ends, however it ends).
    fetching: Option<watch::Receiver<()>>,
}

impl HostKeys {
    fn state(&self) -> std::sync::MutexGuard<'_, KeySetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fetch a request has started: when it is dropped (the fetch ended, or
/// the request was dropped mid-fetch), the requests waiting on it wake up.
struct Fetching<'a> {
    entry: &'a HostKeys,
    _done: watch::Sender<()>,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.entry.state().fetching = None;
    }
}

impl KeySetState {
    /// Whether a new fetch may be made now: the first time, a minute after a
    /// successful one, a few seconds after a failed one.
    fn may_fetch(&self, refetch_interval: Duration, failure_backoff: Duration) -> bool {
        match self.last_attempt {
            None => true,
            Some((at, true)) => at.elapsed() >= refetch_interval,
            Some((at, false)) => at.elapsed() >= failure_backoff,
        }
    }
}

#[derive(Deserialize)]
struct KeySetDocument {
    keys: Vec<Value>,
}

impl KeyCache {
    pub fn new(settings: &JwksSettings, metrics: Arc<Metrics>) -> Self {
        let hosts = settings
            .hosts
            .iter()
            .map(|host| {
                let entry = HostKeys {
                    host: host.clone(),
                    state: Mutex::new(KeySetState::default()),
                };
                (host.authority().to_ascii_lowercase(), entry)
            })
            .collect();
        Self {
            metrics,
            hosts,
            refetch_interval: settings.refetch_interval,
            failure_backoff: settings.failure_backoff,
            max_age: settings.max_age,
        }
    }

    /// The allowlisted host a token's `jwks_host` claim names, if any.
    pub fn allowed(&self, claimed: &str) -> Option<&JwksHost> {
        self.hosts
            .values()
            .map(|entry| &entry.host)
            .find(|host| host.matches(claimed))
    }

    /// The key `kid` of `host`'s key set, fetching the set with `http` when
    /// needed. `http` must have a timeout: it bounds how long a request can
    /// wait for keys.
    pub async fn key(
        &self,
        http: &reqwest::Client,
        host: &JwksHost,
        kid: &str,
    ) -> Result<DecodingKey, AuthError> {
        let entry = self
            .hosts
            .get(&host.authority().to_ascii_lowercase())
            .ok_or(AuthError::WrongJwksHost)?;
        let done = {
            let mut state = entry.state();
            let fresh = state
                .expires
                .is_some_and(|expires| Instant::now() < expires);
            if let Some(key) = state.keys.get(kid).filter(|_| fresh) {
                return Ok(key.clone());
            }
            match state.fetching.clone() {
                Some(waiting) => Err(waiting),
                None if !state.may_fetch(self.refetch_interval, self.failure_backoff) => {
                    // Too soon to fetch again: an expired set is still used.
                    return state.keys.get(kid).cloned().ok_or_else(|| state.refusal());
                }
                None => {
                    // The wait before the next fetch counts from now, and
                    // this fetch counts as failed unless it succeeds.
                    state.last_attempt = Some((Instant::now(), false));
                    let (done, waiting) = watch::channel(());
                    state.fetching = Some(waiting);
                    Ok(done)
                }
            }
        };
        let done = match done {
            Ok(done) => done,
            Err(mut waiting) => {
                // Another request is fetching: wait for it, then decide from
                // what it found (never a second fetch in its wake).
                let _ = waiting.changed().await;
                let state = entry.state();
                return state.keys.get(kid).cloned().ok_or_else(|| state.refusal());
            }
        };
        let _fetching = Fetching { entry, _done: done };
        let fetched = match crate::telemetry::trace::on() {
            true => traced_fetch(http, &entry.host).await,
            false => fetch(http, &entry.host).await,
        };
        self.metrics
            .jwks_fetch(entry.host.authority(), fetched.is_ok());
        let mut state = entry.state();
        match fetched {
            Ok((keys, max_age)) => {
                state.keys = Arc::new(keys);
                state.failure = None;
                let age = max_age.unwrap_or(self.max_age).clamp(
                    self.refetch_interval,
                    self.max_age.max(self.refetch_interval),
                );
                state.expires = Some(Instant::now() + age);
                if let Some((_, succeeded)) = &mut state.last_attempt {
                    *succeeded = true;
                }
                state.keys.get(kid).cloned().ok_or(AuthError::KidNotFound)
            }
            Err(failed) => {
                tracing::warn!(jwks_host = %entry.host, reason = %failed.reason, "key set fetch failed");
                let error = AuthError::KeySetUnavailable {
                    timed_out: failed.timed_out,
                };
                state.failure = Some(error.clone());
                // The keys held (expired, or lacking this kid) still stand.
                state.keys.get(kid).cloned().ok_or(error)
            }
        }
    }
}

impl KeySetState {
    /// Why a request whose `kid` is not in the key set is refused without a
    /// fetch: the set is fresh and lacks it, or the last fetch failed.
    fn refusal(&self) -> AuthError {
        match (self.last_attempt, &self.failure) {
            (Some((_, true)), _) => AuthError::KidNotFound,
            (_, Some(failure)) => failure.clone(),
            _ => AuthError::KeySetUnavailable { timed_out: false },
        }
    }
}

/// The key set, and how long the host says it may be kept.
type Fetched = (HashMap<String, DecodingKey>, Option<Duration>);

/// Why a fetch failed: for the log, and whether it was the timeout.
struct FetchFailure {
    reason: String,
    timed_out: bool,
}

impl From<String> for FetchFailure {
    fn from(reason: String) -> Self {
        Self {
            reason,
            timed_out: false,
        }
    }
}

fn failure(what: &str, error: &reqwest::Error) -> FetchFailure {
    FetchFailure {
        reason: format!("{what}: {error}"),
        timed_out: error.is_timeout(),
    }
}

/// [`fetch`] in a span of its own: the host and how it ended.
async fn traced_fetch(http: &reqwest::Client, host: &JwksHost) -> Result<Fetched, FetchFailure> {
    let span = tracing::info_span!(
        target: crate::telemetry::trace::TARGET,
        parent: crate::telemetry::trace::parent(),
        "key set fetch",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        jwks_host = %host,
        outcome = tracing::field::Empty,
    );
    let fetched = fetch(http, host).await;
    let outcome = match &fetched {
        Ok(_) => "fetched",
        Err(failed) if failed.timed_out => "timed_out",
        Err(_) => "failed",
    };
    if fetched.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    span.record("outcome", outcome);
    fetched
}

async fn fetch(http: &reqwest::Client, host: &JwksHost) -> Result<Fetched, FetchFailure> {
    let started = Instant::now();
    let mut response = http
        .get(host.jwks_url().clone())
        .send()
        .await
        .map_err(|error| failure("request failed", &error))?;
    let status = response.status();
    let max_age = response
        .headers()
        .get(CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .and_then(max_age);
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| failure("reading the body failed", &error))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes").into());
        }
        body.extend_from_slice(&chunk);
    }
    tracing::info!(
        jwks_host = %host,
        status = status.as_u16(),
        latency_ms = crate::telemetry::millis(started.elapsed()),
        "key set fetch"
    );
    if !status.is_success() {
        return Err(format!("HTTP {status}").into());
    }
    Ok((parse_key_set(&body)?, max_age))
}

/// How long a `Cache-Control` value lets a response be kept: its `max-age`,
/// or nothing at all for `no-store` / `no-cache`.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return Some(Duration::ZERO);
        }
        let seconds = directive.strip_prefix("max-age=")?;
        seconds
            .trim_matches('"')
            .parse()
            .ok()
            .map(Duration::from_secs)
    })
}

/// The RSA signing keys of a JWKS document, by `kid`. Keys of other types,
/// for another use (`use` other than `sig`) or another algorithm (`alg`
/// other than `RS256`), without a `kid`, or that do not parse are skipped; a
/// document without one usable key is an error.
pub fn parse_key_set(body: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
    let document: KeySetDocument = serde_json::from_slice(body)
        .map_err(|error| format!("the key set {}", json_error(&error)))?;
    let keys: HashMap<String, DecodingKey> = document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::RSA(_)))
        .filter(|jwk| {
            matches!(
                jwk.common.public_key_use,
                None | Some(PublicKeyUse::Signature)
            ) && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
        })
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((kid, key))
        })
        .collect();
    if keys.is_empty() {
        return Err("the key set holds no usable RSA key".to_owned());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const N: &str = "tSKfSeI0fukRIX38AHlKB1YPpX8PUYN2JdvfM-XjNmLfU1M74N0VmdzIX95sneQGO9kC2xMIE-AIlt52Yf_KgBZggAlS9Y0Vx8DsSL2HvOjguAdXir3vYLvAyyHin_mUisJOqccFKChHKjnk0uXy_38-1r17_cYTp76brKpU1I4kM20M__dbvLBWjfzyw9ehufr74aVwr-0xJfsBVr2oaQFww_XHGz69Q7yHK6DbxYO4w4q2sIfcC4pT8XTPHo4JZ2M733Ea8a7HxtZS563_mhhRZLU5aynQpwaVv2U--CL6EvGt8TlNZOkeRv8wz-Rt8B70jzoRpVK36rR-pHKlXhMGT619v82LneTdsqA25Wi2Ld_c0niuul24A6-aaj2u9SWbxA9LmVtFntvNbRaHXE1SLpLPoIp8uppGF02Nz2v3ld8gCnTTWfq_BQ80Qy8e0coRRABECZrjIMzHEg6MloRDy4na0pRQv61VogqRKDU2r3_VezFPQDb3ciYsZjWBr3HpNOkUjTrvLmFyOE9Q5R_qQGmc6BYtfk5rn7iIfXlkJAZHXhBy-ElBuiBM-YSkFM7dH92sSIoZ05V4MP09Xcppx7kdwsJy72Sust9Hnd9B7V35YnVF6W791lVHnenhCJOziRmkH4xLLbPkaST2Ks3IHH7tVltM6NsRk3jNdVM";

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn rsa_keys_are_indexed_by_kid() {
        let keys = parse_key_set(&body(json!({"keys": [
            {"kty": "RSA", "n": N, "e": "AQAB", "alg": "RS256", "kid": "one", "use": "sig"},
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "two"}
        ]})))
        .unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, vec!["one", "two"]);
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let keys = parse_key_set(&body(json!({"keys": [
            {"kty": "RSA", "n": N, "e": "AQAB"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "symmetric"},
            {"kty": "RSA", "kid": "broken"},
            "not a key",
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "good"}
        ]})))
        .unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["good"]);
    }

    #[test]
    fn only_keys_fit_for_rs256_signatures_are_kept() {
        let keys = parse_key_set(&body(json!({"keys": [
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "enc", "use": "enc"},
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "ps", "alg": "PS256"},
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "rs512", "alg": "RS512"},
            {"kty": "RSA", "n": N, "e": "AQAB", "kid": "sig", "use": "sig", "alg": "RS256"}
        ]})))
        .unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["sig"]);
    }

    #[test]
    fn cache_control_says_how_long_a_key_set_may_be_kept() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("MAX-AGE=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn documents_without_a_usable_key_are_refused() {
        assert!(parse_key_set(b"<html>").is_err());
        assert!(parse_key_set(&body(json!({"keys": []}))).is_err());
        assert!(
            parse_key_set(&body(
                json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]})
            ))
            .is_err()
        );
        assert!(parse_key_set(&body(json!([]))).is_err());
    }

    #[test]
    fn a_fetch_is_allowed_first_after_a_minute_or_after_a_short_backoff() {
        let minute = Duration::from_secs(60);
        let backoff = Duration::from_secs(5);
        let ago = |duration| Instant::now().checked_sub(duration).unwrap();
        let mut state = KeySetState::default();
        assert!(state.may_fetch(minute, backoff));
        state.last_attempt = Some((Instant::now(), true));
        assert!(!state.may_fetch(minute, backoff));
        state.last_attempt = Some((ago(minute), true));
        assert!(state.may_fetch(minute, backoff));
        state.last_attempt = Some((ago(backoff), true));
        assert!(!state.may_fetch(minute, backoff));
        state.last_attempt = Some((Instant::now(), false));
        assert!(!state.may_fetch(minute, backoff));
        state.last_attempt = Some((ago(backoff), false));
        assert!(state.may_fetch(minute, backoff));
    }

    mod fetching {
        use super::*;
        use crate::outbound::Tls;
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};

        /// A key cache of one allowlisted host that answers a key set with
        /// key `known` after `delay`.
        async fn slow_host(delay: Duration) -> (KeyCache, JwksHost, MockServer) {
            let server = MockServer::start().await;
            let jwk = json!({"kty": "RSA", "n": N, "e": "AQAB", "kid": "known"});
            Mock::given(method("GET"))
                .and(path("/.well-known/jwks"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"keys": [jwk]}))
                        .set_delay(delay),
                )
                .mount(&server)
                .await;
            let host = JwksHost::parse(&server.uri()).unwrap();
            let settings = JwksSettings {
                hosts: vec![host.clone()],
                refetch_interval: Duration::from_secs(60),
                failure_backoff: Duration::from_secs(5),
                max_age: Duration::from_secs(900),
            };
            let cache = KeyCache::new(&settings, Arc::new(Metrics::new().unwrap()));
            (cache, host, server)
        }

        fn client() -> reqwest::Client {
            Tls::new().unwrap().client(Duration::from_secs(5)).unwrap()
        }

        #[tokio::test]
        async fn a_fetch_cut_short_still_counts_for_the_cooldown() {
            let (cache, host, server) = slow_host(Duration::from_millis(500)).await;
            let http = client();
            let cut = tokio::time::timeout(
                Duration::from_millis(100),
                cache.key(&http, &host, "unknown"),
            )
            .await;
            assert!(cut.is_err(), "the first request was dropped mid-fetch");
            assert_eq!(
                cache.key(&http, &host, "unknown").await.err(),
                Some(AuthError::KeySetUnavailable { timed_out: false }),
                "the next one does not fetch again"
            );
            assert_eq!(server.received_requests().await.unwrap().len(), 1);
        }

        #[tokio::test]
        async fn requests_waiting_on_a_fetch_wait_for_that_one_only() {
            let (cache, host, server) = slow_host(Duration::from_millis(300)).await;
            let http = client();
            let cache = Arc::new(cache);
            // The first request gives up mid-fetch; four others wait on it.
            let first = {
                let (cache, http, host) = (cache.clone(), http.clone(), host.clone());
                tokio::spawn(async move {
                    tokio::time::timeout(
                        Duration::from_millis(100),
                        cache.key(&http, &host, "unknown"),
                    )
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let waiting: Vec<_> = (0..4)
                .map(|_| {
                    let (cache, http, host) = (cache.clone(), http.clone(), host.clone());
                    tokio::spawn(async move { cache.key(&http, &host, "unknown").await.err() })
                })
                .collect();
            assert!(first.await.unwrap().is_err());
            for waiter in waiting {
                assert!(waiter.await.unwrap().is_some());
            }
            assert_eq!(
                server.received_requests().await.unwrap().len(),
                1,
                "one fetch, not one per waiting request"
            );
        }

        #[tokio::test]
        async fn a_known_kid_is_served_from_the_fetched_set() {
            let (cache, host, server) = slow_host(Duration::ZERO).await;
            let http = client();
            assert!(cache.key(&http, &host, "known").await.is_ok());
            assert!(cache.key(&http, &host, "known").await.is_ok());
            assert_eq!(
                cache.key(&http, &host, "other").await.err(),
                Some(AuthError::KidNotFound),
                "an unknown kid within the minute: no refetch"
            );
            assert_eq!(server.received_requests().await.unwrap().len(), 1);
        }
    }
}
