use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use ctr_relay::auth::{Authenticator, KeyCache};
use ctr_relay::cli::{
    BackboneArgs, Cli, Command, HealthcheckArgs, JwtArgs, ThreatbusArgs, healthcheck, mint,
    watchdog_url,
};
use ctr_relay::config::{Settings, credentials_from, optional_credentials_from};
use ctr_relay::domain::Secret;
use ctr_relay::http::{Application, StartupError};
use ctr_relay::metrics::Metrics;
use ctr_relay::outbound::Tls;
use ctr_relay::providers::scope::MemoryPool;
use ctr_relay::providers::{ProviderState, Providers};
use ctr_relay::{backbone, ops, telemetry, threatbus};

// A fast, memory-frugal allocator: the default ones (musl's especially) cost
// throughput and resident memory under this allocation-heavy load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Demo => demo(),
        Command::Jwt(args) => jwt(&args),
        Command::Healthcheck(args) => check(&args),
        Command::Threatbus(args) => threatbus(&args),
        Command::Backbone(args) => backbone(&args),
    }
}

fn settings() -> Result<Settings, ExitCode> {
    Settings::from_env().map_err(|error| {
        eprintln!("ctr-relay: {error}");
        ExitCode::FAILURE
    })
}

fn serve() -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let _telemetry = match telemetry::init(&settings.log) {
        Ok(telemetry) => telemetry,
        Err(error) => return fail(error),
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let application = Application::build(settings).await?;
        tracing::info!(
            port = application.port(),
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
        application.run_until(shutdown_signal()).await?;
        Ok::<_, StartupError>(())
    });
    finish(result, "the relay")
}

fn jwt(args: &JwtArgs) -> ExitCode {
    let secret_key = std::env::var("SECRET_KEY")
        .ok()
        .filter(|key| !key.is_empty())
        .map(Secret::new);
    match mint(args, secret_key) {
        Ok(minted) => {
            print!("{}", minted.render());
            ExitCode::SUCCESS
        }
        // Arguments that cannot make a usable token: a usage error, as clap's.
        Err(error) => {
            eprintln!("ctr-relay: {error}");
            ExitCode::from(2)
        }
    }
}

fn check(args: &HealthcheckArgs) -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let url = watchdog_url(settings.host, settings.port);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ctr-relay: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(healthcheck(&url, Duration::from_secs(args.timeout))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ctr-relay: unhealthy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `serve` against the built-in demo services, with a token printed for them.
fn demo() -> ExitCode {
    let base = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let _telemetry = match telemetry::init(&base.log) {
        Ok(telemetry) => telemetry,
        Err(error) => return fail(error),
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let upstream = ctr_relay::demo::DemoUpstream::start()
            .map_err(|error| format!("the demo services cannot start: {error}"))?;
        let host_given = std::env::var_os("HOST").is_some();
        let (settings, secret) = ctr_relay::demo::settings(base, upstream.port, host_given)?;
        let token = ctr_relay::demo::token(&secret, upstream.port)?;
        let host = settings.host;
        let application = Application::build(settings)
            .await
            .map_err(|error| error.to_string())?;
        tracing::info!(
            port = application.port(),
            demo_upstream_port = upstream.port,
            version = env!("CARGO_PKG_VERSION"),
            "listening (demo)"
        );
        let relay = ctr_relay::cli::watchdog_url(host, application.port());
        let relay = relay.trim_end_matches("/watchdog");
        println!("{}", ctr_relay::demo::instructions(relay, &token));
        application
            .run_until(shutdown_signal())
            .await
            .map_err(|error| error.to_string())?;
        upstream.handle.stop(false).await;
        Ok::<_, String>(())
    });
    finish(result, "the demo")
}

fn threatbus(args: &ThreatbusArgs) -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let credentials = match credentials_from(|name| std::env::var(name).ok()) {
        Ok(credentials) => credentials,
        Err(error) => return fail(error.to_string()),
    };
    let topics = match threatbus::topics(&args.topics) {
        Ok(topics) => topics,
        Err(error) => return fail(format!("THREATBUS_TOPICS / --topic: {error}")),
    };
    let manage = match threatbus::bus::ManageEndpoint::parse(&args.manage) {
        Ok(manage) => manage,
        Err(error) => return fail(format!("THREATBUS_MANAGE / --manage: {error}")),
    };
    let _telemetry = match telemetry::init(&settings.log) {
        Ok(telemetry) => telemetry,
        Err(error) => return fail(error),
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let metrics = Arc::new(Metrics::new().map_err(|error| error.to_string())?);
        let tls = Tls::new().map_err(|error| error.to_string())?;
        // One runtime drives every lookup of this mode: one set of clients.
        let state = ProviderState::new(&settings.upstream, tls, metrics.clone());
        let providers = Providers::new(&state).map_err(|error| error.to_string())?;
        let metrics_server = ops::start(settings.host, args.metrics_port, metrics.clone())?;
        let run_settings = threatbus::ThreatBusSettings {
            manage,
            topics,
            snapshot_days: args.snapshot,
            heartbeat: Duration::from_secs(5),
            report_every: Duration::from_secs(60),
            pool: Arc::new(MemoryPool::with_gauge(
                &settings.limits,
                metrics.held_bytes(),
            )),
            limits: settings.limits.clone(),
            credentials,
            entities_limit: settings.entities_limit,
            shutdown_grace: settings.shutdown_grace,
            queue: args.queue as usize,
        };
        tracing::info!(manage = %run_settings.manage, "threatbus mode");
        threatbus::run(
            run_settings,
            providers,
            metrics,
            Arc::new(threatbus::Counts::default()),
            shutdown_signal(),
        )
        .await;
        if let Some(handle) = metrics_server {
            handle.stop(true).await;
        }
        Ok::<_, String>(())
    });
    finish(result, "threatbus mode")
}

