//! Builds the application once: listener, shared state, routes.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::auth::{Authenticator, Credentials};
use crate::config::{RequestLimits, Settings};
use crate::providers::{EntitiesLimit, Providers, upstream};
use crate::{routes, telemetry};

/// What every request handler shares, built once at start-up.
pub struct AppState {
    pub providers: Providers,
    pub limits: RequestLimits,
    entities_limit: EntitiesLimit,
}

impl AppState {
    pub fn new(settings: &Settings) -> Result<Self, upstream::BuildError> {
        Ok(Self {
            providers: Providers::new(&settings.upstream)?,
            limits: settings.limits.clone(),
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
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds `settings.host:settings.port` (port 0 picks a free port, as the
    /// tests do) and prepares the server; nothing is served until [`Self::run`].
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let address = (settings.host, settings.port);
        let listener = TcpListener::bind(address).map_err(|source| StartupError::Bind {
            address: format!("{}:{}", settings.host, settings.port),
            source,
        })?;
        let port = listener.local_addr()?.port();

        let state = web::Data::new(AppState::new(&settings)?);
        let authenticator = web::Data::new(Authenticator::new(
            &settings,
            upstream::client(&settings.upstream)?,
        ));
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(telemetry::log_request))
                .app_data(state.clone())
                .app_data(authenticator.clone())
                .configure(routes::configure)
        })
        .listen(listener)?
        .run();
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process is told to stop (SIGINT / SIGTERM).
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}
