//! Communications Backbone mode (`ctr-relay backbone`): requests arrive as
//! messages on the client's inbox queue of a RabbitMQ-based Backbone, are
//! answered with the same provider code and CTIM as `POST
//! /observe/observables`, and the answers go back as messages on its outbox.
//!
//! Delivery is at least once: a request is acknowledged only after the broker
//! has confirmed its reply; `prefetch` bounds the requests in work. A broken
//! connection (a broker restart) is reconnected with backoff, the topology
//! declared again, and consuming resumes; what was not acknowledged comes
//! back. Bad messages get an error reply (when they name a `request_id`) or a
//! counted log line, and are rejected without requeue. Several relays with the
//! same client id share the inbox as competing consumers.

mod broker;
mod failed;
mod guard;
mod request;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use broker::{Topology, check_topic, check_url, describe};

use crate::auth::Authenticator;
use crate::config::RequestLimits;
use crate::domain::{Credentials, EntitiesLimit};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::providers::scope::MemoryPool;
use broker::{Broker, BrokerError};
use guard::Guard;
use lapin::uri::{AMQPScheme, AMQPUri};

use crate::outbound::Tls;
use wire::Status;

const RECONNECT_FIRST: Duration = Duration::from_secs(1);
// A broker restart takes seconds: retries stay frequent enough to be back
// soon after it, and jittered (below) so that a fleet does not return at once.
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// How the relay takes part in the Backbone. Not `Debug`: the URL holds a
/// password.
#[derive(Clone)]
pub struct BackboneSettings {
    /// `amqp://user:pass@host:port/vhost` (or `amqps://`), checked by
    /// [`check_url`]. Never logged (see [`describe`]).
    pub url: String,
    /// The TLS configuration for `amqps://` (the bundled roots, and a
    /// private CA when one is given).
    pub tls: Tls,
    pub topology: Topology,
    /// Where replies go when a request names no `reply_topic`.
    pub reply_topic: String,
    /// Requests delivered and not yet acknowledged, at most.
    pub prefetch: u16,
    /// Each request's size, observables, lookups at once, deadline and
    /// memory budget, as for an HTTP request.
    pub limits: RequestLimits,
    pub pool: Arc<MemoryPool>,
    /// The relay's own credentials, for requests without a token.
    pub credentials: Option<Credentials>,
    pub entities_limit: EntitiesLimit,
    /// After a shutdown signal, how long requests in work may finish.
    pub shutdown_grace: Duration,
    /// The largest message the broker takes (its `max_message_size`): a
    /// larger answer becomes an error reply naming this limit.
    pub max_message_bytes: usize,
}

/// Everything the loop and the requests share.
struct Shared {
    settings: BackboneSettings,
    /// The broker's URL as the AMQP client uses it: through the guard.
    client_uri: AMQPUri,
    providers: Providers,
    authenticator: Authenticator,
    metrics: Arc<Metrics>,
    /// Requests whose answer could not be delivered, for their redelivery.
    failed: failed::FailedAnswers,
}

/// How a connection ended.
enum Ended {
    Stopped,
    /// Connecting (or declaring) failed.
    Unreachable(BrokerError),
    /// A working connection broke.
    Lost(BrokerError),
}

