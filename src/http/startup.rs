//! Builds the application: the listener, the state shared by every worker
//! (once), each worker's own clients (in the `App` factory), the routes.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use super::middleware::log_request;
use super::routes;
use super::state::{AppState, Worker};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::outbound::BuildError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Clients(#[from] BuildError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    MetricsPort(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    /// The `/metrics` server of `METRICS_PORT`, when set.
    metrics_server: Option<actix_web::dev::ServerHandle>,
    /// Set at the signal: `/readyz` answers 503 from then on.
    draining: Arc<AtomicBool>,
    /// How long the listener stays open after the signal.
    shutdown_delay: Duration,
}

impl Application {
    /// Binds `settings.host:settings.port` (port 0 picks a free port, as the
    /// tests do) and prepares the server; nothing is served until
    /// [`Self::run_until`].
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let address = (settings.host, settings.port);
        let listener = TcpListener::bind(address).map_err(|source| StartupError::Bind {
            address: format!("{}:{}", settings.host, settings.port),
            source,
        })?;
        let port = listener.local_addr()?.port();

        log_token_policy(&settings);
        let (shutdown_grace, shutdown_delay, workers) = (
            settings.shutdown_grace,
            settings.shutdown_delay,
            settings.workers,
        );
        let metrics = Arc::new(Metrics::new()?);
        let metrics_on_api_port = settings.metrics_port.is_none();
        let metrics_server =
            crate::ops::start(settings.host, settings.metrics_port, metrics.clone())
                .map_err(StartupError::MetricsPort)?;
        let state = web::Data::new(AppState::new(settings, metrics)?);
        let draining = state.draining_flag();
        // One worker's clients, built and dropped now: what cannot be built
        // stops the relay at start-up rather than in a worker.
        Worker::new(&state)?;
        let mut server = HttpServer::new(move || {
            let shared = state.clone();
            App::new()
                .wrap(from_fn(log_request))
                .app_data(state.clone())
                // Built in the worker, on its runtime: the connections its
                // clients pool are driven by this worker and die with it.
                .data_factory(move || {
                    let worker = Worker::new(&shared);
                    async move { worker }
                })
                .configure(|config| routes::configure(config, metrics_on_api_port))
        })
        // Signals are the caller's to handle (see `run_until`): actix would stop
        // abruptly on SIGINT, and tests must not react to the test runner's.
        .disable_signals()
        // A caller that closes its connection has gone: the request is dropped
        // at once, with its lookups, instead of running on unseen.
        .h1_allow_half_closed(false)
        // Each connection keeps a second descriptor of its socket, so an
        // answer not read in time can close it (`answer.rs`).
        .on_connect(super::answer::on_connect)
        .shutdown_timeout(shutdown_grace.as_secs());
        if let Some(workers) = workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Self {
            port,
            server,
            metrics_server,
            draining,
            shutdown_delay,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` completes; then answers `/readyz` with 503
    /// and serves on for `SHUTDOWN_DELAY_SECONDS` (load balancers take the
    /// relay out of rotation), then stops accepting connections and lets
    /// requests in flight finish, for at most the configured grace period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = self.server;
        tokio::select! {
            result = &mut server => return result,
            () = shutdown => {}
        }
        self.draining.store(true, Ordering::Relaxed);
        if !self.shutdown_delay.is_zero() {
            tracing::info!(
                delay_seconds = self.shutdown_delay.as_secs(),
                "shutting down: /readyz answers 503, still serving until the delay ends"
            );
            tokio::select! {
                result = &mut server => return result,
                () = tokio::time::sleep(self.shutdown_delay) => {}
            }
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let stopping = handle.stop(true);
        let (result, ()) = tokio::join!(server, stopping);
        if let Some(metrics_server) = self.metrics_server {
            metrics_server.stop(false).await;
        }
        result
    }
}

/// HS256 keys shorter than this (256 bits) are warned about.
pub const MIN_SECRET_KEY_BYTES: usize = 32;

/// One line at start-up on which tokens the relay can accept, and, when it
/// can accept none, how to fix that.
fn log_token_policy(settings: &Settings) {
    if let Some(secret) = &settings.secret_key {
        let bytes = secret.expose().len();
        if bytes < MIN_SECRET_KEY_BYTES {
            tracing::warn!(
                bytes,
                "SECRET_KEY is shorter than {MIN_SECRET_KEY_BYTES} bytes: anyone holding one \
                 token can guess a short HS256 key offline and then sign tokens of their own; \
                 `ctr-relay jwt` prints a random 32-byte key"
            );
        }
    }
    let hosts = settings
        .jwks
        .hosts
        .iter()
        .map(|host| host.authority().to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let audience = settings
        .relay_audience
        .as_deref()
        .unwrap_or("the request's own scheme://host (set RELAY_AUDIENCE in production)");
    match (settings.secret_key.is_some(), hosts.is_empty()) {
        (false, true) => tracing::warn!(
            "no token can be accepted: SECRET_KEY is unset (HS256 tokens are refused) and \
             JWKS_HOSTS is none (RS256 tokens are refused); set SECRET_KEY (`ctr-relay jwt` \
             prints a new one) or JWKS_HOSTS to your XDR region's visibility host"
        ),
        (false, false) => tracing::info!(
            jwks_hosts = %hosts,
            audience,
            "tokens accepted: RS256 issued by XDR through JWKS_HOSTS; HS256 tokens are refused \
             (SECRET_KEY is unset)"
        ),
        (true, true) => tracing::info!(
            "tokens accepted: HS256 signed with SECRET_KEY; RS256 tokens are refused \
             (JWKS_HOSTS is none)"
        ),
        (true, false) => tracing::info!(
            jwks_hosts = %hosts,
            audience,
            "tokens accepted: HS256 signed with SECRET_KEY, and RS256 issued by XDR through \
             JWKS_HOSTS"
        ),
    }
}
