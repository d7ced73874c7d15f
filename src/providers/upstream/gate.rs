//! The gate every call to one provider passes: the bound on calls in flight,
//! and the memory of credentials the provider has rate limited.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use reqwest::StatusCode;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::UpstreamSettings;

/// Credentials remembered as rate limited, per provider.
const RATE_LIMITED_CAPACITY: usize = 10_000;

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
pub(super) struct RateLimited {
    pub(super) until: Instant,
    /// The 429 answer (its body cut short), repeated until then.
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
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

    /// A place among the calls in flight, held until the permit is dropped;
    /// `None` only if the gate is closed (it never is).
    pub(super) async fn place(&self) -> Option<SemaphorePermit<'_>> {
        self.in_flight.acquire().await.ok()
    }

    /// The 429 a credential is waiting out, if any.
    pub(super) fn rate_limited(&self, credential: u64) -> Option<Arc<RateLimited>> {
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
    pub(super) fn remember(&self, credential: u64, limited: RateLimited) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
