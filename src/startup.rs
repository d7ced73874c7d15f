//! Builds the application once: listener, shared state, routes.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::auth::{Authenticator, Credentials};
use crate::config::{RequestLimits, Settings};
use crate::metrics::Metrics;
use crate::providers::{EntitiesLimit, Providers, upstream};
use crate::{routes, telemetry};

/// What every request handler shares, built once at start-up.
pub struct AppState {
    pub providers: Providers,
    pub limits: RequestLimits,
    pub metrics: Arc<Metrics>,
    entities_limit: EntitiesLimit,
}

impl AppState {
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Result<Self, upstream::BuildError> {
        Ok(Self {
            providers: Providers::new(&settings.upstream, metrics.clone())?,
            limits: settings.limits.clone(),
            metrics,
            entities_limit: settings.entities_limit,
        })
    }

    /// The token's `CTR_ENTITIES_LIMIT`, else the configured one (which
    /// defaults to 100).
    pub fn entities_limit(&self, credentials: &Credentials) -> EntitiesLimit {
        credentials.entities_limit.unwrap_or(self.entities_limit)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstream(#[from] upstream::BuildError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
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

        let metrics = Arc::new(Metrics::new()?);
        let state = web::Data::new(AppState::new(&settings, metrics.clone())?);
        let authenticator = web::Data::new(Authenticator::new(
            &settings,
            upstream::client(&settings.upstream)?,
            metrics,
        ));
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(telemetry::log_request))
                .app_data(state.clone())
                .app_data(authenticator.clone())
                .configure(routes::configure)
        })
        // Signals are the caller's to handle (see `run_until`): actix would stop
        // abruptly on SIGINT, and tests must not react to the test runner's.
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace.as_secs());
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` completes, then stops accepting connections and
    /// lets requests in flight finish, for at most the configured grace period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = self.server;
        tokio::select! {
            result = &mut server => return result,
            () = shutdown => {}
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let stopping = handle.stop(true);
        let (result, ()) = tokio::join!(server, stopping);
        result
    }
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |kind: SignalKind, name: &'static str| async move {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
                tracing::info!(signal = name, "signal received");
            }
            Err(error) => {
                tracing::error!(signal = name, %error, "cannot listen for the signal");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = wait(SignalKind::terminate(), "SIGTERM") => {}
        () = wait(SignalKind::interrupt(), "SIGINT") => {}
    }
}
