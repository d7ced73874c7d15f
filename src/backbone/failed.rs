//! Replies being sent, and those that could not be delivered (the broker
//! refused them, or the channel or connection broke while they were sent),
//! remembered for a while so that when the broker delivers such a request
//! again it is answered again at most once, then gets an error reply, then is
//! dead-lettered — never made again round after round.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;

/// Requests remembered at most (the oldest is forgotten first).
const REMEMBERED: usize = 4096;
/// What happened to a reply, for the error reply: at most this long.
const WHAT_CHARS: usize = 300;
/// What happened to a reply cut off with its connection, until the
/// connection's end says more.
const CUT_OFF: &str = "the broker connection was lost while it was sent";

/// What to do with a request delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Look it up and answer it (again).
    Answer,
    /// Its answer failed: an error reply saying what happened.
    ErrorReply(String),
    /// Its error reply failed too: reject it without requeue.
    DeadLetter(String),
}

/// Which reply is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Answer,
    Error,
}

#[derive(Debug, Default)]
struct Record {
    what: String,
    /// Answers that failed (or are being sent).
    answers: u32,
    /// Whether the broker refused an answer outright (nack): no second try.
    refused: bool,
    /// Error replies that failed (or are being sent).
    error_replies: u32,
    /// A reply is being sent now.
    sending: bool,
    /// Insertion order, for forgetting the oldest.
    seq: u64,
}

/// Records by a keyed hash of the request id (the memory holds no request's
/// text).
#[derive(Debug, Default)]
pub struct FailedAnswers {
    hasher: RandomState,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<u64, Record>,
    seq: u64,
}

impl FailedAnswers {
    fn with<T>(&self, request_id: &str, f: impl FnOnce(&mut Inner, u64) -> T) -> T {
        let key = self.hasher.hash_one(request_id);
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut inner, key)
    }

    /// What to do with `request_id`, delivered again.
    pub fn next(&self, request_id: &str) -> Next {
        self.with(request_id, |inner, key| match inner.records.get(&key) {
            None => Next::Answer,
            Some(record)
                if record.error_replies >= 2 || (record.refused && record.error_replies >= 1) =>
            {
                Next::DeadLetter(record.what.clone())
            }
            Some(record) if record.error_replies >= 1 || record.refused || record.answers >= 2 => {
                Next::ErrorReply(record.what.clone())
            }
            Some(_) => Next::Answer,
        })
    }

    /// A reply to `request_id` is about to be published.
    pub fn sending(&self, request_id: &str, reply: Reply) {
        self.with(request_id, |inner, key| {
            inner.seq += 1;
            let seq = inner.seq;
            let record = inner.records.entry(key).or_insert_with(|| Record {
                what: CUT_OFF.to_owned(),
                seq,
                ..Record::default()
            });
            record.sending = true;
            match reply {
                Reply::Answer => record.answers += 1,
                Reply::Error => record.error_replies += 1,
            }
            if inner.records.len() > REMEMBERED
                && let Some(oldest) = inner
                    .records
                    .iter()
                    .min_by_key(|(_, record)| record.seq)
                    .map(|(key, _)| *key)
            {
                inner.records.remove(&oldest);
            }
        });
    }

    /// The reply to `request_id` was delivered: it is forgotten.
    pub fn sent(&self, request_id: &str) {
        self.with(request_id, |inner, key| inner.records.remove(&key));
    }

    /// The reply to `request_id` failed: `what` happened; `refused` when the
    /// broker said no (nack) rather than the channel breaking.
    pub fn failed(&self, request_id: &str, what: &str, refused: bool) {
        self.with(request_id, |inner, key| {
            if let Some(record) = inner.records.get_mut(&key) {
                record.what = what.chars().take(WHAT_CHARS).collect();
                record.sending = false;
                record.refused |= refused;
            }
        });
    }

    /// The connection ended (`what`): the replies being sent on it failed.
    pub fn lost(&self, what: &str) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for record in inner.records.values_mut().filter(|record| record.sending) {
            record.what = what.chars().take(WHAT_CHARS).collect();
            record.sending = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_reply_is_forgotten() {
        let failed = FailedAnswers::default();
        assert_eq!(failed.next("r"), Next::Answer);
        failed.sending("r", Reply::Answer);
        failed.sent("r");
        assert_eq!(failed.next("r"), Next::Answer);
    }

    #[test]
    fn an_answer_cut_off_is_tried_once_more_then_an_error_reply_then_dead_lettered() {
        let failed = FailedAnswers::default();
        failed.sending("r", Reply::Answer);
        failed.lost("channel closed: message size 60504 is larger than configured max size 16384");
        assert_eq!(
            failed.next("r"),
            Next::Answer,
            "a broker restart is not the answer's fault"
        );
        failed.sending("r", Reply::Answer);
        failed.lost("again");
        assert_eq!(failed.next("r"), Next::ErrorReply("again".to_owned()));
        failed.sending("r", Reply::Error);
        failed.lost("and again");
        assert_eq!(failed.next("r"), Next::ErrorReply("and again".to_owned()));
        failed.sending("r", Reply::Error);
        failed.lost("once more");
        assert_eq!(failed.next("r"), Next::DeadLetter("once more".to_owned()));
    }

    #[test]
    fn a_refused_answer_gets_an_error_reply_then_is_dead_lettered() {
        let failed = FailedAnswers::default();
        failed.sending("r", Reply::Answer);
        failed.failed("r", "refused", true);
        assert_eq!(failed.next("r"), Next::ErrorReply("refused".to_owned()));
        failed.sending("r", Reply::Error);
        failed.failed("r", "refused", true);
        assert_eq!(failed.next("r"), Next::DeadLetter("refused".to_owned()));
    }

    #[test]
    fn only_replies_being_sent_are_lost_with_a_connection() {
        let failed = FailedAnswers::default();
        failed.sending("a", Reply::Answer);
        failed.failed("a", "nack", true);
        failed.sending("b", Reply::Answer);
        failed.lost("connection reset");
        assert_eq!(failed.next("a"), Next::ErrorReply("nack".to_owned()));
        assert_eq!(failed.next("b"), Next::Answer);
    }

    #[test]
    fn the_oldest_are_forgotten_first() {
        let failed = FailedAnswers::default();
        for n in 0..=REMEMBERED {
            failed.sending(&format!("q-{n}"), Reply::Answer);
            failed.sending(&format!("q-{n}"), Reply::Answer);
        }
        assert_eq!(failed.next("q-0"), Next::Answer, "forgotten");
        assert!(matches!(
            failed.next(&format!("q-{REMEMBERED}")),
            Next::ErrorReply(_)
        ));
    }
}
