//! The threat-intelligence providers: what each one asks its upstream, and
//! how its answer becomes CTIM. A new provider is a module here (client and
//! mapping), a variant of [`Provider`], and its credentials in `domain`.

pub mod address;
pub mod c1fapp;
mod cache;
pub mod cyberscan;
mod error;
pub mod quota;
pub mod scope;
pub mod upstream;

use std::sync::Arc;

pub use error::ProviderError;

use crate::config::UpstreamSettings;
use crate::ctim::{Entities, Reference, Verdicts};
use crate::domain::{
    C1fAppCredentials, Credentials, CyberScanCredentials, EntitiesLimit, Observable,
    ObservableType, ProviderName,
};
use crate::metrics::Metrics;
use crate::outbound::{BuildError, Tls};
use crate::store::Store;
use c1fapp::{C1fApp, C1fAppState};
use cyberscan::{CyberScan, CyberScanState};
use quota::Quotas;
use scope::{Limit, Metered, Scope};

/// What a request asks of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Observe,
    Deliberate,
    Refer,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Observe => "observe",
            Capability::Deliberate => "deliberate",
            Capability::Refer => "refer",
        }
    }
}

/// What the providers of every runtime share, built once at start-up: result
/// caches, in-flight bounds, rate-limit memory, CyberScan's token cache, the
/// TLS configuration, the metrics. It holds no connection.
#[derive(Debug, Clone)]
pub struct ProviderState {
    c1fapp: Arc<C1fAppState>,
    cyberscan: Arc<CyberScanState>,
    quotas: Arc<Quotas>,
    tls: Tls,
}

impl ProviderState {
    pub fn new(settings: &UpstreamSettings, tls: Tls, metrics: Arc<Metrics>) -> Self {
        let store = settings.fleet.redis.as_ref().and_then(|redis| {
            Store::start(redis, metrics.clone())
                .inspect_err(|error| {
                    tracing::error!(%error, "Redis cannot be used: quotas are counted by this relay alone");
                })
                .ok()
        });
        let quotas = Arc::new(Quotas::new(&settings.fleet, store, metrics.clone()));
        Self {
            c1fapp: Arc::new(C1fAppState::new(settings, metrics.clone(), quotas.clone())),
            cyberscan: Arc::new(CyberScanState::new(settings, metrics, quotas.clone())),
            quotas,
            tls,
        }
    }

    /// The quotas of every provider, and their counters.
    pub fn quotas(&self) -> &Arc<Quotas> {
        &self.quotas
    }
}

/// The providers of one runtime (an HTTP worker, the Threat Bus loop): its own
/// upstream HTTP clients, whose pooled connections that runtime drives, around
/// the shared [`ProviderState`]. Never shared between runtimes.
#[derive(Debug, Clone)]
pub struct Providers {
    c1fapp: C1fApp,
    cyberscan: CyberScan,
}

impl Providers {
    pub fn new(state: &ProviderState) -> Result<Self, BuildError> {
        state.quotas.warm();
        Ok(Self {
            c1fapp: C1fApp::new(state.c1fapp.clone(), &state.tls)?,
            cyberscan: CyberScan::new(state.cyberscan.clone(), &state.tls)?,
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
        credentials: &'a C1fAppCredentials,
    },
    CyberScan {
        client: &'a CyberScan,
        credentials: &'a CyberScanCredentials,
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

    /// The host this provider's calls go to: the configured C1fApp
    /// endpoint's, or the CyberScan host the caller's token names.
    pub fn host(&self) -> &str {
        match self {
            Provider::C1fApp { client, .. } => client.api_host(),
            Provider::CyberScan { credentials, .. } => {
                credentials.api.host_str().unwrap_or_default()
            }
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
        scope: &Scope,
    ) -> Result<Entities, ProviderError> {
        match self {
            Provider::C1fApp {
                client,
                credentials,
            } => Box::pin(client.observe(credentials, observable, limit, scope)).await,
            Provider::CyberScan {
                client,
                credentials,
            } => Box::pin(client.observe(credentials, observable, limit, scope)).await,
        }
    }

    pub async fn deliberate(
        &self,
        observable: &Observable,
        limit: EntitiesLimit,
        scope: &Scope,
    ) -> Result<Verdicts, ProviderError> {
        match self {
            Provider::C1fApp {
                client,
                credentials,
            } => Box::pin(client.deliberate(credentials, observable, limit, scope)).await,
            // CyberScan reports vulnerabilities, not maliciousness: no verdicts.
            Provider::CyberScan { .. } => Ok(Verdicts::default()),
        }
    }

    pub async fn refer(
        &self,
        observable: &Observable,
        scope: &Scope,
    ) -> Result<Vec<Reference>, ProviderError> {
        match self {
            // C1fApp has no page per observable to pivot to.
            Provider::C1fApp { .. } => Ok(Vec::new()),
            Provider::CyberScan {
                client,
                credentials,
            } => Box::pin(client.refer(credentials, observable, scope)).await,
        }
    }

    /// The quota this provider's credential is under, if any.
    pub fn quota<'q>(&'q self, quotas: &'q Quotas) -> Option<quota::QuotaUse<'q>> {
        let (secret, own) = match self {
            Provider::C1fApp { credentials, .. } => (&credentials.key, credentials.quota.as_ref()),
            Provider::CyberScan { credentials, .. } => {
                (&credentials.api_key, credentials.quota.as_ref())
            }
        };
        quotas.quota(self.name(), own).map(|quota| quota::QuotaUse {
            quotas,
            quota,
            secret,
        })
    }

    pub async fn health(&self, scope: &Scope) -> Result<(), ProviderError> {
        match self {
            Provider::C1fApp {
                client,
                credentials,
            } => Box::pin(client.health(credentials, scope)).await,
            Provider::CyberScan {
                client,
                credentials,
            } => Box::pin(client.health(credentials, scope)).await,
        }
    }
}

/// The error of a lookup whose mapping ran out of its answer's allowance.
fn truncated(provider: ProviderName, allowance: &Metered<'_>) -> ProviderError {
    ProviderError::OverBudget {
        provider,
        limit: allowance.reached().unwrap_or(Limit::ResponseBytes(0)),
    }
}
