//! Failed upstream calls, named by what went wrong.

use std::time::Duration;

use url::Url;

use super::scope::Limit;
use crate::domain::ProviderName;

/// A failed upstream call, named by what went wrong. Turned into a CTIM error
/// only in `enrich/errors.rs`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider} answered HTTP {status}")]
    UnexpectedStatus {
        provider: ProviderName,
        status: u16,
        body: String,
    },
    #[error("{provider} rejected the API key")]
    WrongApiKey { provider: ProviderName },
    #[error("{provider} sent an unexpected body: {detail}")]
    Malformed {
        provider: ProviderName,
        detail: String,
    },
    #[error("TLS handshake with {provider} failed: {reason}")]
    Tls {
        provider: ProviderName,
        reason: String,
    },
    #[error("cannot connect to {provider} at {url}")]
    Connect { provider: ProviderName, url: Url },
    #[error("{provider} host {host} is not a public address")]
    NotPublic {
        provider: ProviderName,
        /// As the caller wrote it (a name, or an IP literal).
        host: String,
    },
    #[error("{provider} closed the connection mid-response")]
    Interrupted { provider: ProviderName },
    #[error("{provider} did not answer within {after:?}")]
    Timeout {
        provider: ProviderName,
        after: Duration,
    },
    #[error("{provider} sent more than {limit} bytes")]
    TooLarge {
        provider: ProviderName,
        limit: usize,
    },
    #[error("{provider} did not answer within the request's time ({after:?})")]
    Deadline {
        provider: ProviderName,
        after: Duration,
    },
    #[error("the request reached a memory limit ({limit:?}) during a {provider} lookup")]
    OverBudget {
        provider: ProviderName,
        limit: Limit,
    },
    #[error("{provider} quota reached: {quota}, resets at {resets}")]
    QuotaReached {
        provider: ProviderName,
        /// `10000 a month`.
        quota: String,
        resets: chrono::DateTime<chrono::Utc>,
    },
    #[error("{provider} quota cannot be checked: Redis does not answer")]
    QuotaUnavailable { provider: ProviderName },
}

impl ProviderError {
    /// A short, stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::UnexpectedStatus { .. } => "status",
            ProviderError::WrongApiKey { .. } => "wrong_api_key",
            ProviderError::Malformed { .. } => "malformed",
            ProviderError::Tls { .. } => "tls",
            ProviderError::Connect { .. } => "connect",
            ProviderError::NotPublic { .. } => "not_public",
            ProviderError::Interrupted { .. } => "interrupted",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::TooLarge { .. } => "too_large",
            ProviderError::Deadline { .. } => "deadline",
            ProviderError::OverBudget { .. } => "over_budget",
            ProviderError::QuotaReached { .. } => "quota_reached",
            ProviderError::QuotaUnavailable { .. } => "quota_unavailable",
        }
    }

    /// How a provider call that failed so ended, for its trace span:
    /// `timed_out`, `refused_by_quota`, `rate_limited` (a 429, sent or
    /// remembered) or `failed`.
    pub fn trace_outcome(&self) -> &'static str {
        match self {
            ProviderError::Timeout { .. } | ProviderError::Deadline { .. } => "timed_out",
            ProviderError::QuotaReached { .. } | ProviderError::QuotaUnavailable { .. } => {
                "refused_by_quota"
            }
            ProviderError::UnexpectedStatus { status: 429, .. } => "rate_limited",
            _ => "failed",
        }
    }
}
