//! The optional short-lived cache of upstream answers.
//!
//! Keys always include the credential the answer was fetched with, so one
//! caller never sees another's results. Only successful answers are kept;
//! concurrent lookups of the same key share one upstream call. What is cached
//! is upstream data, not CTIM: every response is mapped afresh, with its own
//! transient ids. The cache is bounded by bytes (`RESULT_CACHE_MAX_BYTES`) and
//! by entries (`RESULT_CACHE_MAX_ENTRIES`): each entry weighs its bytes, and
//! at least the bytes budget divided by the entries budget.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use moka::future::Cache;

use url::Url;

use super::ProviderError;
use crate::config::ResultCacheSettings;
use crate::domain::{ProviderName, Secret};
use crate::metrics::Metrics;

pub struct ResultCache<K, V> {
    cache: Option<Cache<K, V>>,
    provider: ProviderName,
    metrics: Arc<Metrics>,
}

impl<K, V> Clone for ResultCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            provider: self.provider,
            metrics: self.metrics.clone(),
        }
    }
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
    K: Hash + Eq + Send + Sync + Weight + 'static,
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
            provider,
            metrics,
        }
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The cached answer for `key`, or the result of `fetch` (kept when it
    /// succeeded). Without a cache, just `fetch`.
    pub async fn get_or_fetch(
        &self,
        key: K,
        fetch: impl Future<Output = Result<V, ProviderError>>,
    ) -> Result<V, ProviderError> {
        let Some(cache) = &self.cache else {
            return fetch.await;
        };
        if let Some(value) = cache.get(&key).await {
            self.metrics.cache_lookup(self.provider.as_str(), true);
            return Ok(value);
        }
        self.metrics.cache_lookup(self.provider.as_str(), false);
        // Boxed: the cache's future is large, and without a cache it is not needed.
        Box::pin(cache.try_get_with(key, fetch))
            .await
            .map_err(|error| (*error).clone())
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

    #[tokio::test]
    async fn without_a_ttl_every_lookup_fetches() {
        let cache = cache(None);
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(
                cache
                    .get_or_fetch("k".to_owned(), fetch(&calls, Ok(1)))
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
                .get_or_fetch("k".to_owned(), fetch(&calls, Err(failure)))
                .await
                .is_err()
        );
        assert_eq!(
            cache
                .get_or_fetch("k".to_owned(), fetch(&calls, Ok(7)))
                .await,
            Ok(7)
        );
        assert_eq!(
            cache
                .get_or_fetch("k".to_owned(), fetch(&calls, Ok(8)))
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
            let _ = by_bytes.get_or_fetch(key.clone(), async { Ok(big) }).await;
            let _ = by_entries.get_or_fetch(key, async { Ok(small) }).await;
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
}
