//! The Redis a fleet of relays shares (`REDIS_URL`): quota counters, checked
//! and counted by one Lua script so that replicas never make more calls than
//! a quota, not even one.
//!
//! Each thread (an HTTP worker's runtime, the bus loop) opens its own
//! multiplexed connection on first use, driven by its own runtime and
//! reconnecting by itself: a call never hops to another thread. Each call is
//! bounded by `REDIS_TIMEOUT_MS`; a call that fails or times out answers
//! `None`, and the caller falls back to its own
//! memory. The first failure of an outage is logged (WARN) and the first
//! success after it (INFO); `ctr_relay_redis_up` tells which.
//!
//! Nothing secret is written: credentials appear in keys only as an
//! HMAC-SHA256 keyed with `REDIS_HASH_KEY` ([`Store::credential_id`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::Sha256;

use crate::config::RedisSettings;
use crate::metrics::Metrics;

/// Checks every bucket of a quota, then counts the call in all of them, or
/// none: `KEYS` the buckets (each followed by the key of the time its limit
/// was reached), `ARGV` their limits, their expiry times (Unix seconds), and
/// now. Answers `{0, count…}` when counted, `{i, count}` when bucket `i`
/// (from 1) is at its limit.
const CHECK_AND_COUNT: &str = r"
local n = #KEYS / 2
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  if count >= tonumber(ARGV[i]) then
    return {i, count}
  end
end
local counts = {0}
for i = 1, n do
  local count = redis.call('INCR', KEYS[2 * i - 1])
  if count == 1 then
    redis.call('EXPIREAT', KEYS[2 * i - 1], ARGV[n + i])
  end
  if count == tonumber(ARGV[i]) then
    redis.call('SET', KEYS[2 * i], ARGV[2 * n + 1], 'EXAT', ARGV[n + i])
  end
  counts[i + 1] = count
end
return counts
";

/// What [`Store::check_and_count`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// Counted: each bucket's count now.
    Yes(Vec<u64>),
    /// Not counted: the bucket at this index is at its limit (its count).
    Reached { index: usize, count: u64 },
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

thread_local! {
    /// This thread's connection to each store (by [`Inner::id`]).
    static CONNECTIONS: std::cell::RefCell<std::collections::HashMap<usize, ConnectionManager>> =
        std::cell::RefCell::default();
}

/// Tells stores apart in [`CONNECTIONS`].
static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Inner {
    id: usize,
    client: redis::Client,
    config: ConnectionManagerConfig,
    timeout: Duration,
    prefix: String,
    hash_key: Vec<u8>,
    script: redis::Script,
    /// Whether the last call failed (an outage is said once).
    down: AtomicBool,
    /// During an outage, when (ms since `started`) the next call may try
    /// Redis: until then calls fall back at once, so an outage costs a call
    /// at most one timeout a second, not one each.
    retry_at: AtomicU64,
    started: Instant,
    metrics: Arc<Metrics>,
}

