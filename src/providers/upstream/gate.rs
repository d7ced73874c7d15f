//! The gate every call to one provider passes: its places in flight, and the
//! memory of credentials the provider has rate limited.
//!
//! Places are taken per credential, then per machine (for hosts a caller
//! chose), then for the provider: a tenant whose host stalls holds at most its
//! machine's places, and a tenant with many calls at most its credential's, so
//! neither can take the provider's places from the others. Both keys are what
//! a caller cannot respell: the machine a host resolves to (not the URL as
//! written: another name, port, case, trailing dot or IPv4-mapped spelling is
//! the same machine), and the credential without the URL it is sent to.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use reqwest::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use url::{Host, Url};

use crate::config::UpstreamSettings;
use crate::providers::address::{Machine, is_public};

/// Rate-limited credentials remembered per provider, and per host.
const RATE_LIMITED_CAPACITY: usize = 10_000;
const RATE_LIMITED_PER_HOST: usize = 100;

/// Keys of idle per-key limits are swept when a map grows past this.
const SWEEP_ABOVE: usize = 1024;

/// How long a name's machine is remembered, and how many names are.
const RESOLVED_FOR: Duration = Duration::from_secs(30);
const RESOLVED_CAPACITY: u64 = 10_000;

/// What every call to one provider passes through.
#[derive(Debug)]
pub struct Gate {
    /// `UPSTREAM_MAX_IN_FLIGHT`.
    in_flight: Semaphore,
    /// `UPSTREAM_MAX_IN_FLIGHT_PER_HOST`, per machine, for providers whose
    /// host the caller chooses; and the machines their names resolved to.
    per_host: Option<(KeyedLimit<Machine>, Machines)>,
    /// `UPSTREAM_MAX_IN_FLIGHT_PER_CREDENTIAL`.
    per_credential: KeyedLimit<u64>,
    rate_limits: RateLimits,
    hasher: RandomState,
}

/// The places one call holds, given back when it is dropped.
#[derive(Debug)]
pub(super) struct Places<'a> {
    _provider: SemaphorePermit<'a>,
    _host: Option<KeyedPermit<'a, Machine>>,
    _credential: KeyedPermit<'a, u64>,
}

#[derive(Debug)]
pub(super) struct RateLimited {
    pub(super) until: Instant,
    /// The 429 answer (its body cut short), repeated until then.
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

/// Why a host's machine is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Unresolved {
    /// It resolves to no public address (and only public ones are allowed).
    NotPublic(String),
    /// It does not resolve, or the URL has no host.
    Failed,
}

impl Gate {
    /// `hosts_chosen_by_callers`: whether each machine gets places of its own
    /// (CyberScan, whose host is in the caller's token), or all calls go to
    /// the operator's one endpoint (C1fApp).
    pub fn new(settings: &UpstreamSettings, hosts_chosen_by_callers: bool) -> Self {
        Self {
            in_flight: Semaphore::new(settings.max_in_flight),
            per_host: hosts_chosen_by_callers.then(|| {
                (
                    KeyedLimit::new(settings.max_in_flight_per_host),
                    Machines::new(!settings.allow_private_hosts, !settings.cyberscan_use_proxy),
                )
            }),
            per_credential: KeyedLimit::new(settings.max_in_flight_per_credential),
            rate_limits: RateLimits::new(RATE_LIMITED_CAPACITY, RATE_LIMITED_PER_HOST),
            hasher: RandomState::new(),
        }
    }

    /// The machine behind `url`'s host, for a provider whose host the caller
    /// chooses; `None` for the operator's endpoint.
    pub(super) async fn machine(&self, url: &Url) -> Result<Option<Machine>, Unresolved> {
        match &self.per_host {
            // Boxed: a resolution's state is large, and lookups without
            // places per host (C1fApp) would all carry its room.
            Some((_, machines)) => Box::pin(machines.of(url)).await.map(Some),
            None => Ok(None),
        }
    }

    /// Waits for the places a call to `machine` with `credential` needs: the
    /// credential's, the machine's, the provider's. `None` only if a
    /// semaphore were closed (none ever is).
    pub(super) async fn places(
        &self,
        machine: Option<Machine>,
        credential: u64,
    ) -> Option<Places<'_>> {
        let credential = self.per_credential.acquire(credential).await?;
        let host = match (&self.per_host, machine) {
            (Some((limit, _)), Some(machine)) => Some(limit.acquire(machine).await?),
            _ => None,
        };
        let provider = self.in_flight.acquire().await.ok()?;
        Some(Places {
            _provider: provider,
            _host: host,
            _credential: credential,
        })
    }

    /// The 429 a credential is waiting out at `machine`, if any.
    pub(super) fn rate_limited(
        &self,
        machine: Option<Machine>,
        credential: u64,
    ) -> Option<Arc<RateLimited>> {
        self.rate_limits.get(machine, credential)
    }

    /// Remembers a 429 of `machine` for `credential`.
    pub(super) fn remember(&self, machine: Option<Machine>, credential: u64, limited: RateLimited) {
        self.rate_limits.insert(machine, credential, limited);
    }

    /// The key under which a credential is known: a keyed hash, so the gate
    /// never holds the credential itself.
    pub fn credential(&self, credential: impl Hash) -> u64 {
        self.hasher.hash_one(credential)
    }
}

