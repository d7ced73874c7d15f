//! The gate every call to one provider passes: its places in flight, and the
//! memory of credentials the provider has rate limited.
//!
//! Places are taken per credential, then per host (for hosts a caller chose),
//! then for the provider: a tenant whose host stalls holds at most its host's
//! places, and a tenant with many calls at most its credential's, so neither
//! can take the provider's places from the others.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use reqwest::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use crate::config::UpstreamSettings;

/// Rate-limited credentials remembered per provider, and per host.
const RATE_LIMITED_CAPACITY: usize = 10_000;
const RATE_LIMITED_PER_HOST: usize = 100;

/// Keys of idle per-key limits are swept when a map grows past this.
const SWEEP_ABOVE: usize = 1024;

/// What every call to one provider passes through.
#[derive(Debug)]
pub struct Gate {
    /// `UPSTREAM_MAX_IN_FLIGHT`.
    in_flight: Semaphore,
    /// `UPSTREAM_MAX_IN_FLIGHT_PER_HOST`, for providers whose host the
    /// caller chooses.
    per_host: Option<KeyedLimit<String>>,
    /// `UPSTREAM_MAX_IN_FLIGHT_PER_CREDENTIAL`.
    per_credential: KeyedLimit<u64>,
    rate_limits: RateLimits,
    hasher: RandomState,
}

/// The places one call holds, given back when it is dropped.
#[derive(Debug)]
pub(super) struct Places<'a> {
    _provider: SemaphorePermit<'a>,
    _host: Option<KeyedPermit<'a, String>>,
    _credential: KeyedPermit<'a, u64>,
}

#[derive(Debug)]
pub(super) struct RateLimited {
    pub(super) until: Instant,
    /// The 429 answer (its body cut short), repeated until then.
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

impl Gate {
    /// `hosts_chosen_by_callers`: whether each host gets places of its own
    /// (CyberScan, whose host is in the caller's token), or all calls go to
    /// the operator's one endpoint (C1fApp).
    pub fn new(settings: &UpstreamSettings, hosts_chosen_by_callers: bool) -> Self {
        Self {
            in_flight: Semaphore::new(settings.max_in_flight),
            per_host: hosts_chosen_by_callers
                .then(|| KeyedLimit::new(settings.max_in_flight_per_host)),
            per_credential: KeyedLimit::new(settings.max_in_flight_per_credential),
            rate_limits: RateLimits::new(RATE_LIMITED_CAPACITY, RATE_LIMITED_PER_HOST),
            hasher: RandomState::new(),
        }
    }

    /// Waits for the places a call to `host` with `credential` needs: the
    /// credential's, the host's, the provider's. `None` only if a semaphore
    /// were closed (none ever is).
    pub(super) async fn places(&self, host: &str, credential: u64) -> Option<Places<'_>> {
        let credential = self.per_credential.acquire(credential).await?;
        let host = match &self.per_host {
            Some(limit) => Some(limit.acquire(host.to_owned()).await?),
            None => None,
        };
        let provider = self.in_flight.acquire().await.ok()?;
        Some(Places {
            _provider: provider,
            _host: host,
            _credential: credential,
        })
    }

    /// The 429 a credential is waiting out at `host`, if any.
    pub(super) fn rate_limited(&self, host: &str, credential: u64) -> Option<Arc<RateLimited>> {
        self.rate_limits.get(host, credential)
    }

    /// Remembers a 429 of `host` for `credential`.
    pub(super) fn remember(&self, host: &str, credential: u64, limited: RateLimited) {
        self.rate_limits.insert(host, credential, limited);
    }

    /// The key under which a credential is known: a keyed hash, so the gate
    /// never holds the credential itself.
    pub fn credential(&self, credential: impl Hash) -> u64 {
        self.hasher.hash_one(credential)
    }
}

/// A limit of places per key, for keys seen in calls in flight: a key's
/// semaphore exists while a call holds or waits for one of its places.
#[derive(Debug)]
struct KeyedLimit<K> {
    limit: usize,
    semaphores: Mutex<HashMap<K, Arc<Semaphore>>>,
}