/// Runs until `shutdown` completes; on shutdown stops consuming, finishes the
/// requests in work (at most `shutdown_grace`), sends `offline` and closes.
/// `Err` only when it cannot start (the URL, the local guard's port).
pub async fn run(
    settings: BackboneSettings,
    providers: Providers,
    authenticator: Authenticator,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<(), String> {
    let uri: AMQPUri = settings
        .url
        .parse()
        .map_err(|_| "BACKBONE_AMQP_URL: not an AMQP URL".to_owned())?;
    let upstream = guard::Upstream {
        host: uri.authority.host.clone(),
        port: uri.authority.port,
        tls: matches!(uri.scheme, AMQPScheme::AMQPS).then(|| settings.tls.rustls()),
    };
    // Deliveries up to twice MAX_REQUEST_BYTES are read for the request_id
    // of a `payload too large` reply; larger ones never reach the client.
    let max_delivery = 2 * settings.limits.max_body_bytes as u64;
    let guard = Guard::start(upstream, max_delivery, metrics.clone())
        .await
        .map_err(|error| format!("cannot listen on loopback for the broker connection: {error}"))?;
    let client_uri = through(&uri, guard.port);
    let (stop_tx, mut stop) = watch::channel(false);
    actix_web::rt::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let shared = Arc::new(Shared {
        settings,
        client_uri,
        providers,
        authenticator,
        metrics,
        failed: failed::FailedAnswers::default(),
    });
    if shared.settings.credentials.is_none() {
        tracing::info!(
            "no provider credentials configured: requests without a token get an error reply"
        );
    }
    let broker = describe(&shared.settings.url);
    let mut pause = RECONNECT_FIRST;
    while !*stop.borrow() {
        let wait = match session(&shared, &mut stop).await {
            Ended::Stopped => break,
            Ended::Lost(error) => {
                // It worked until now: the first retry comes soon.
                pause = RECONNECT_FIRST;
                let wait = jittered(pause);
                tracing::warn!(%broker, %error, retry_in_ms = wait.as_millis(), "the broker connection is lost; reconnecting");
                wait
            }
            Ended::Unreachable(error) => {
                let wait = jittered(pause);
                tracing::warn!(%broker, %error, retry_in_ms = wait.as_millis(), "cannot connect to the broker; retrying");
                wait
            }
        };
        shared.metrics.backbone_event("reconnect");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
    drop(guard);
    Ok(())
}

/// `uri` as the AMQP client uses it: plain AMQP to the guard on loopback
/// (which does TLS onwards), with the same credentials, vhost and options,
/// and frames of at most [`guard::FRAME_MAX`].
fn through(uri: &AMQPUri, port: u16) -> AMQPUri {
    let mut client = uri.clone();
    client.scheme = AMQPScheme::AMQP;
    client.authority.host = "127.0.0.1".to_owned();
    client.authority.port = port;
    client.query.frame_max = Some(match uri.query.frame_max {
        Some(asked) if asked > 0 && asked < guard::FRAME_MAX => asked,
        _ => guard::FRAME_MAX,
    });
    client
}

/// `pause` ± 20 %: relays that lost the same broker do not all come back at
/// the same instant.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(rand::random_range(0.8..1.2))
}

/// One connection: declare, announce, consume until stopped or lost.
async fn session(shared: &Arc<Shared>, stop: &mut watch::Receiver<bool>) -> Ended {
    let settings = &shared.settings;
    let topology = &settings.topology;
    let connected = async {
        let broker = Broker::connect(
            shared.client_uri.clone(),
            settings.prefetch,
            &format!("ctr-relay {}", topology.client_id),
        )
        .await?;
        broker.declare(topology).await?;
        announce(&broker, topology, "online").await?;
        let consumer = broker
            .channel
            .basic_consume(
                topology.inbox().into(),
                format!("{}-{}", topology.client_id, uuid::Uuid::new_v4()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, BrokerError>((broker, consumer))
    };
    let (broker, mut consumer) = tokio::select! {
        result = connected => match result {
            Ok(opened) => opened,
            Err(error) => return Ended::Unreachable(error),
        },
        _ = stop.changed() => return Ended::Stopped,
    };
    tracing::info!(broker = %describe(&settings.url), inbox = %topology.inbox(), "consuming from the Backbone");

    let mut requests = JoinSet::new();
    let lost = loop {
        tokio::select! {
            _ = stop.changed() => break None,
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    let (shared, channel) = (shared.clone(), broker.channel.clone());
                    let span = request::message_span(&delivery);
                    requests.spawn_local(crate::telemetry::trace::within(
                        span,
                        async move { request::handle(&shared, &channel, delivery).await },
                    ));
                }
                Some(Err(error)) => break Some(BrokerError::from(error)),
                None => break Some(BrokerError::ConsumerEnded),
            },
            Some(joined) = requests.join_next(), if !requests.is_empty() => {
                if let Ok(Err(error)) = joined {
                    break Some(error);
                }
            }
        }
    };
    if let Some(error) = lost {
        // What was in work is not acknowledged: the broker delivers it again.
        requests.abort_all();
        shared.failed.lost(&request::broken(&error));
        return Ended::Lost(error);
    }

    // Stopping: no new deliveries; those in work finish, within the grace.
    let tag = consumer.tag();
    if let Err(error) = broker
        .channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await
    {
        tracing::warn!(%error, "cancelling the consumer failed");
    }
    let grace = tokio::time::sleep(settings.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            joined = requests.join_next() => if joined.is_none() { break },
            () = &mut grace => {
                tracing::warn!(cut = requests.len(), "requests still in work at the end of the grace period; the broker delivers them again");
                requests.abort_all();
                break;
            }
        }
    }
    if let Err(error) = announce(&broker, topology, "offline").await {
        tracing::warn!(%error, "announcing offline failed");
    }
    let _ = broker.channel.close(200, "stopping".into()).await;
    let _ = broker.connection.close(200, "stopping".into()).await;
    tracing::info!("left the Backbone");
    Ended::Stopped
}

/// `online` / `offline` on the client's notify queue.
async fn announce(
    broker: &Broker,
    topology: &Topology,
    status: &'static str,
) -> Result<(), BrokerError> {
    let body = wire::encode(
        wire::STATUS_TOPIC,
        Status {
            client_id: &topology.client_id,
            status,
            version: env!("CARGO_PKG_VERSION"),
        },
    )?;
    broker
        .publish(&topology.notify(), wire::STATUS_TOPIC, &body)
        .await?;
    tracing::info!(status, "status announced on the Backbone");
    Ok(())
}
