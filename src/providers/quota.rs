//! Quotas per upstream credential: every call that goes out to a provider
//! (retries and health checks included) is checked and counted in each
//! bucket of the credential's quota first — in Redis when the fleet shares
//! one, atomically, else (or while Redis does not answer) in this process.
//! At a limit no call is made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;

use super::ProviderError;
use super::scope::{Scope, Tenant};
use crate::config::FleetSettings;
use crate::domain::{Bucket, ProviderName, Quota, Secret};
use crate::metrics::Metrics;
use crate::store::{self, Counted, Store};

/// How often a replica asks Redis whether another one was told to wait (a
/// 429) for a credential and origin: a 429 learned elsewhere holds this
/// replica within this long, and the hot path makes no Redis call for it in
/// between.
const RATE_LIMIT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Local buckets kept at most; expired ones go first, then (a flood of
/// credentials) all of them: counting starts over rather than growing.
const MAX_LOCAL_BUCKETS: usize = 100_000;

/// One bucket's state now, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketStatus {
    pub bucket: Bucket,
    pub consumption: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// When the call that filled the bucket was counted.
    pub reached_at: Option<DateTime<Utc>>,
}

impl BucketStatus {
    pub fn reached(&self) -> bool {
        self.consumption >= self.bucket.limit
    }
}

/// The quotas of the process: the operator's defaults, the local counters,
/// and the fleet's Redis when there is one. Shared by every runtime.
#[derive(Debug)]
pub struct Quotas {
    c1fapp: Option<Quota>,
    cyberscan: Option<Quota>,
    store: Option<Store>,
    refuse_without_redis: bool,
    /// The HMAC key naming credentials: `REDIS_HASH_KEY`, or random.
    hash_key: Vec<u8>,
    /// `key → (count, end of its window, when its limit was reached)`.
    local: Mutex<HashMap<String, LocalBucket>>,
    /// When each credential and origin's shared rate limit was last asked of
    /// Redis: at most once every [`RATE_LIMIT_CHECK_EVERY`].
    rate_checked: Mutex<HashMap<String, std::time::Instant>>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, Copy)]
struct LocalBucket {
    count: u64,
    end: DateTime<Utc>,
    reached_at: Option<DateTime<Utc>>,
}

/// A bucket's window: from, until.
type Window = (DateTime<Utc>, DateTime<Utc>);

/// How [`Quotas::count_locally`] counts.
#[derive(Clone, Copy)]
enum Local<'a> {
    /// Check against the limits, then count one.
    Take,
    /// Follow the shared counts.
    Follow(&'a [u64]),
}

/// The quota a call is made under.
#[derive(Debug, Clone, Copy)]
pub struct QuotaUse<'a> {
    pub quotas: &'a Quotas,
    pub quota: &'a Quota,
    /// The call's credential (named in counters by a keyed hash only).
    pub secret: &'a Secret,
}

/// What a call shares with the fleet: its credential's quota (if any), and
/// the rate-limit memory of its credential and host.
#[derive(Debug, Clone, Copy)]
pub struct FleetUse<'a> {
    pub quotas: &'a Quotas,
    pub secret: &'a Secret,
    /// The caller's own quota (a token's claim), if any.
    pub own: Option<&'a Quota>,
}