/// One place of one key.
#[derive(Debug)]
struct KeyedPermit<'a, K: Hash + Eq> {
    owner: &'a KeyedLimit<K>,
    key: K,
    permit: Option<OwnedSemaphorePermit>,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    async fn acquire(&self, key: K) -> Option<KeyedPermit<'_, K>> {
        let semaphore = {
            let mut semaphores = self
                .semaphores
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if semaphores.len() > SWEEP_ABOVE {
                // Keys whose waiters gave up can be left behind; drop the idle.
                semaphores.retain(|_, semaphore| !self.idle(semaphore));
            }
            semaphores
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
                .clone()
        };
        let permit = semaphore.acquire_owned().await.ok()?;
        Some(KeyedPermit {
            owner: self,
            key,
            permit: Some(permit),
        })
    }

    /// No place taken and no one else holding the semaphore but the map.
    fn idle(&self, semaphore: &Arc<Semaphore>) -> bool {
        Arc::strong_count(semaphore) == 1 && semaphore.available_permits() == self.limit
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.semaphores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<K: Hash + Eq> Drop for KeyedPermit<'_, K> {
    fn drop(&mut self) {
        // Give the place back, then forget the key if nobody else uses it.
        drop(self.permit.take());
        let mut semaphores = self
            .owner
            .semaphores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let idle = semaphores.get(&self.key).is_some_and(|semaphore| {
            Arc::strong_count(semaphore) == 1 && semaphore.available_permits() == self.owner.limit
        });
        if idle {
            semaphores.remove(&self.key);
        }
    }
}

/// Credentials a provider has rate limited, per host. Bounded per host, so
/// a host a caller controls (which can answer 429 at will) fills at most its
/// own share and evicts only its own entries while any host holds more.
#[derive(Debug)]
struct RateLimits {
    entries: RwLock<HashMap<String, HashMap<u64, Arc<RateLimited>>>>,
    /// When the last remembered wait ends, in nanoseconds since `epoch`:
    /// past it, nobody is limited and calls skip the lock.
    latest_until: AtomicU64,
    epoch: Instant,
    capacity: usize,
    per_host: usize,
}

