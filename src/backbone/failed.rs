//! Requests whose answer could not be delivered (the broker refused it, or
//! the connection broke while it was sent), remembered for a while so that
//! when the broker delivers such a request again it gets an error reply —
//! or, failing that too, is dead-lettered — instead of its lookups being
//! made again and failing again, round after round.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

/// Requests remembered at most (the oldest is forgotten first).
const REMEMBERED: usize = 4096;

/// What happened to an answer, for the error reply.
pub type What = &'static str;

/// Failed deliveries by request id (a keyed hash of it: the memory holds no
/// request's text), with how many times they failed.
#[derive(Debug, Default)]
pub struct FailedAnswers {
    hasher: RandomState,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    order: VecDeque<u64>,
    failures: HashMap<u64, (What, u32)>,
}

impl FailedAnswers {
    /// Notes that the answer to `request_id` could not be delivered; how
    /// many times that has now happened.
    pub fn note(&self, request_id: &str, what: What) -> u32 {
        let key = self.hasher.hash_one(request_id);
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((last, times)) = inner.failures.get_mut(&key) {
            *last = what;
            *times += 1;
            return *times;
        }
        if inner.order.len() >= REMEMBERED
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.failures.remove(&oldest);
        }
        inner.order.push_back(key);
        inner.failures.insert(key, (what, 1));
        1
    }

    /// What happened the last time, and how many times, if it failed before.
    pub fn get(&self, request_id: &str) -> Option<(What, u32)> {
        let key = self.hasher.hash_one(request_id);
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.failures.get(&key).copied()
    }

    /// Forgets `request_id` once it has been settled.
    pub fn forget(&self, request_id: &str) {
        let key = self.hasher.hash_one(request_id);
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.failures.remove(&key).is_some() {
            inner.order.retain(|held| *held != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_forgotten_oldest_first() {
        let failed = FailedAnswers::default();
        assert_eq!(failed.get("r-1"), None);
        assert_eq!(failed.note("r-1", "refused"), 1);
        assert_eq!(failed.note("r-1", "broken"), 2);
        assert_eq!(failed.get("r-1"), Some(("broken", 2)));
        failed.forget("r-1");
        assert_eq!(failed.get("r-1"), None);
        for n in 0..=REMEMBERED {
            failed.note(&format!("q-{n}"), "refused");
        }
        assert_eq!(failed.get("q-0"), None, "the oldest is forgotten");
        assert!(failed.get(&format!("q-{REMEMBERED}")).is_some());
    }
}