/// The machines names resolved to, remembered a short while, so a name costs
/// one resolution per [`RESOLVED_FOR`] however many calls name it.
#[derive(Debug)]
struct Machines {
    public_only: bool,
    /// Whether names are resolved here; not when a proxy resolves them.
    resolve: bool,
    resolved: Cache<String, Machine>,
    hasher: RandomState,
}

impl Machines {
    fn new(public_only: bool, resolve: bool) -> Self {
        Self {
            public_only,
            resolve,
            hasher: RandomState::new(),
            resolved: Cache::builder()
                .max_capacity(RESOLVED_CAPACITY)
                .time_to_live(RESOLVED_FOR)
                .build(),
        }
    }

    /// An IP literal's machine, or the lowest machine a name resolves to
    /// (only public ones, unless private hosts are allowed), so a name that
    /// resolves to several addresses of one machine is that machine.
    async fn of(&self, url: &Url) -> Result<Machine, Unresolved> {
        let name = match url.host() {
            Some(Host::Ipv4(ip)) => return Ok(Machine::of(ip.into())),
            Some(Host::Ipv6(ip)) => return Ok(Machine::of(ip.into())),
            Some(Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
            None => return Err(Unresolved::Failed),
        };
        if !self.resolve {
            return Ok(Machine::Named(self.hasher.hash_one(&name)));
        }
        if let Some(machine) = self.resolved.get(&name).await {
            return Ok(machine);
        }
        let addresses = tokio::net::lookup_host((name.as_str(), 0))
            .await
            .map_err(|_| Unresolved::Failed)?;
        let mut any = false;
        let machine = addresses
            .map(|address| address.ip())
            .inspect(|_| any = true)
            .filter(|ip| !self.public_only || is_public(*ip))
            .map(Machine::of)
            .min();
        let machine = match machine {
            Some(machine) => machine,
            None if any => return Err(Unresolved::NotPublic(name)),
            None => return Err(Unresolved::Failed),
        };
        self.resolved.insert(name, machine).await;
        Ok(machine)
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

/// Where a 429 came from: the machine of a host a caller chose, or the
/// operator's endpoint (`None`).
type Origin = Option<Machine>;

/// Credentials a provider has rate limited, per origin. Bounded per origin,
/// so a host a caller controls (which can answer 429 at will) fills at most
/// its own share and evicts only its own entries while any origin holds more.
#[derive(Debug)]
struct RateLimits {
    entries: RwLock<Waits>,
    /// When the last remembered wait ends, in nanoseconds since `epoch`:
    /// past it, nobody is limited and calls skip the lock.
    latest_until: AtomicU64,
    epoch: Instant,
    capacity: usize,
    per_host: usize,
}

#[derive(Debug, Default)]
struct Waits {
    by_origin: HashMap<Origin, HashMap<u64, Arc<RateLimited>>>,
    /// Entries of all origins together.
    total: usize,
}

impl Waits {
    /// Drops the ended waits of one origin.
    fn sweep(&mut self, origin: Origin, now: Instant) {
        if let Some(waits) = self.by_origin.get_mut(&origin) {
            let before = waits.len();
            waits.retain(|_, entry| entry.until > now);
            self.total -= before - waits.len();
            if waits.is_empty() {
                self.by_origin.remove(&origin);
            }
        }
    }

    /// Drops the wait of `origin` that ends first.
    fn evict_soonest(&mut self, origin: Origin) {
        let Some(waits) = self.by_origin.get_mut(&origin) else {
            return;
        };
        let soonest = waits
            .iter()
            .min_by_key(|(_, entry)| entry.until)
            .map(|(key, _)| *key);
        if let Some(key) = soonest {
            waits.remove(&key);
            self.total -= 1;
        }
        if waits.is_empty() {
            self.by_origin.remove(&origin);
        }
    }
}

impl RateLimits {
    fn new(capacity: usize, per_host: usize) -> Self {
        Self {
            entries: RwLock::new(Waits::default()),
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

    fn get(&self, origin: Origin, credential: u64) -> Option<Arc<RateLimited>> {
        if !self.anyone_limited() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .by_origin
            .get(&origin)?
            .get(&credential)
            .filter(|limited| limited.until > Instant::now())
            .cloned()
    }

    /// Remembers a 429. The origin's ended waits are dropped first, and
    /// every origin's only when all together are at capacity, so a 429 costs
    /// a scan of its own origin, not of everyone's. An origin at its share
    /// makes room among its own entries; when all origins together are at
    /// capacity, the origin holding the most makes room. Either way the wait
    /// that ends first goes.
    fn insert(&self, origin: Origin, credential: u64, limited: RateLimited) {
        let until = self.nanos(limited.until);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        entries.sweep(origin, now);
        let known = entries
            .by_origin
            .get(&origin)
            .is_some_and(|waits| waits.contains_key(&credential));
        if !known {
            if entries
                .by_origin
                .get(&origin)
                .is_some_and(|waits| waits.len() >= self.per_host)
            {
                entries.evict_soonest(origin);
            }
            if entries.total >= self.capacity {
                let origins: Vec<Origin> = entries.by_origin.keys().copied().collect();
                for other in origins {
                    entries.sweep(other, now);
                }
            }
            if entries.total >= self.capacity {
                let fullest = entries
                    .by_origin
                    .iter()
                    .max_by_key(|(_, waits)| waits.len())
                    .map(|(origin, _)| *origin);
                if let Some(fullest) = fullest {
                    entries.evict_soonest(fullest);
                }
            }
        }
        let replaced = entries
            .by_origin
            .entry(origin)
            .or_default()
            .insert(credential, Arc::new(limited));
        if replaced.is_none() {
            entries.total += 1;
        }
        self.latest_until.fetch_max(until, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.by_origin.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::time::Duration;

    fn m(n: u8) -> Origin {
        Some(Machine::V4(std::net::Ipv4Addr::new(192, 0, 2, n)))
    }

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
        assert!(limits.get(m(1), 1).is_none());
        limits.insert(m(1), 1, limited_for(MINUTE));
        assert_eq!(limits.get(m(1), 1).unwrap().body, b"slow down");
        assert!(limits.get(m(1), 2).is_none(), "per credential");
        assert!(limits.get(m(2), 1).is_none(), "per host");
        limits.insert(m(1), 2, limited_for(Duration::ZERO));
        assert!(limits.get(m(1), 2).is_none(), "a wait that has ended");
    }

    #[test]
    fn a_host_answering_429_at_will_cannot_evict_another_hosts_entries() {
        let limits = RateLimits::new(6, 3);
        limits.insert(m(42), 42, limited_for(MINUTE));
        // Tenant A's host limits credential after credential, on host after host.
        for host in [m(11), m(12), m(13)] {
            for credential in 0..50 {
                limits.insert(host, credential, limited_for(MINUTE * 2));
            }
        }
        assert!(limits.len() <= 6);
        assert!(
            limits.get(m(42), 42).is_some(),
            "tenant B's wait is still remembered"
        );
    }

    #[test]
    fn a_429_sweeps_only_its_own_origins_waits_until_the_memory_is_full() {
        let limits = RateLimits::new(100, 10);
        limits.insert(m(1), 1, limited_for(Duration::ZERO));
        limits.insert(m(2), 1, limited_for(MINUTE));
        assert_eq!(limits.len(), 2, "another origin's ended wait is left alone");
        limits.insert(m(1), 2, limited_for(MINUTE));
        assert_eq!(limits.len(), 2, "its own ended wait is swept");
        let full = RateLimits::new(2, 10);
        full.insert(m(1), 1, limited_for(Duration::ZERO));
        full.insert(m(2), 1, limited_for(MINUTE));
        full.insert(m(3), 1, limited_for(MINUTE));
        assert!(
            full.get(m(2), 1).is_some(),
            "at capacity, ended waits go first"
        );
        assert!(full.get(m(3), 1).is_some());
    }

    #[test]
    fn a_host_at_its_share_makes_room_among_its_own_entries() {
        let limits = RateLimits::new(100, 2);
        limits.insert(m(1), 1, limited_for(MINUTE));
        limits.insert(m(1), 2, limited_for(MINUTE * 3));
        limits.insert(m(1), 3, limited_for(MINUTE * 2));
        assert!(limits.get(m(1), 1).is_none(), "the soonest went");
        assert!(limits.get(m(1), 2).is_some());
        assert!(limits.get(m(1), 3).is_some());
    }

    #[test]
    fn once_every_wait_has_ended_calls_skip_the_memory() {
        let limits = RateLimits::new(100, 10);
        assert!(!limits.anyone_limited());
        limits.insert(m(1), 1, limited_for(Duration::from_millis(30)));
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
        let stalled_1 = gate.places(m(5), 1).await.unwrap();
        let stalled_2 = gate.places(m(5), 2).await.unwrap();
        let more = gate.places(m(5), 3);
        tokio::pin!(more);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut more)
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(20), gate.places(m(6), 4))
                .await
                .is_ok(),
            "another host still gets a place"
        );
        drop((stalled_1, stalled_2));
    }
}
