//! What one caller's request allows its upstream calls: one deadline, and a
//! memory budget — upstream bytes read and answer bytes kept — drawn from the
//! process-wide [`MemoryPool`], so memory stays bounded per request, per
//! tenant and per process whatever the callers and the upstreams send.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use super::address::Machine;
use crate::config::RequestLimits;

/// Who a charge belongs to, by what the caller cannot respell: the
/// credential (a keyed hash, never the credential itself, and never with
/// the URL it was sent to), and the machine a host it chose resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Account {
    Credential(u64),
    Machine(Machine),
}

/// The accounts an upstream call's bytes are charged to: its credential's,
/// and, for a host the caller chose, that machine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant {
    pub credential: u64,
    pub machine: Option<Machine>,
}

impl Tenant {
    fn accounts(self) -> impl Iterator<Item = Account> {
        std::iter::once(Account::Credential(self.credential))
            .chain(self.machine.map(Account::Machine))
    }
}

/// What all requests in flight hold together (`MAX_HELD_BYTES`), and what
/// each tenant account holds of it (at most `MAX_HELD_BYTES_PER_TENANT`), so
/// one tenant never takes the room the others need. Shared by every runtime;
/// a request's bytes return to it when the request ends.
#[derive(Debug)]
pub struct MemoryPool {
    limit: usize,
    share: usize,
    used: AtomicUsize,
    /// Bytes held per account; an account holding nothing is removed.
    accounts: Mutex<HashMap<Account, usize>>,
    /// `ctr_relay_held_bytes`, when metrics are kept.
    gauge: Option<IntGauge>,
}

impl MemoryPool {
    /// A pool of `limit` bytes of which one tenant account may hold `share`.
    pub fn new(limit: usize, share: usize) -> Self {
        Self {
            limit,
            share: share.min(limit),
            used: AtomicUsize::new(0),
            accounts: Mutex::new(HashMap::new()),
            gauge: None,
        }
    }

    /// The pool of `limits` (`MAX_HELD_BYTES`, `MAX_HELD_BYTES_PER_TENANT`),
    /// exporting what it holds to `gauge`.
    pub fn with_gauge(limits: &RequestLimits, gauge: IntGauge) -> Self {
        Self {
            gauge: Some(gauge),
            ..Self::new(limits.max_held_bytes, limits.max_held_bytes_per_tenant)
        }
    }

