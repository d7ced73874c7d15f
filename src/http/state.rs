//! What the handlers use: [`AppState`], built once and shared by every worker,
//! and [`Worker`], built by each worker for itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::{Authenticator, KeyCache};
use crate::config::{RequestLimits, Settings};
use crate::domain::{Credentials, EntitiesLimit};
use crate::http::answer::Delivery;
use crate::metrics::Metrics;
use crate::outbound::{BuildError, Tls};
use crate::providers::scope::{MemoryPool, Scope};
use crate::providers::{ProviderState, Providers};

/// Shared by every worker and built once: limits, metrics, and the state of
/// the providers and of authentication (caches, in-flight bounds, rate-limit
/// memory). It holds no connection.
pub struct AppState {
    pub limits: RequestLimits,
    pub metrics: Arc<Metrics>,
    settings: Settings,
    providers: ProviderState,
    keys: Arc<KeyCache>,
    tls: Tls,
    /// What all requests in flight may hold together (`MAX_HELD_BYTES`).
    pool: Arc<MemoryPool>,
    /// Set at SIGTERM: `/readyz` answers 503 and answers close their
    /// connections, while the listener stays open (`SHUTDOWN_DELAY_SECONDS`).
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Result<Self, BuildError> {
        let tls = Tls::new()?;
        Ok(Self {
            limits: settings.limits.clone(),
            providers: ProviderState::new(&settings.upstream, tls.clone(), metrics.clone()),
            keys: Arc::new(KeyCache::new(&settings.jwks, metrics.clone())),
            pool: Arc::new(MemoryPool::with_gauge(
                &settings.limits,
                metrics.held_bytes(),
            )),
            metrics,
            settings,
            tls,
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The flag [`Self::is_draining`] reads, for whoever handles the signal.
    pub fn draining_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// The relay got SIGTERM and is about to stop accepting connections.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The quotas of every provider, and their counters.
    pub fn quotas(&self) -> &crate::providers::quota::Quotas {
        self.providers.quotas()
    }

    /// The deadline and memory budget of a request starting now.
    pub fn scope(&self) -> Scope {
        Scope::new(&self.limits, self.pool.clone())
    }

    /// How the answer of the request of `scope` is sent: counted until it
    /// is, within `ANSWER_SEND_TIMEOUT_SECONDS`.
    pub fn delivery(&self, request: &actix_web::HttpRequest, scope: Scope) -> Delivery {
        Delivery::new(
            request,
            scope,
            self.limits.answer_send_timeout,
            self.metrics.clone(),
        )
    }

    /// The token's `CTR_ENTITIES_LIMIT`, else the configured one (which
    /// defaults to 100).
    pub fn entities_limit(&self, credentials: &Credentials) -> EntitiesLimit {
        credentials
            .entities_limit
            .unwrap_or(self.settings.entities_limit)
    }
}

/// One worker's own: the upstream and key-set HTTP clients, whose pooled
/// connections this worker's runtime drives. Built in the worker (the `App`
/// factory), so a worker that stops first never takes with it a connection
/// another worker is using.
pub struct Worker {
    pub providers: Providers,
    pub authenticator: Authenticator,
}

impl Worker {
    pub fn new(state: &AppState) -> Result<Self, BuildError> {
        Ok(Self {
            providers: Providers::new(&state.providers)?,
            authenticator: Authenticator::new(
                &state.settings,
                state.keys.clone(),
                crate::auth::jwks::client(&state.tls, &state.settings.upstream)?,
            ),
        })
    }
}