/// During an outage, how often one call tries Redis again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The store of `settings`: connections are made lazily, one per
    /// thread that uses it. Fails only when the URL cannot be used at all.
    pub fn start(settings: &RedisSettings, metrics: Arc<Metrics>) -> Result<Store, String> {
        let client = match &settings.tls_ca_pem {
            None => redis::Client::open(settings.url.expose()),
            Some(pem) => redis::Client::build_with_tls(
                settings.url.expose(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
        }
        .map_err(|_| "REDIS_URL: not a usable Redis URL (or REDIS_TLS_CA_FILE)".to_owned())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        metrics.redis_up(true);
        Ok(Store {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                client,
                config,
                timeout: settings.timeout,
                prefix: settings.prefix.clone(),
                hash_key: settings.hash_key.expose().as_bytes().to_vec(),
                script: redis::Script::new(CHECK_AND_COUNT),
                down: AtomicBool::new(false),
                retry_at: AtomicU64::new(0),
                started: Instant::now(),
                metrics,
            }),
        })
    }

    /// Opens this thread's connection now, in the background (a `PING`), so
    /// that the first request's call does not wait for the connection and
    /// the TLS handshake. Called where each runtime builds its clients.
    pub fn warm(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some(mut connection) = self.connection() {
            tokio::spawn(async move {
                let _: redis::RedisResult<()> =
                    redis::cmd("PING").query_async(&mut connection).await;
            });
        }
    }

    /// This thread's connection, made on first use (driven by the runtime
    /// of the thread). `None` outside a runtime.
    fn connection(&self) -> Option<ConnectionManager> {
        let inner = &self.inner;
        CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            if let Some(connection) = connections.get(&inner.id) {
                return Some(connection.clone());
            }
            let connection =
                ConnectionManager::new_lazy_with_config(inner.client.clone(), inner.config.clone())
                    .ok()?;
            connections.insert(inner.id, connection.clone());
            Some(connection)
        })
    }

    /// `<prefix><parts joined by ':'>`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.inner.prefix.clone();
        key.push_str(&parts.join(":"));
        key
    }

    /// A credential as Redis may name it: HMAC-SHA256(`REDIS_HASH_KEY`,
    /// `<provider>:<secret>`), hex. The same on every replica; it reveals no
    /// key and cannot confirm a guessed one without `REDIS_HASH_KEY`.
    pub fn credential_id(&self, provider: &str, secret: &str) -> String {
        credential_id(&self.inner.hash_key, provider, secret)
    }

    /// Checks `keys` against `limits` and counts one call in all of them, or
    /// in none (atomically, on the server). `None`: Redis did not answer.
    /// `reached_keys[i]` is set to `now` (Unix seconds) when the call fills
    /// bucket `i`.
    pub async fn check_and_count(
        &self,
        keys: &[String],
        reached_keys: &[String],
        limits: &[u64],
        expire_at: &[i64],
        now: i64,
    ) -> Option<Counted> {
        let mut invocation = self.inner.script.prepare_invoke();
        for (key, reached) in keys.iter().zip(reached_keys) {
            invocation.key(key);
            invocation.key(reached);
        }
        for limit in limits {
            invocation.arg(*limit);
        }
        for at in expire_at {
            invocation.arg(*at);
        }
        invocation.arg(now);
        let mut connection = self.connection()?;
        let answer: Option<Vec<i64>> = self
            .bounded("quota", invocation.invoke_async(&mut connection))
            .await;
        let answer = answer?;
        let count = |value: &i64| u64::try_from(*value).unwrap_or(0);
        match answer.split_first() {
            Some((0, counts)) => Some(Counted::Yes(counts.iter().map(count).collect())),
            Some((index, rest)) if *index > 0 => Some(Counted::Reached {
                index: usize::try_from(*index - 1).unwrap_or(0),
                count: rest.first().map(count).unwrap_or(0),
            }),
            _ => {
                self.failed("quota", "an answer of another shape");
                None
            }
        }
    }

    /// The values of `keys` as numbers (0 for a missing one). `None`: Redis
    /// did not answer.
    pub async fn counts(&self, keys: &[String]) -> Option<Vec<u64>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let mut connection = self.connection()?;
        let mut command = redis::cmd("MGET");
        for key in keys {
            command.arg(key);
        }
        let values: Option<Vec<Option<u64>>> = self
            .bounded("quota_status", command.query_async(&mut connection))
            .await;
        values.map(|values| values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// How long `key` still lives (0 when it does not). `None`: Redis did
    /// not answer.
    pub async fn wait_left(&self, key: &str) -> Option<Duration> {
        let mut connection = self.connection()?;
        let left: Option<i64> = self
            .bounded(
                "rate_limit",
                redis::cmd("PTTL").arg(key).query_async(&mut connection),
            )
            .await;
        left.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// Sets `key` for `wait` (a mark, no value).
    pub async fn hold(&self, key: &str, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let Some(mut connection) = self.connection() else {
            return;
        };
        let _: Option<()> = self
            .bounded(
                "rate_limit",
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut connection),
            )
            .await;
    }

    /// The bytes at `key`, if any. `None`: Redis did not answer.
    pub async fn get_bytes(&self, key: &str) -> Option<Option<Vec<u8>>> {
        let mut connection = self.connection()?;
        self.bounded(
            "cache",
            redis::cmd("GET").arg(key).query_async(&mut connection),
        )
        .await
    }

    /// Keeps `value` at `key` for `ttl`.
    pub async fn set_bytes(&self, key: &str, value: &[u8], ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let Some(mut connection) = self.connection() else {
            return;
        };
        let _: Option<()> = self
            .bounded(
                "cache",
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut connection),
            )
            .await;
    }

    /// `call`, within the timeout; `None` (counted, said once per outage)
    /// when it fails.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let inner = &self.inner;
        if inner.down.load(Ordering::Relaxed) {
            // One call a second tries again; the others fall back at once.
            let now = inner.started.elapsed().as_millis() as u64;
            let due = inner.retry_at.load(Ordering::Relaxed);
            let next = now + RETRY_EVERY.as_millis() as u64;
            if now < due
                || inner
                    .retry_at
                    .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                inner.metrics.redis_fallback(operation);
                return None;
            }
        }
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(value)) => {
                if self.inner.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: quotas are shared again");
                    self.inner.metrics.redis_up(true);
                }
                Some(value)
            }
            Ok(Err(error)) => {
                self.failed(operation, &format!("{:?}", error.kind()));
                None
            }
            Err(_) => {
                self.failed(operation, "timed out");
                None
            }
        }
    }

    fn failed(&self, operation: &'static str, reason: &str) {
        self.inner.metrics.redis_fallback(operation);
        let next = self.inner.started.elapsed() + RETRY_EVERY;
        self.inner
            .retry_at
            .store(next.as_millis() as u64, Ordering::Relaxed);
        if !self.inner.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                operation,
                reason,
                timeout_ms = self.inner.timeout.as_millis() as u64,
                "Redis does not answer: this relay counts quotas on its own until it does"
            );
            self.inner.metrics.redis_up(false);
        }
    }
}

/// HMAC-SHA256(`key`, `<provider>:<secret>`), hex.
pub fn credential_id(key: &[u8], provider: &str, secret: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(provider.as_bytes());
    mac.update(b":");
    mac.update(secret.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_id_is_keyed_and_reveals_nothing() {
        let id = credential_id(b"k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1", "C1fApp", "secret-key");
        assert_eq!(id.len(), 64);
        assert!(!id.contains("secret"));
        assert_eq!(
            id,
            credential_id(b"k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1", "C1fApp", "secret-key"),
            "the same on every replica"
        );
        assert_ne!(
            id,
            credential_id(b"k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2", "C1fApp", "secret-key")
        );
        assert_ne!(
            id,
            credential_id(
                b"k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1",
                "CyberScan",
                "secret-key"
            )
        );
    }
}