fn backbone(args: &BackboneArgs) -> ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    // Credentials of its own are optional here: requests may carry a token.
    let credentials = match optional_credentials_from(|name| std::env::var(name).ok()) {
        Ok(credentials) => credentials,
        Err(error) => return fail(error.to_string()),
    };
    let url = match backbone::check_url(&args.amqp_url) {
        Ok(url) => url,
        Err(error) => return fail(format!("BACKBONE_AMQP_URL / --amqp-url: {error}")),
    };
    let topology = match backbone::Topology::new(&args.client_id, &args.subscribe) {
        Ok(topology) => topology,
        Err(error) => {
            return fail(format!(
                "BACKBONE_CLIENT_ID / --client-id, BACKBONE_SUBSCRIBE / --subscribe: {error}"
            ));
        }
    };
    let reply_topic = args.reply_topic.trim().to_owned();
    if let Err(error) = backbone::check_topic(&reply_topic) {
        return fail(format!("BACKBONE_REPLY_TOPIC / --reply-topic: {error}"));
    }
    // For amqps://: the bundled roots, and a private CA when one is given.
    let broker_tls = match (Tls::new(), &args.tls_ca_file) {
        (Err(error), _) => return fail(error.to_string()),
        (Ok(tls), None) => tls,
        (Ok(tls), Some(path)) => {
            let with_ca = std::fs::read_to_string(path)
                .map_err(|error| error.to_string())
                .and_then(|pem| tls.with_extra_roots(&pem));
            match with_ca {
                Ok(tls) => tls,
                Err(error) => {
                    return fail(format!(
                        "BACKBONE_TLS_CA_FILE / --tls-ca-file: {}: {error}",
                        path.display()
                    ));
                }
            }
        }
    };
    let _telemetry = match telemetry::init(&settings.log) {
        Ok(telemetry) => telemetry,
        Err(error) => return fail(error),
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let metrics = Arc::new(Metrics::new().map_err(|error| error.to_string())?);
        let tls = Tls::new().map_err(|error| error.to_string())?;
        // One runtime drives every request of this mode: one set of clients.
        let state = ProviderState::new(&settings.upstream, tls.clone(), metrics.clone());
        let providers = Providers::new(&state).map_err(|error| error.to_string())?;
        let keys = Arc::new(KeyCache::new(&settings.jwks, metrics.clone()));
        let jwks_http = ctr_relay::auth::jwks::client(&tls, &settings.upstream)
            .map_err(|error| error.to_string())?;
        let authenticator = Authenticator::new(&settings, keys, jwks_http);
        let metrics_server = ops::start(settings.host, args.metrics_port, metrics.clone())?;
        let backbone_settings = backbone::BackboneSettings {
            url,
            tls: broker_tls,
            topology,
            reply_topic,
            prefetch: args.prefetch,
            pool: Arc::new(MemoryPool::with_gauge(
                &settings.limits,
                metrics.held_bytes(),
            )),
            limits: settings.limits.clone(),
            credentials,
            entities_limit: settings.entities_limit,
            shutdown_grace: settings.shutdown_grace,
            max_message_bytes: usize::try_from(args.max_message_bytes).unwrap_or(usize::MAX),
        };
        tracing::info!(
            broker = %backbone::describe(&backbone_settings.url),
            client_id = %backbone_settings.topology.client_id,
            "backbone mode"
        );
        backbone::run(
            backbone_settings,
            providers,
            authenticator,
            metrics,
            shutdown_signal(),
        )
        .await?;
        if let Some(handle) = metrics_server {
            handle.stop(true).await;
        }
        Ok::<_, String>(())
    });
    finish(result, "backbone mode")
}

/// A start-up error: said on stderr (logging may not be set up yet).
fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ctr-relay: {message}");
    ExitCode::FAILURE
}

/// How a mode ended: logged, and on stderr too when it was an error.
fn finish(result: Result<(), impl std::fmt::Display>, mode: &str) -> ExitCode {
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "{mode} stopped on an error");
            fail(error)
        }
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
