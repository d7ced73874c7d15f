//! One upstream call per distinct lookup in flight, and the optional
//! short-lived cache of upstream answers.
//!
//! Keys always include the credential the answer was fetched with, so one
//! caller never sees another's results. Concurrent lookups of the same key
//! share one upstream call (request coalescing, [`Coalescer`]), cache or not;
//! a follower only ever takes its leader's data or the upstream's own
//! failure, never the leader's request limits (deadline, budget): then it
//! looks up itself. Only successful answers are kept by the cache. What is cached
//! is upstream data, not CTIM: every response is mapped afresh, with its own
//! transient ids. The cache is bounded by bytes (`RESULT_CACHE_MAX_BYTES`) and
//! by entries (`RESULT_CACHE_MAX_ENTRIES`): each entry weighs its bytes, and
//! at least the bytes budget divided by the entries budget.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use moka::future::Cache;
use tokio::sync::watch;

use url::Url;

use super::ProviderError;
use super::scope::Scope;
use crate::config::ResultCacheSettings;
use crate::domain::{ProviderName, Secret};
use crate::metrics::Metrics;

/// A lookup in flight: its result, once there is one. The sender is the
/// leader's; it is dropped without a result when the leader is cancelled.
type Flight<V> = watch::Receiver<Option<Result<V, ProviderError>>>;

pub struct ResultCache<K, V> {
    cache: Option<Cache<K, V>>,
    /// Bytes inserted since evictions last ran, and how many may be before
    /// they run again (see [`ResultCache::get_or_fetch`]).
    unsettled: Arc<AtomicUsize>,
    settle_every: usize,
    flights: Coalescer<K, V>,
    provider: ProviderName,
    metrics: Arc<Metrics>,
}

impl<K, V> Clone for ResultCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            unsettled: self.unsettled.clone(),
            settle_every: self.settle_every,
            flights: self.flights.clone(),
            provider: self.provider,
            metrics: self.metrics.clone(),
        }
    }
}

/// Lookups in flight by key: concurrent lookups of one key share the first
/// one's call. Shared by every worker: a follower waits on a channel, never
/// on another runtime's connection.
pub struct Coalescer<K, V> {
    in_flight: Arc<Mutex<HashMap<K, Flight<V>>>>,
    provider: ProviderName,
    metrics: Arc<Metrics>,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Self {
            in_flight: self.in_flight.clone(),
            provider: self.provider,
            metrics: self.metrics.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for Coalescer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// Removes the leader's flight when it lands, or when it is dropped
/// mid-way (its request was cancelled).
struct Landing<'a, K: Hash + Eq, V> {
    in_flight: &'a Mutex<HashMap<K, Flight<V>>>,
    key: &'a K,
}

impl<K: Hash + Eq, V> Drop for Landing<'_, K, V> {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.key);
    }
}

/// Whether an error belongs to the request that met it (its deadline, its
/// memory budget) rather than to the upstream: a follower does not take such
/// an error over, it looks up on its own.
fn request_scoped(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::Deadline { .. } | ProviderError::OverBudget { .. }
    )
}

impl<K, V> std::fmt::Debug for ResultCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("provider", &self.provider)
            .field("enabled", &self.cache.is_some())
            .finish()
    }
}

