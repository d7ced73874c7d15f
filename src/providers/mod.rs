//! The threat-intelligence providers and the fan-out of one request over them.

pub mod address;
pub mod c1fapp;
mod cache;
pub mod cyberscan;
mod limit;
pub mod upstream;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use url::Url;

pub use limit::EntitiesLimit;

use crate::auth::Credentials;
use crate::config::UpstreamSettings;
use crate::ctim::{Entities, Observable, ObservableType, Reference, Verdicts};
use crate::error::{CtimError, provider_error};
use crate::metrics::Metrics;
use c1fapp::C1fApp;
use cyberscan::CyberScan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderName {
    C1fApp,
    CyberScan,
}

impl ProviderName {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::C1fApp => "C1fApp",
            ProviderName::CyberScan => "CyberScan",
        }
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed upstream call, named by what went wrong. Turned into a CTIM error
/// only in `error.rs`.
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
            ProviderError::Interrupted { .. } => "interrupted",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::TooLarge { .. } => "too_large",
        }
    }
}

/// What a request asks of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Observe,
    Deliberate,
    Refer,
}

/// The upstream clients, built once at start-up and shared by all requests.
#[derive(Debug, Clone)]
pub struct Providers {
    c1fapp: C1fApp,
    cyberscan: CyberScan,
}

impl Providers {
    pub fn new(
        settings: &UpstreamSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, upstream::BuildError> {
        Ok(Self {
            c1fapp: C1fApp::new(settings, metrics.clone())?,
            cyberscan: CyberScan::new(settings, metrics)?,
        })
    }

    /// The providers one request may use: those whose credentials it carries.
    pub fn for_credentials<'a>(&'a self, credentials: &'a Credentials) -> Vec<Provider<'a>> {
        let mut providers = Vec::new();
        if let Some(c1fapp) = &credentials.c1fapp {
            providers.push(Provider::C1fApp {
                client: &self.c1fapp,
                credentials: c1fapp,
            });
        }
        if let Some(cyberscan) = &credentials.cyberscan {
            providers.push(Provider::CyberScan {
                client: &self.cyberscan,
                credentials: cyberscan,
            });
        }
        providers
    }
}

/// One provider together with the credentials of the request being served.
#[derive(Debug, Clone, Copy)]
pub enum Provider<'a> {
    C1fApp {
        client: &'a C1fApp,
        credentials: &'a crate::auth::C1fAppCredentials,
    },
    CyberScan {
        client: &'a CyberScan,
        credentials: &'a crate::auth::CyberScanCredentials,
    },
}

// The provider futures are boxed: each arm's future differs a lot in size, and
// an unboxed enum future would make every lookup as large as the largest.
impl Provider<'_> {
    pub fn name(&self) -> ProviderName {
        match self {
            Provider::C1fApp { .. } => ProviderName::C1fApp,
            Provider::CyberScan { .. } => ProviderName::CyberScan,
        }
    }

    pub fn supports(&self, capability: Capability, kind: ObservableType) -> bool {
        match self {
            Provider::C1fApp { .. } => C1fApp::supports(capability, kind),
            Provider::CyberScan { .. } => CyberScan::supports(capability, kind),
        }
    }

    pub async fn observe(
        &self,
        observable: &Observable,
        limit: EntitiesLimit,
    ) -> Result<Entities, ProviderError> {
        match self {
            Provider::C1fApp {
                client,
                credentials,
            } => Box::pin(client.observe(&credentials.key, observable, limit)).await,
            Provider::CyberScan {
                client,
                credentials,
            } => Box::pin(client.observe(credentials, observable, limit)).await,
        }
    }

    pub async fn deliberate(
        &self,
        observable: &Observable,
        limit: EntitiesLimit,
    ) -> Result<Verdicts, ProviderError> {
        match self {
            Provider::C1fApp {
                client,
                credentials,
            } => Box::pin(client.deliberate(&credentials.key, observable, limit)).await,
            // CyberScan reports vulnerabilities, not maliciousness: no verdicts.
            Provider::CyberScan { .. } => Ok(Verdicts::default()),
        }
    }

    pub async fn refer(&self, observable: &Observable) -> Result<Vec<Reference>, ProviderError> {
        match self {
            // C1fApp has no page per observable to pivot to.
            Provider::C1fApp { .. } => Ok(Vec::new()),
            Provider::CyberScan {
                client,
                credentials,
            } => Box::pin(client.refer(credentials, observable)).await,
        }
    }

    pub async fn health(&self) -> Result<(), ProviderError> {
        match self {
            Provider::C1fApp {
                client,
                credentials,
            } => Box::pin(client.health(&credentials.key)).await,
            Provider::CyberScan {
                client,
                credentials,
            } => Box::pin(client.health(credentials)).await,
        }
    }
}

/// The data a request found, and the distinct errors met on the way.
#[derive(Debug, Default)]
pub struct Outcome<T> {
    pub data: T,
    pub errors: Vec<CtimError>,
}

impl<T> Outcome<T> {
    fn record(&mut self, error: &ProviderError) {
        let ctim = provider_error(error);
        if !self.errors.contains(&ctim) {
            self.errors.push(ctim);
        }
    }
}

/// Calls `call` for every (observable, provider) pair where the provider supports
/// `capability` for the observable's type, at most `concurrency` at a time, and
/// merges the results in request order (observables first, then providers).
/// A failed call adds its error and keeps everything else.
pub async fn fan_out<'a, T, F, Fut>(
    providers: &'a [Provider<'a>],
    observables: &'a [Observable],
    capability: Capability,
    concurrency: usize,
    call: F,
    merge: impl Fn(&mut T, T),
) -> Outcome<T>
where
    T: Default,
    F: Fn(&'a Provider<'a>, &'a Observable) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let calls = observables.iter().flat_map(|observable| {
        providers
            .iter()
            .filter(move |provider| provider.supports(capability, observable.kind))
            .map(move |provider| (provider, observable))
    });
    let mut results = stream::iter(calls)
        .map(|(provider, observable)| {
            let call = call(provider, observable);
            async move { (provider.name(), observable, call.await) }
        })
        .buffered(concurrency.max(1));

    let mut outcome = Outcome::<T>::default();
    while let Some((provider, observable, result)) = results.next().await {
        match result {
            Ok(found) => merge(&mut outcome.data, found),
            Err(error) => {
                tracing::warn!(
                    provider = %provider,
                    observable = %observable,
                    error = %error,
                    "lookup failed"
                );
                outcome.record(&error);
            }
        }
    }
    outcome
}

/// Checks every provider of the request, concurrently; the distinct errors.
pub async fn health(providers: &[Provider<'_>]) -> Vec<CtimError> {
    let results = futures_util::future::join_all(providers.iter().map(Provider::health)).await;
    let mut outcome = Outcome::<()>::default();
    for (provider, result) in providers.iter().zip(results) {
        if let Err(error) = result {
            tracing::warn!(provider = %provider.name(), error = %error, "health check failed");
            outcome.record(&error);
        }
    }
    outcome.errors
}
