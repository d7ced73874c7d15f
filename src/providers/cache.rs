//! The optional short-lived cache of upstream answers.
//!
//! Keys always include the credential the answer was fetched with, so one
//! caller never sees another's results. Only successful answers are kept;
//! concurrent lookups of the same key share one upstream call. What is cached
//! is upstream data, not CTIM: every response is mapped afresh, with its own
//! transient ids.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use moka::future::Cache;

use super::ProviderError;
use crate::config::ResultCacheSettings;
use crate::domain::ProviderName;
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

impl<K, V> ResultCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(
        settings: &ResultCacheSettings,
        provider: ProviderName,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = settings.ttl.map(|ttl| {
            Cache::builder()
                .max_capacity(settings.max_entries)
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

    fn cache(ttl: Option<Duration>) -> ResultCache<String, u32> {
        ResultCache::new(
            &ResultCacheSettings {
                ttl,
                max_entries: 100,
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
}