/// What a cache entry holds, in bytes (its key's and its value's payload).
pub trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for Arc<Vec<u8>> {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// C1fApp's key: the API key and the value looked up.
impl Weight for (Secret, String) {
    fn weight(&self) -> usize {
        self.0.expose().len() + self.1.len()
    }
}

/// CyberScan's key: the URL asked and the API key.
impl Weight for (Url, Secret) {
    fn weight(&self) -> usize {
        self.0.as_str().len() + self.1.expose().len()
    }
}

/// Besides its payload, each entry costs this much (moka's bookkeeping, the
/// key's and value's own structures).
const ENTRY_OVERHEAD: usize = 160;

impl<K, V> ResultCache<K, V>
where
    K: Clone + Hash + Eq + Send + Sync + Weight + 'static,
    V: Clone + Send + Sync + Weight + 'static,
{
    pub fn new(
        settings: &ResultCacheSettings,
        provider: ProviderName,
        metrics: Arc<Metrics>,
    ) -> Self {
        // An entry weighs its bytes, and at least a fair share of the bytes
        // budget, so no more than `max_entries` entries ever fit either.
        let least = (settings.max_bytes / settings.max_entries.max(1)).max(1);
        let cache = settings.ttl.map(|ttl| {
            Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(move |key: &K, value: &V| {
                    let bytes = (key.weight() + value.weight() + ENTRY_OVERHEAD) as u64;
                    u32::try_from(bytes.max(least)).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build()
        });
        Self {
            cache,
            unsettled: Arc::default(),
            settle_every: usize::try_from(settings.max_bytes / 8).unwrap_or(usize::MAX),
            flights: Coalescer::new(provider, metrics.clone()),
            provider,
            metrics,
        }
    }

    /// The cached answer for `key`, or the answer of a lookup of `key`
    /// already in flight, or the result of `fetch` (kept when it succeeded).
    /// `scope` bounds how long a follower waits.
    ///
    /// `fetch` is boxed here, before any state is laid out: an async fn's
    /// argument, moved into a callee, keeps its room in both states, and a
    /// provider's fetch (the HTTP call) is the largest part of a lookup. Held
    /// inline, it was laid out four times in every call in flight.
    pub fn get_or_fetch<'a>(
        &'a self,
        key: K,
        scope: &'a Scope,
        fetch: impl Future<Output = Result<V, ProviderError>> + 'a,
    ) -> impl Future<Output = Result<V, ProviderError>> + 'a {
        self.lookup(key, scope, Box::pin(fetch))
    }

    async fn lookup(
        &self,
        key: K,
        scope: &Scope,
        fetch: impl Future<Output = Result<V, ProviderError>> + Unpin,
    ) -> Result<V, ProviderError> {
        let Some(cache) = &self.cache else {
            return self.flights.run(key, scope, fetch).await;
        };
        // Boxed: moka's futures are large, and every lookup's state would
        // hold their room, with the cache on or off.
        if let Some(value) = Box::pin(cache.get(&key)).await {
            self.metrics.cache_lookup(self.provider.as_str(), true);
            crate::telemetry::trace::note_outcome("cached");
            return Ok(value);
        }
        self.metrics.cache_lookup(self.provider.as_str(), false);
        let keep = key.clone();
        Box::pin(self.flights.run(key, scope, async move {
            // Filled by the last leader between our miss and our lead.
            if let Some(value) = cache.get(&keep).await {
                return Ok(value);
            }
            let value = fetch.await?;
            let weight = keep.weight() + value.weight();
            cache.insert(keep, value.clone()).await;
            self.settle(cache, weight).await;
            Ok(value)
        }))
        .await
    }
}

impl<K, V> ResultCache<K, V>
where
    K: Clone + Hash + Eq + Send + Sync + Weight + 'static,
    V: Clone + Send + Sync + Weight + 'static,
{
    /// moka evicts only when its pending writes are applied, which it does
    /// after dozens of them: 64 answers of 3 MiB would all live at once in
    /// a cache of 32 MiB. Once an eighth of the bytes budget has been
    /// inserted since the last time, the evictions are run now, so the cache
    /// passes its bound by at most that much (and one entry).
    async fn settle(&self, cache: &Cache<K, V>, weight: usize) {
        let before = self.unsettled.fetch_add(weight, Ordering::Relaxed);
        if before + weight >= self.settle_every {
            self.unsettled.store(0, Ordering::Relaxed);
            cache.run_pending_tasks().await;
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Clone + Hash + Eq,
    V: Clone,
{
    pub fn new(provider: ProviderName, metrics: Arc<Metrics>) -> Self {
        Self {
            in_flight: Arc::default(),
            provider,
            metrics,
        }
    }

    /// Leads the lookup of `key` (runs `fetch`, then hands its result to
    /// those who waited), or follows the one in flight. A follower whose
    /// leader was cancelled, or met its own request's deadline or budget,
    /// tries again: it leads, or follows a newer leader.
    pub async fn run(
        &self,
        key: K,
        scope: &Scope,
        fetch: impl Future<Output = Result<V, ProviderError>>,
    ) -> Result<V, ProviderError> {
        let mut fetch = Some(fetch);
        loop {
            let role = {
                let mut flights = self
                    .in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match flights.get(&key) {
                    Some(flight) => Err(flight.clone()),
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        flights.insert(key.clone(), receiver);
                        Ok(sender)
                    }
                }
            };
            match role {
                Ok(sender) => {
                    let _landing = Landing {
                        in_flight: &self.in_flight,
                        key: &key,
                    };
                    let Some(fetch) = fetch.take() else {
                        // Unreachable: a leader returns below.
                        return Err(ProviderError::Deadline {
                            provider: self.provider,
                            after: scope.allowed(),
                        });
                    };
                    let result = fetch.await;
                    sender.send_replace(Some(result.clone()));
                    return result;
                }
                Err(mut flight) => {
                    self.metrics.upstream_coalesced(self.provider.as_str());
                    crate::telemetry::trace::note_outcome("coalesced");
                    let deadline = tokio::time::Instant::from_std(scope.deadline());
                    let landed = tokio::time::timeout_at(deadline, async {
                        match flight.wait_for(Option::is_some).await {
                            Ok(result) => result.clone(),
                            Err(_) => None,
                        }
                    })
                    .await;
                    match landed {
                        Err(_) => {
                            return Err(ProviderError::Deadline {
                                provider: self.provider,
                                after: scope.allowed(),
                            });
                        }
                        Ok(Some(Err(error))) if request_scoped(&error) => continue,
                        Ok(Some(result)) => return result,
                        Ok(None) => continue,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    impl Weight for String {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    impl Weight for u32 {
        fn weight(&self) -> usize {
            4
        }
    }

    fn scope() -> Scope {
        Scope::new(
            &crate::config::Settings::default().limits,
            Arc::new(crate::providers::scope::MemoryPool::new(1 << 20, 1 << 20)),
        )
    }

    fn cache(ttl: Option<Duration>) -> ResultCache<String, u32> {
        ResultCache::new(
            &ResultCacheSettings {
                ttl,
                max_entries: 100,
                max_bytes: 1024 * 1024,
            },
            ProviderName::C1fApp,
            Arc::new(Metrics::new().unwrap()),
        )
    }

    async fn fetch(
        calls: &AtomicUsize,
        result: Result<u32, ProviderError>,
    ) -> Result<u32, ProviderError> {
        calls.fetch_add(1, Ordering::SeqCst);
        result
    }

    /// A fetch that counts itself and answers after `delay`.
    async fn slow(
        calls: &AtomicUsize,
        delay: Duration,
        result: Result<u32, ProviderError>,
    ) -> Result<u32, ProviderError> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        result
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_key_share_one_call_and_other_keys_do_not() {
        let cache = cache(None);
        let calls = AtomicUsize::new(0);
        let scope = scope();
        let same = (0..50).map(|_| {
            cache.get_or_fetch(
                "k".to_owned(),
                &scope,
                slow(&calls, Duration::from_millis(100), Ok(7)),
            )
        });
        let answers = futures_util::future::join_all(same).await;
        assert!(answers.iter().all(|answer| *answer == Ok(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let other = (0..5).map(|n| {
            cache.get_or_fetch(
                format!("k{n}"),
                &scope,
                slow(&calls, Duration::from_millis(50), Ok(n)),
            )
        });
        let answers = futures_util::future::join_all(other).await;
        assert_eq!(answers, (0..5).map(Ok).collect::<Vec<_>>());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert!(
            cache.flights.in_flight.lock().unwrap().is_empty(),
            "nothing left in flight"
        );
    }

    fn coalesced(cache: &ResultCache<String, u32>) -> u64 {
        let text = cache.metrics.render().unwrap();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(r#"ctr_relay_upstream_coalesced_total{provider="C1fApp"} "#)
            })
            .map_or(0, |count| count.parse().unwrap())
    }

    /// The leader starts at once and ends with `leader`; the follower asks
    /// for the same key 10 ms later, while the leader is still in flight.
    async fn lead_and_follow(
        cache: &ResultCache<String, u32>,
        calls: &AtomicUsize,
        leader: impl Future<Output = Result<u32, ProviderError>>,
    ) -> Result<u32, ProviderError> {
        let scope = scope();
        let (_, follower) =
            tokio::join!(cache.get_or_fetch("k".to_owned(), &scope, leader), async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                cache
                    .get_or_fetch(
                        "k".to_owned(),
                        &scope,
                        slow(calls, Duration::from_millis(10), Ok(2)),
                    )
                    .await
            });
        follower
    }

    #[tokio::test]
    async fn a_follower_looks_up_itself_when_its_leader_is_cancelled() {
        for ttl in [None, Some(Duration::from_secs(60))] {
            let cache = cache(ttl);
            let calls = AtomicUsize::new(0);
            let scope = scope();
            // The leader's caller goes away after 50 ms; the follower has
            // been waiting on it since 10 ms.
            let leader = tokio::time::timeout(
                Duration::from_millis(50),
                cache.get_or_fetch(
                    "k".to_owned(),
                    &scope,
                    slow(&calls, Duration::from_secs(60), Ok(1)),
                ),
            );
            let follower = async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                cache
                    .get_or_fetch(
                        "k".to_owned(),
                        &scope,
                        slow(&calls, Duration::from_millis(10), Ok(2)),
                    )
                    .await
            };
            let (leader, follower) = tokio::join!(leader, follower);
            assert!(leader.is_err(), "the leader was cancelled");
            assert_eq!(follower, Ok(2), "ttl {ttl:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 2);
            assert_eq!(coalesced(&cache), 1, "the follower did follow first");
        }
    }

    #[tokio::test]
    async fn a_follower_does_not_take_over_its_leaders_deadline_or_budget() {
        let limits = [
            ProviderError::Deadline {
                provider: ProviderName::C1fApp,
                after: Duration::from_secs(1),
            },
            ProviderError::OverBudget {
                provider: ProviderName::C1fApp,
                limit: crate::providers::scope::Limit::TenantBytes(1),
            },
        ];
        for ttl in [None, Some(Duration::from_secs(60))] {
            for limit in &limits {
                let cache = cache(ttl);
                let calls = AtomicUsize::new(0);
                let leader = slow(&calls, Duration::from_millis(50), Err(limit.clone()));
                let follower = lead_and_follow(&cache, &calls, leader).await;
                assert_eq!(follower, Ok(2), "ttl {ttl:?}, {limit:?}");
                assert_eq!(calls.load(Ordering::SeqCst), 2);
                assert_eq!(coalesced(&cache), 1, "the follower did follow first");
            }
        }
    }

    #[tokio::test]
    async fn a_follower_shares_its_leaders_data_and_the_upstreams_failures() {
        for ttl in [None, Some(Duration::from_secs(60))] {
            let cache = cache(ttl);
            let calls = AtomicUsize::new(0);
            let leader = slow(&calls, Duration::from_millis(50), Ok(1));
            assert_eq!(lead_and_follow(&cache, &calls, leader).await, Ok(1));
            assert_eq!(calls.load(Ordering::SeqCst), 1);

            let cache = self::cache(ttl);
            let calls = AtomicUsize::new(0);
            let failure = ProviderError::Interrupted {
                provider: ProviderName::C1fApp,
            };
            let leader = slow(&calls, Duration::from_millis(50), Err(failure.clone()));
            assert_eq!(lead_and_follow(&cache, &calls, leader).await, Err(failure));
            assert_eq!(calls.load(Ordering::SeqCst), 1, "ttl {ttl:?}");
        }
    }

    #[tokio::test]
    async fn without_a_ttl_every_lookup_fetches() {
        let cache = cache(None);
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(
                cache
                    .get_or_fetch("k".to_owned(), &scope(), fetch(&calls, Ok(1)))
                    .await,
                Ok(1)
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_hit_does_not_fetch_and_failures_are_not_kept() {
        let cache = cache(Some(Duration::from_secs(60)));
        let calls = AtomicUsize::new(0);
        let failure = ProviderError::Interrupted {
            provider: ProviderName::C1fApp,
        };
        assert!(
            cache
                .get_or_fetch("k".to_owned(), &scope(), fetch(&calls, Err(failure)))
                .await
                .is_err()
        );
        assert_eq!(
            cache
                .get_or_fetch("k".to_owned(), &scope(), fetch(&calls, Ok(7)))
                .await,
            Ok(7)
        );
        assert_eq!(
            cache
                .get_or_fetch("k".to_owned(), &scope(), fetch(&calls, Ok(8)))
                .await,
            Ok(7)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let text = cache.metrics.render().unwrap();
        assert!(
            text.contains(r#"ctr_relay_cache_lookups_total{provider="C1fApp",result="hit"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ctr_relay_cache_lookups_total{provider="C1fApp",result="miss"} 2"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_cache_holds_no_more_bytes_and_no_more_entries_than_allowed() {
        let settings = |max_entries, max_bytes| ResultCacheSettings {
            ttl: Some(Duration::from_secs(60)),
            max_entries,
            max_bytes,
        };
        let metrics = Arc::new(Metrics::new().unwrap());
        // By bytes: 64 KiB of room, 100 answers of 4 KiB.
        let by_bytes: ResultCache<(Secret, String), Arc<Vec<u8>>> = ResultCache::new(
            &settings(1000, 64 * 1024),
            ProviderName::C1fApp,
            metrics.clone(),
        );
        // By entries: 10 entries, however small.
        let by_entries: ResultCache<(Secret, String), Arc<Vec<u8>>> =
            ResultCache::new(&settings(10, 1 << 30), ProviderName::C1fApp, metrics);
        for n in 0..100 {
            let key = (Secret::new("key"), format!("value-{n}"));
            let big = Arc::new(vec![b'x'; 4096]);
            let small = Arc::new(b"[]".to_vec());
            let _ = by_bytes
                .get_or_fetch(key.clone(), &scope(), async { Ok(big) })
                .await;
            let _ = by_entries
                .get_or_fetch(key, &scope(), async { Ok(small) })
                .await;
        }
        for (cache, bound) in [(&by_bytes, 64 * 1024), (&by_entries, 1 << 30)] {
            let cache = cache.cache.as_ref().unwrap();
            cache.run_pending_tasks().await;
            assert!(cache.weighted_size() <= bound, "{}", cache.weighted_size());
        }
        let bytes_entries = by_bytes.cache.as_ref().unwrap().entry_count();
        assert!((1..=16).contains(&bytes_entries), "{bytes_entries}");
        let counted = by_entries.cache.as_ref().unwrap().entry_count();
        assert!((1..=10).contains(&counted), "{counted}");
    }

    #[tokio::test]
    async fn evictions_keep_up_with_large_answers() {
        let cache: ResultCache<(Secret, String), Arc<Vec<u8>>> = ResultCache::new(
            &ResultCacheSettings {
                ttl: Some(Duration::from_secs(60)),
                max_entries: 10_000,
                max_bytes: 1024 * 1024,
            },
            ProviderName::CyberScan,
            Arc::new(Metrics::new().unwrap()),
        );
        // 40 answers of 256 KiB into a cache of 1 MiB, as fast as they come.
        let mut answers = Vec::new();
        for n in 0..40 {
            let answer = Arc::new(vec![b'x'; 256 * 1024]);
            answers.push(Arc::downgrade(&answer));
            let key = (Secret::new("key"), format!("value-{n}"));
            let _ = cache
                .get_or_fetch(key, &scope(), async { Ok(answer) })
                .await;
        }
        // Alive: what the cache holds (nothing else does).
        let alive = answers
            .iter()
            .filter(|answer| answer.strong_count() > 0)
            .count();
        assert!(
            alive * 256 * 1024 <= 1024 * 1024 + 1024 * 1024 / 8 + 256 * 1024,
            "{alive} answers of 256 KiB alive in a cache of 1 MiB"
        );
    }
}
