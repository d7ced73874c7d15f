//! What one caller's request allows its upstream calls: one deadline, and a
//! memory budget — upstream bytes read and answer bytes kept — drawn from the
//! process-wide [`MemoryPool`], so memory stays bounded per request and per
//! process whatever the callers and the upstreams send.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::RequestLimits;

/// What all requests in flight hold together (`MAX_HELD_BYTES`). Shared by
/// every runtime; a request's bytes return to it when the request ends.
#[derive(Debug)]
pub struct MemoryPool {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryPool {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held now, by all requests.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        take(&self.used, self.limit, bytes)
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
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
}

impl Budget {
    pub fn new(limits: &RequestLimits, pool: Arc<MemoryPool>) -> Self {
        Self {
            pool,
            upstream_limit: limits.max_upstream_bytes,
            upstream_used: AtomicUsize::new(0),
            response_limit: limits.max_response_bytes,
            response_used: AtomicUsize::new(0),
        }
    }

    /// Counts `bytes` of an upstream answer as read by this request.
    pub fn read(&self, bytes: usize) -> Result<(), Limit> {
        self.charge(
            &self.upstream_used,
            self.upstream_limit,
            bytes,
            Limit::UpstreamBytes,
        )
    }

    /// Counts `bytes` of the answer (entities, estimated as JSON) as kept.
    pub fn keep(&self, bytes: usize) -> Result<(), Limit> {
        self.charge(
            &self.response_used,
            self.response_limit,
            bytes,
            Limit::ResponseBytes,
        )
    }

    fn charge(
        &self,
        used: &AtomicUsize,
        limit: usize,
        bytes: usize,
        reached: fn(usize) -> Limit,
    ) -> Result<(), Limit> {
        if !take(used, limit, bytes) {
            return Err(reached(limit));
        }
        if !self.pool.take(bytes) {
            used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(Limit::HeldBytes(self.pool.limit));
        }
        Ok(())
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        let held = *self.upstream_used.get_mut() + *self.response_used.get_mut();
        self.pool.give_back(held);
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
    reached: std::sync::Mutex<Option<Limit>>,
}

impl<'a> Metered<'a> {
    pub fn new(budget: &'a Budget) -> Self {
        Self {
            budget,
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
        match self.budget.keep(bytes) {
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

    #[test]
    fn a_request_may_read_and_keep_up_to_its_limits() {
        let pool = Arc::new(MemoryPool::new(1000));
        let budget = Budget::new(&limits(100, 50), pool.clone());
        assert_eq!(budget.read(60), Ok(()));
        assert_eq!(budget.read(40), Ok(()));
        assert_eq!(budget.read(1), Err(Limit::UpstreamBytes(100)));
        assert_eq!(budget.keep(50), Ok(()));
        assert_eq!(budget.keep(1), Err(Limit::ResponseBytes(50)));
        assert_eq!(pool.used(), 150);
        drop(budget);
        assert_eq!(pool.used(), 0, "given back when the request ends");
    }

    #[test]
    fn requests_together_may_hold_no_more_than_the_pool() {
        let pool = Arc::new(MemoryPool::new(100));
        let first = Budget::new(&limits(80, 80), pool.clone());
        let second = Budget::new(&limits(80, 80), pool.clone());
        assert_eq!(first.read(70), Ok(()));
        assert_eq!(second.read(40), Err(Limit::HeldBytes(100)));
        assert_eq!(second.read(30), Ok(()), "a refused charge takes nothing");
        drop(first);
        assert_eq!(second.keep(70), Ok(()));
        assert_eq!(pool.used(), 100);
    }

    #[test]
    fn a_metered_allowance_says_which_limit_stopped_it() {
        let pool = Arc::new(MemoryPool::new(1000));
        let budget = Budget::new(&limits(100, 10), pool);
        let allowance = Metered::new(&budget);
        assert!(allowance.allow(10));
        assert_eq!(allowance.reached(), None);
        assert!(!allowance.allow(1));
        assert_eq!(allowance.reached(), Some(Limit::ResponseBytes(10)));
    }
}