impl RateLimits {
    fn new(capacity: usize, per_host: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            latest_until: AtomicU64::new(0),
            epoch: Instant::now(),
            capacity,
            per_host,
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether any remembered wait has not ended yet (the fast path).
    fn anyone_limited(&self) -> bool {
        self.nanos(Instant::now()) < self.latest_until.load(Ordering::Relaxed)
    }

    fn get(&self, host: &str, credential: u64) -> Option<Arc<RateLimited>> {
        if !self.anyone_limited() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(host)?
            .get(&credential)
            .filter(|limited| limited.until > Instant::now())
            .cloned()
    }

    /// Remembers a 429. Ended waits are dropped first. A host at its share
    /// makes room among its own entries; when all hosts together are at
    /// capacity, the host holding the most makes room. Either way the wait
    /// that ends first goes.
    fn insert(&self, host: &str, credential: u64, limited: RateLimited) {
        let until = self.nanos(limited.until);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        entries.retain(|_, waits| {
            waits.retain(|_, entry| entry.until > now);
            !waits.is_empty()
        });
        let known = entries
            .get(host)
            .is_some_and(|waits| waits.contains_key(&credential));
        if !known {
            if entries
                .get(host)
                .is_some_and(|waits| waits.len() >= self.per_host)
            {
                evict_soonest(&mut entries, host);
            }
            let total: usize = entries.values().map(HashMap::len).sum();
            if total >= self.capacity {
                let fullest = entries
                    .iter()
                    .max_by_key(|(_, waits)| waits.len())
                    .map(|(host, _)| host.clone());
                if let Some(fullest) = fullest {
                    evict_soonest(&mut entries, &fullest);
                }
            }
        }
        entries
            .entry(host.to_owned())
            .or_default()
            .insert(credential, Arc::new(limited));
        self.latest_until.fetch_max(until, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.values().map(HashMap::len).sum()
    }
}

fn evict_soonest(entries: &mut HashMap<String, HashMap<u64, Arc<RateLimited>>>, host: &str) {
    let Some(waits) = entries.get_mut(host) else {
        return;
    };
    let soonest = waits
        .iter()
        .min_by_key(|(_, entry)| entry.until)
        .map(|(key, _)| *key);
    if let Some(key) = soonest {
        waits.remove(&key);
    }
    if waits.is_empty() {
        entries.remove(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::time::Duration;

    fn limited_for(wait: Duration) -> RateLimited {
        RateLimited {
            until: Instant::now() + wait,
            status: StatusCode::TOO_MANY_REQUESTS,
            body: b"slow down".to_vec(),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn rate_limits_are_remembered_per_host_and_credential_until_they_end() {
        let limits = RateLimits::new(100, 10);
        assert!(limits.get("a.example", 1).is_none());
        limits.insert("a.example", 1, limited_for(MINUTE));
        assert_eq!(limits.get("a.example", 1).unwrap().body, b"slow down");
        assert!(limits.get("a.example", 2).is_none(), "per credential");
        assert!(limits.get("b.example", 1).is_none(), "per host");
        limits.insert("a.example", 2, limited_for(Duration::ZERO));
        assert!(
            limits.get("a.example", 2).is_none(),
            "a wait that has ended"
        );
    }

    #[test]
    fn a_host_answering_429_at_will_cannot_evict_another_hosts_entries() {
        let limits = RateLimits::new(6, 3);
        limits.insert("tenant-b.example", 42, limited_for(MINUTE));
        // Tenant A's host limits credential after credential, on host after host.
        for host in ["a1.example", "a2.example", "a3.example"] {
            for credential in 0..50 {
                limits.insert(host, credential, limited_for(MINUTE * 2));
            }
        }
        assert!(limits.len() <= 6);
        assert!(
            limits.get("tenant-b.example", 42).is_some(),
            "tenant B's wait is still remembered"
        );
    }

    #[test]
    fn a_host_at_its_share_makes_room_among_its_own_entries() {
        let limits = RateLimits::new(100, 2);
        limits.insert("a.example", 1, limited_for(MINUTE));
        limits.insert("a.example", 2, limited_for(MINUTE * 3));
        limits.insert("a.example", 3, limited_for(MINUTE * 2));
        assert!(limits.get("a.example", 1).is_none(), "the soonest went");
        assert!(limits.get("a.example", 2).is_some());
        assert!(limits.get("a.example", 3).is_some());
    }

    #[test]
    fn once_every_wait_has_ended_calls_skip_the_memory() {
        let limits = RateLimits::new(100, 10);
        assert!(!limits.anyone_limited());
        limits.insert("a.example", 1, limited_for(Duration::from_millis(30)));
        assert!(limits.anyone_limited());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!limits.anyone_limited(), "the fast path is back");
    }

    #[tokio::test]
    async fn keyed_places_are_bounded_per_key_and_forgotten_when_free() {
        let limit = KeyedLimit::<String>::new(2);
        let first = limit.acquire("a".to_owned()).await.unwrap();
        let second = limit.acquire("a".to_owned()).await.unwrap();
        let third = limit.acquire("a".to_owned());
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut third)
                .await
                .is_err(),
            "a third place of the same key waits"
        );
        let other = limit.acquire("b".to_owned()).await.unwrap();
        drop(first);
        let third = third.await.unwrap();
        drop((second, third, other));
        assert_eq!(limit.keys(), 0, "idle keys are forgotten");
    }

    #[tokio::test]
    async fn a_stalled_host_holds_only_its_own_places() {
        let mut settings = Settings::default().upstream;
        settings.max_in_flight = 4;
        settings.max_in_flight_per_host = 2;
        settings.max_in_flight_per_credential = 4;
        let gate = Gate::new(&settings, true);
        let stalled_1 = gate.places("stalled.example", 1).await.unwrap();
        let stalled_2 = gate.places("stalled.example", 2).await.unwrap();
        let more = gate.places("stalled.example", 3);
        tokio::pin!(more);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut more)
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(20), gate.places("fast.example", 4))
                .await
                .is_ok(),
            "another host still gets a place"
        );
        drop((stalled_1, stalled_2));
    }
}