impl<'a> FleetUse<'a> {
    /// The quota the call is under, if any.
    pub fn quota(&self, provider: ProviderName) -> Option<QuotaUse<'a>> {
        self.quotas.quota(provider, self.own).map(|quota| QuotaUse {
            quotas: self.quotas,
            quota,
            secret: self.secret,
        })
    }

    fn rate_limit_key(&self, provider: ProviderName, api: &Url) -> Option<(&'a Store, String)> {
        let store = self.quotas.store.as_ref()?;
        let name = store::credential_id(
            &self.quotas.hash_key,
            provider.as_str(),
            &format!("{}\n{}", self.secret.expose(), origin(api)),
        );
        Some((store, store.key(&["ratelimit", provider.as_str(), &name])))
    }

    /// The key of an answer in the fleet's cache: a keyed hash of the
    /// credential and what was asked (an observable, a URL).
    fn cache_key(&self, provider: ProviderName, asked: &str) -> Option<(&'a Store, String)> {
        let store = self.quotas.store.as_ref()?;
        let name = store::credential_id(
            &self.quotas.hash_key,
            provider.as_str(),
            &format!("{}\n{asked}", self.secret.expose()),
        );
        Some((store, store.key(&["cache", provider.as_str(), &name])))
    }

    /// An answer another replica (or this one) kept in the fleet's cache,
    /// when `usable` says it is one; its bytes count in the request's
    /// budget as upstream bytes do (for `tenant`).
    pub async fn cached(
        &self,
        provider: ProviderName,
        asked: &str,
        scope: &Scope,
        tenant: Tenant,
        usable: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>, ProviderError> {
        let Some((store, key)) = self.cache_key(provider, asked) else {
            return Ok(None);
        };
        let Some(body) = store.get_bytes(&key).await.flatten() else {
            return Ok(None);
        };
        scope
            .budget()
            .read(body.len(), tenant)
            .map_err(|limit| ProviderError::OverBudget { provider, limit })?;
        self.quotas.metrics.cache_lookup_shared(provider.as_str());
        crate::telemetry::trace::note_outcome("cached");
        Ok(usable(&body).then_some(body))
    }

    /// Keeps an answer in the fleet's cache for `ttl` (written in the
    /// background) — unless it holds the credential itself (an upstream that
    /// echoes the key): no secret is written to Redis.
    pub async fn keep(&self, provider: ProviderName, asked: &str, body: &[u8], ttl: Duration) {
        let secret = self.secret.expose().as_bytes();
        if !secret.is_empty() && body.windows(secret.len()).any(|window| window == secret) {
            return;
        }
        if let Some((store, key)) = self.cache_key(provider, asked) {
            // Off the request's path: the answer is not held up by Redis.
            let (store, body) = (store.clone(), body.to_vec());
            tokio::spawn(async move { store.set_bytes(&key, &body, ttl).await });
        }
    }

    /// How long another replica was told to wait for this credential and
    /// the host of `api` (a 429), if Redis says so.
    pub async fn shared_wait(&self, provider: ProviderName, api: &Url) -> Option<Duration> {
        let (store, key) = self.rate_limit_key(provider, api)?;
        {
            let now = std::time::Instant::now();
            let mut checked = self
                .quotas
                .rate_checked
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if checked
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < RATE_LIMIT_CHECK_EVERY)
            {
                return None;
            }
            if checked.len() >= MAX_LOCAL_BUCKETS {
                checked.retain(|_, at| now.duration_since(*at) < RATE_LIMIT_CHECK_EVERY);
            }
            checked.insert(key.clone(), now);
        }
        // Boxed: see `take`.
        Box::pin(store.wait_left(&key))
            .await
            .filter(|wait| !wait.is_zero())
    }

    /// Tells every replica to wait `wait` before calling with this
    /// credential and host.
    pub async fn share_wait(&self, provider: ProviderName, api: &Url, wait: Duration) {
        if let Some((store, key)) = self.rate_limit_key(provider, api) {
            Box::pin(store.hold(&key, wait)).await;
        }
    }
}