    /// Bytes held now, by all requests.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes held now by one account.
    pub fn held_by(&self, account: Account) -> usize {
        self.lock().get(&account).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Account, usize>> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `bytes` for `tenant` (or for no tenant in particular), unless
    /// that would pass the pool's limit or any of the tenant's shares.
    fn take(&self, bytes: usize, tenant: Option<Tenant>) -> Result<(), Limit> {
        // A share as large as the pool is no limit of its own.
        let Some(tenant) = tenant.filter(|_| self.share < self.limit) else {
            return self.take_shared(bytes);
        };
        let mut accounts = self.lock();
        for account in tenant.accounts() {
            let held = accounts.get(&account).copied().unwrap_or(0);
            if held.saturating_add(bytes) > self.share {
                return Err(Limit::TenantBytes(self.share));
            }
        }
        self.take_shared(bytes)?;
        for account in tenant.accounts() {
            *accounts.entry(account).or_insert(0) += bytes;
        }
        Ok(())
    }

    fn take_shared(&self, bytes: usize) -> Result<(), Limit> {
        if !take(&self.used, self.limit, bytes) {
            return Err(Limit::HeldBytes(self.limit));
        }
        if let Some(gauge) = &self.gauge {
            gauge.add(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    fn give_back(&self, bytes: usize, tenants: &[(Tenant, usize)]) {
        if !tenants.is_empty() {
            let mut accounts = self.lock();
            for (tenant, held) in tenants {
                for account in tenant.accounts() {
                    if let Some(now) = accounts.get_mut(&account) {
                        *now = now.saturating_sub(*held);
                        if *now == 0 {
                            accounts.remove(&account);
                        }
                    }
                }
            }
        }
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(gauge) = &self.gauge {
            gauge.sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

/// Adds `bytes` to `used` unless that would pass `limit`.
fn take(used: &AtomicUsize, limit: usize, bytes: usize) -> bool {
    used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        now.checked_add(bytes).filter(|after| *after <= limit)
    })
    .is_ok()
}

/// The limit a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `REQUEST_MAX_UPSTREAM_BYTES`.
    UpstreamBytes(usize),
    /// `REQUEST_MAX_RESPONSE_BYTES`.
    ResponseBytes(usize),
    /// `MAX_HELD_BYTES`, for all requests in flight together.
    HeldBytes(usize),
    /// `MAX_HELD_BYTES_PER_TENANT`, for one tenant's requests in flight.
    TenantBytes(usize),
}

/// One request's memory budget. What it took from the pool is given back
/// when it is dropped (when the request, and every lookup of it, is done).
#[derive(Debug)]
pub struct Budget {
    pool: Arc<MemoryPool>,
    upstream_limit: usize,
    upstream_used: AtomicUsize,
    response_limit: usize,
    response_used: AtomicUsize,
    /// What each tenant this request charged holds of it.
    tenants: Mutex<Vec<(Tenant, usize)>>,
}

impl Budget {
    pub fn new(limits: &RequestLimits, pool: Arc<MemoryPool>) -> Self {
        Self {
            pool,
            upstream_limit: limits.max_upstream_bytes,
            upstream_used: AtomicUsize::new(0),
            response_limit: limits.max_response_bytes,
            response_used: AtomicUsize::new(0),
            tenants: Mutex::new(Vec::new()),
        }
    }

    /// Counts `bytes` of an upstream answer, as they arrive, as read by this
    /// request for `tenant`.
    pub fn read(&self, bytes: usize, tenant: Tenant) -> Result<(), Limit> {
        self.charge(
            &self.upstream_used,
            self.upstream_limit,
            bytes,
            Some(tenant),
            Limit::UpstreamBytes,
        )
    }

    /// Counts `bytes` of the answer (entities, estimated as JSON) as kept,
    /// for `tenant` when the caller's credential is known.
    pub fn keep(&self, bytes: usize, tenant: Option<Tenant>) -> Result<(), Limit> {
        self.charge(
            &self.response_used,
            self.response_limit,
            bytes,
            tenant,
            Limit::ResponseBytes,
        )
    }

    fn charge(
        &self,
        used: &AtomicUsize,
        limit: usize,
        bytes: usize,
        tenant: Option<Tenant>,
        reached: fn(usize) -> Limit,
    ) -> Result<(), Limit> {
        if !take(used, limit, bytes) {
            return Err(reached(limit));
        }
        if let Err(limit) = self.pool.take(bytes, tenant) {
            used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(limit);
        }
        if let Some(tenant) = tenant {
            let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            match tenants.iter_mut().find(|(known, _)| *known == tenant) {
                Some((_, held)) => *held += bytes,
                None => tenants.push((tenant, bytes)),
            }
        }
        Ok(())
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        let held = *self.upstream_used.get_mut() + *self.response_used.get_mut();
        let tenants = self
            .tenants
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        self.pool.give_back(held, tenants);
    }
}

/// Lets a mapping know, entity by entity, whether the answer has room for
/// what it is about to add (see [`Budget::keep`]). Mapping stays pure: tests
/// pass [`Unbounded`].
pub trait Allowance {
    /// Whether `bytes` more may be kept; once `false`, the mapping stops.
    fn allow(&self, bytes: usize) -> bool;
}

/// A mapping stopped because its allowance ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

/// No limit (unit tests, fuzzing).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unbounded;

impl Allowance for Unbounded {
    fn allow(&self, _bytes: usize) -> bool {
        true
    }
}

/// An allowance from a budget that remembers which limit stopped it.
#[derive(Debug)]
pub struct Metered<'a> {
    budget: &'a Budget,
    tenant: Option<Tenant>,
    reached: std::sync::Mutex<Option<Limit>>,
}

impl<'a> Metered<'a> {
    /// Charges `budget`, and `tenant`'s share when it is known.
    pub fn new(budget: &'a Budget, tenant: Option<Tenant>) -> Self {
        Self {
            budget,
            tenant,
            reached: std::sync::Mutex::new(None),
        }
    }

    /// The limit the mapping ran into, if it did.
    pub fn reached(&self) -> Option<Limit> {
        *self
            .reached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Allowance for Metered<'_> {
    fn allow(&self, bytes: usize) -> bool {
        match self.budget.keep(bytes, self.tenant) {
            Ok(()) => true,
            Err(limit) => {
                *self
                    .reached
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(limit);
                false
            }
        }
    }
}

/// One request's deadline and budget, passed to every upstream call it makes.
#[derive(Debug, Clone)]
pub struct Scope {
    deadline: Instant,
    /// The request's whole time, for messages.
    allowed: Duration,
    budget: Arc<Budget>,
}

impl Scope {
    /// A scope starting now.
    pub fn new(limits: &RequestLimits, pool: Arc<MemoryPool>) -> Self {
        Self {
            deadline: Instant::now() + limits.request_timeout,
            allowed: limits.request_timeout,
            budget: Arc::new(Budget::new(limits, pool)),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The request's time limit (`REQUEST_TIMEOUT_SECONDS`).
    pub fn allowed(&self) -> Duration {
        self.allowed
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn limits(upstream: usize, response: usize) -> RequestLimits {
        RequestLimits {
            max_upstream_bytes: upstream,
            max_response_bytes: response,
            ..Settings::default().limits
        }
    }

    fn tenant(credential: u64) -> Tenant {
        Tenant {
            credential,
            machine: None,
        }
    }

    const A: Tenant = Tenant {
        credential: 1,
        machine: None,
    };

    #[test]
    fn a_request_may_read_and_keep_up_to_its_limits() {
        let pool = Arc::new(MemoryPool::new(1000, 1000));
        let budget = Budget::new(&limits(100, 50), pool.clone());
        assert_eq!(budget.read(60, A), Ok(()));
        assert_eq!(budget.read(40, A), Ok(()));
        assert_eq!(budget.read(1, A), Err(Limit::UpstreamBytes(100)));
        assert_eq!(budget.keep(50, None), Ok(()));
        assert_eq!(budget.keep(1, None), Err(Limit::ResponseBytes(50)));
        assert_eq!(pool.used(), 150);
        drop(budget);
        assert_eq!(pool.used(), 0, "given back when the request ends");
    }

    #[test]
    fn requests_together_may_hold_no_more_than_the_pool() {
        let pool = Arc::new(MemoryPool::new(100, 100));
        let first = Budget::new(&limits(80, 80), pool.clone());
        let second = Budget::new(&limits(80, 80), pool.clone());
        assert_eq!(first.read(70, tenant(1)), Ok(()));
        assert_eq!(second.read(40, tenant(2)), Err(Limit::HeldBytes(100)));
        assert_eq!(
            second.read(30, tenant(2)),
            Ok(()),
            "a refused charge takes nothing"
        );
        drop(first);
        assert_eq!(second.keep(70, None), Ok(()));
        assert_eq!(pool.used(), 100);
    }

    #[test]
    fn one_tenant_holds_at_most_its_share_whatever_its_requests() {
        let pool = Arc::new(MemoryPool::new(100, 30));
        let machine = Machine::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        // Tenant A: many requests, many credentials, one machine.
        let requests: Vec<Budget> = (0..10)
            .map(|_| Budget::new(&limits(80, 80), pool.clone()))
            .collect();
        let mut taken = 0;
        for (n, budget) in requests.iter().enumerate() {
            let at_machine = Tenant {
                credential: n as u64,
                machine: Some(machine),
            };
            if budget.read(10, at_machine).is_ok() {
                taken += 10;
            }
        }
        assert_eq!(taken, 30, "the machine's share");
        assert_eq!(
            requests[0].read(1, tenant(0)),
            Ok(()),
            "the credential alone still has room"
        );
        assert_eq!(
            requests[9].keep(
                25,
                Some(Tenant {
                    credential: 0,
                    machine: None
                })
            ),
            Err(Limit::TenantBytes(30))
        );
        // Tenant B has the rest of the pool.
        let other = Budget::new(&limits(80, 80), pool.clone());
        assert_eq!(other.read(30, tenant(99)), Ok(()));
        assert_eq!(pool.held_by(Account::Machine(machine)), 30);
        drop(requests);
        assert_eq!(pool.held_by(Account::Machine(machine)), 0);
        assert_eq!(pool.held_by(Account::Credential(0)), 0);
        drop(other);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn a_metered_allowance_says_which_limit_stopped_it() {
        let pool = Arc::new(MemoryPool::new(1000, 1000));
        let budget = Budget::new(&limits(100, 10), pool);
        let allowance = Metered::new(&budget, None);
        assert!(allowance.allow(10));
        assert_eq!(allowance.reached(), None);
        assert!(!allowance.allow(1));
        assert_eq!(allowance.reached(), Some(Limit::ResponseBytes(10)));
    }
}