/// `scheme://host:port` of an API address: what, with the credential, a
/// rate limit is shared for.
fn origin(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl Quotas {
    pub fn new(settings: &FleetSettings, store: Option<Store>, metrics: Arc<Metrics>) -> Self {
        let hash_key = match &settings.redis {
            Some(redis) => redis.hash_key.expose().as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        Self {
            c1fapp: settings.c1fapp_quota.clone(),
            cyberscan: settings.cyberscan_quota.clone(),
            store,
            refuse_without_redis: settings.refuse_without_redis,
            hash_key,
            local: Mutex::new(HashMap::new()),
            rate_checked: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Opens this runtime's connection to the fleet's Redis, if any.
    pub fn warm(&self) {
        if let Some(store) = &self.store {
            store.warm();
        }
    }

    /// The quota of a credential of `provider`: its own (a token's claim),
    /// else the operator's; `None`: no quota.
    pub fn quota<'a>(
        &'a self,
        provider: ProviderName,
        own: Option<&'a Quota>,
    ) -> Option<&'a Quota> {
        own.or(match provider {
            ProviderName::C1fApp => self.c1fapp.as_ref(),
            ProviderName::CyberScan => self.cyberscan.as_ref(),
        })
    }

    /// How a credential is named in counters (and in Redis): a keyed hash.
    pub fn credential_id(&self, provider: ProviderName, secret: &str) -> String {
        store::credential_id(&self.hash_key, provider.as_str(), secret)
    }

    fn key(
        &self,
        provider: ProviderName,
        credential: &str,
        bucket: &Bucket,
        start: DateTime<Utc>,
    ) -> String {
        let unit = bucket.unit.as_str();
        let start = start.timestamp().to_string();
        let parts = ["quota", provider.as_str(), credential, unit, &start];
        match &self.store {
            Some(store) => store.key(&parts),
            None => parts.join(":"),
        }
    }

    /// Each bucket's window at `now`, and its key.
    fn buckets_at(
        &self,
        provider: ProviderName,
        quota: QuotaUse<'_>,
        now: DateTime<Utc>,
    ) -> (Vec<Window>, Vec<String>) {
        let buckets = quota.quota.buckets();
        let windows: Vec<_> = buckets
            .iter()
            .map(|bucket| bucket.unit.window(now))
            .collect();
        let credential = self.credential_id(provider, quota.secret.expose());
        let keys = buckets
            .iter()
            .zip(&windows)
            .map(|(bucket, (start, _))| self.key(provider, &credential, bucket, *start))
            .collect();
        (windows, keys)
    }

    /// Counts one call of `provider` under `quota`, or refuses it at a limit.
    pub async fn take(
        &self,
        provider: ProviderName,
        quota: QuotaUse<'_>,
    ) -> Result<(), ProviderError> {
        let now = Utc::now();
        let buckets = quota.quota.buckets();
        let (windows, keys) = self.buckets_at(provider, quota, now);
        let reached = |index: usize| {
            self.metrics.quota_refusal(provider.as_str());
            let bucket = buckets[index];
            Err(ProviderError::QuotaReached {
                provider,
                quota: bucket.describe(),
                resets: windows[index].1,
            })
        };
        let limits: Vec<u64> = buckets.iter().map(|bucket| bucket.limit).collect();
        if let Some(store) = &self.store {
            // Kept a minute past the window's end, then gone.
            let expire: Vec<i64> = windows
                .iter()
                .map(|(_, end)| end.timestamp() + 60)
                .collect();
            let reached_keys: Vec<String> =
                keys.iter().map(|key| format!("{key}:reached")).collect();
            // Boxed: a Redis exchange's state is large, and every call's
            // state would hold its room, with Redis or without.
            match Box::pin(store.check_and_count(
                &keys,
                &reached_keys,
                &limits,
                &expire,
                now.timestamp(),
            ))
            .await
            {
                Some(Counted::Yes(counts)) => {
                    // The local counters follow, for an outage to start from.
                    self.count_locally(&keys, &windows, &limits, Local::Follow(&counts));
                    return Ok(());
                }
                Some(Counted::Reached { index, .. }) => {
                    return reached(index.min(buckets.len() - 1));
                }
                None if self.refuse_without_redis => {
                    self.metrics.quota_refusal(provider.as_str());
                    return Err(ProviderError::QuotaUnavailable { provider });
                }
                None => {}
            }
        }
        // Alone: checked and counted under one lock.
        match self.count_locally(&keys, &windows, &limits, Local::Take) {
            Some(index) => reached(index),
            None => Ok(()),
        }
    }

    /// Adds one to each local bucket unless one is at its `limits` (its
    /// index is answered), or sets them to Redis's counts.
    fn count_locally(
        &self,
        keys: &[String],
        windows: &[Window],
        limits: &[u64],
        how: Local<'_>,
    ) -> Option<usize> {
        let now = Utc::now();
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if matches!(how, Local::Take) {
            for (index, (key, limit)) in keys.iter().zip(limits).enumerate() {
                if local.get(key).is_some_and(|bucket| bucket.count >= *limit) {
                    return Some(index);
                }
            }
        }
        if local.len() + keys.len() > MAX_LOCAL_BUCKETS {
            local.retain(|_, bucket| bucket.end > now);
            if local.len() + keys.len() > MAX_LOCAL_BUCKETS {
                local.clear();
            }
        }
        for (index, ((key, (_, end)), limit)) in keys.iter().zip(windows).zip(limits).enumerate() {
            let bucket = local.entry(key.clone()).or_insert(LocalBucket {
                count: 0,
                end: *end,
                reached_at: None,
            });
            bucket.count = match how {
                Local::Follow(counts) => counts.get(index).copied().unwrap_or(0).max(bucket.count),
                Local::Take => bucket.count + 1,
            };
            if bucket.count >= *limit && bucket.reached_at.is_none() {
                bucket.reached_at = Some(now);
            }
        }
        None
    }

    /// Each bucket of `quota` now, for `/health`: Redis's counts when it
    /// answers, else this process's.
    pub async fn status(&self, provider: ProviderName, quota: QuotaUse<'_>) -> Vec<BucketStatus> {
        let now = Utc::now();
        let buckets = quota.quota.buckets();
        let (windows, keys) = self.buckets_at(provider, quota, now);
        let shared = match &self.store {
            Some(store) => {
                let mut asked = keys.clone();
                asked.extend(keys.iter().map(|key| format!("{key}:reached")));
                store.counts(&asked).await
            }
            None => None,
        };
        let local = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        buckets
            .iter()
            .zip(windows)
            .enumerate()
            .map(|(index, (bucket, (start, end)))| {
                let (consumption, reached_at) = match &shared {
                    Some(values) => (
                        values.get(index).copied().unwrap_or(0),
                        values
                            .get(keys.len() + index)
                            .filter(|at| **at > 0)
                            .and_then(|at| DateTime::from_timestamp(i64::try_from(*at).ok()?, 0)),
                    ),
                    None => local
                        .get(&keys[index])
                        .map_or((0, None), |bucket| (bucket.count, bucket.reached_at)),
                };
                BucketStatus {
                    bucket: *bucket,
                    consumption,
                    start,
                    end,
                    reached_at,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(c1fapp: &str) -> Quotas {
        let settings = FleetSettings {
            c1fapp_quota: Some(Quota::parse(c1fapp).unwrap()),
            ..FleetSettings::default()
        };
        Quotas::new(&settings, None, Arc::new(Metrics::new().unwrap()))
    }

    #[tokio::test]
    async fn calls_are_counted_per_credential_until_a_limit() {
        let quotas = quotas("2/day,100/month");
        let quota = quotas.quota(ProviderName::C1fApp, None).unwrap().clone();
        let a = Secret::new("key-a");
        let b = Secret::new("key-b");
        let of = |secret| QuotaUse {
            quotas: &quotas,
            quota: &quota,
            secret,
        };
        assert!(quotas.take(ProviderName::C1fApp, of(&a)).await.is_ok());
        assert!(quotas.take(ProviderName::C1fApp, of(&a)).await.is_ok());
        let refused = quotas.take(ProviderName::C1fApp, of(&a)).await.unwrap_err();
        let ProviderError::QuotaReached {
            quota: text,
            resets,
            ..
        } = refused
        else {
            panic!("{refused:?}");
        };
        assert_eq!(text, "2 a day");
        assert!(resets > Utc::now());
        assert!(
            quotas.take(ProviderName::C1fApp, of(&b)).await.is_ok(),
            "another key"
        );
        let status = quotas.status(ProviderName::C1fApp, of(&a)).await;
        assert_eq!(status.len(), 2);
        assert_eq!((status[0].consumption, status[0].reached()), (2, true));
        assert_eq!(
            (status[1].consumption, status[1].reached()),
            (2, false),
            "a refused call is not counted"
        );
        assert!(quotas.quota(ProviderName::CyberScan, None).is_none());
    }

    #[test]
    fn a_tokens_quota_replaces_the_operators() {
        let quotas = quotas("2/day");
        let own = Quota::parse("5/minute").unwrap();
        assert_eq!(quotas.quota(ProviderName::C1fApp, Some(&own)), Some(&own));
    }
}
