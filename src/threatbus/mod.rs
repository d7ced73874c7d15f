//! Threat Bus mode (`ctr-relay threatbus`): indicators arrive from a Threat Bus
//! ZeroMQ app plugin, are looked up at the configured providers (the same
//! provider code as the HTTP API), and each finding goes back as a STIX 2.1
//! sighting.
//!
//! Nothing stops the loop but a shutdown: a malformed message is counted and
//! skipped, a failing provider is counted and logged, and when a heartbeat
//! fails (Threat Bus restarted or went away) every socket is rebuilt and the
//! subscription made again, with a growing pause between attempts.

pub mod bus;
pub mod stix;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::config::RequestLimits;
use crate::domain::{Credentials, EntitiesLimit};
use crate::metrics::Metrics;
use crate::providers::scope::{MemoryPool, Scope};
use crate::providers::{Capability, Providers};
use bus::{Inbox, ManageEndpoint, Subscription};
use stix::{Indicator, Message, StixSighting};

/// The topic subscribed to.
pub const INDICATOR_TOPIC: &str = "stix2/indicator";

/// Objects this relay published, remembered to ignore them if they come back.
const OWN_IDS_REMEMBERED: usize = 10_000;
/// Messages (or sightings) queued between the sockets and the lookups.
const QUEUE: usize = 1024;
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ThreatBusSettings {
    pub manage: ManageEndpoint,
    /// Days of indicators Threat Bus should replay at subscription (0: none).
    pub snapshot_days: u32,
    pub heartbeat: Duration,
    /// How often the counts are logged.
    pub report_every: Duration,
    /// Lookups in flight at once (`lookup_concurrency`), and each indicator's
    /// deadline and memory budget, as for an HTTP request.
    pub limits: RequestLimits,
    /// What all lookups in flight may hold together (`MAX_HELD_BYTES`).
    pub pool: Arc<MemoryPool>,
    pub credentials: Credentials,
    pub entities_limit: EntitiesLimit,
    /// After a shutdown signal, how long lookups in flight may finish.
    pub shutdown_grace: Duration,
}

/// What happened to the messages, since the start.
#[derive(Debug, Default)]
pub struct Counts {
    /// Messages received.
    pub received: AtomicU64,
    /// Indicators looked up that had at least one finding.
    pub enriched: AtomicU64,
    /// Sightings published.
    pub sightings_sent: AtomicU64,
    /// Messages not looked up (malformed, not an indicator, a removal, an
    /// unsupported pattern, an object of this relay's own).
    pub skipped: AtomicU64,
    /// Failed provider lookups and failed sends.
    pub errors: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountsSnapshot {
    pub received: u64,
    pub enriched: u64,
    pub sightings_sent: u64,
    pub skipped: u64,
    pub errors: u64,
}

impl Counts {
    pub fn snapshot(&self) -> CountsSnapshot {
        CountsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            enriched: self.enriched.load(Ordering::Relaxed),
            sightings_sent: self.sightings_sent.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Everything the loop and its lookups share.
struct Shared {
    settings: ThreatBusSettings,
    providers: Providers,
    metrics: Arc<Metrics>,
    counts: Arc<Counts>,
    own_ids: Mutex<RecentIds>,
}

impl Shared {
    fn count(&self, counter: &AtomicU64, event: &'static str, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        self.metrics.threatbus_event(event, n);
    }
}

/// A bounded memory of recent ids.
#[derive(Debug, Default)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    fn insert(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > OWN_IDS_REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }
}

/// Runs until `shutdown` completes: subscribes, enriches, publishes; on
/// shutdown lets lookups in flight finish (at most `shutdown_grace`),
/// publishes what they found and unsubscribes.
pub async fn run(
    settings: ThreatBusSettings,
    providers: Providers,
    metrics: Arc<Metrics>,
    counts: Arc<Counts>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let shared = Arc::new(Shared {
        settings,
        providers,
        metrics,
        counts,
        own_ids: Mutex::new(RecentIds::default()),
    });
    let (found_tx, mut found_rx) = mpsc::channel::<String>(QUEUE);
    let permits = Arc::new(Semaphore::new(
        shared.settings.limits.lookup_concurrency.max(1),
    ));
    let mut lookups = JoinSet::new();
    let mut report = tokio::time::interval(shared.settings.report_every);
    report.set_missed_tick_behavior(MissedTickBehavior::Delay);
    report.tick().await;
    let mut last_report = CountsSnapshot::default();

    let mut live: Option<Subscription> = None;
    'connection: while !*stop.borrow() {
        let Some((mut subscription, inbox)) = connect(&shared.settings, &mut stop).await else {
            break;
        };
        let (frames_tx, mut frames) = mpsc::channel::<Vec<u8>>(QUEUE);
        let reader = tokio::spawn(read(inbox, frames_tx));
        let mut heartbeat = tokio::time::interval(shared.settings.heartbeat);
        // A slow heartbeat delays the next one rather than bunching them.
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    reader.abort();
                    live = Some(subscription);
                    break 'connection;
                }
                frame = frames.recv() => match frame {
                    Some(frame) => {
                        receive(&shared, &frame, &permits, &found_tx, &mut lookups);
                    }
                    None => {
                        tracing::warn!("the Threat Bus connection broke; reconnecting");
                        break;
                    }
                },
                Some(frame) = found_rx.recv() => {
                    if let Err(error) = subscription.publish(frame).await {
                        tracing::warn!(%error, "publishing a sighting failed; reconnecting");
                        shared.count(&shared.counts.errors, "error", 1);
                        reader.abort();
                        break;
                    }
                    shared.count(&shared.counts.sightings_sent, "sighting_sent", 1);
                }
                _ = heartbeat.tick() => {
                    if let Err(error) = subscription.heartbeat().await {
                        tracing::warn!(%error, "Threat Bus heartbeat failed; subscribing again");
                        reader.abort();
                        break;
                    }
                }
                _ = report.tick() => {
                    last_report = log_counts(&shared.counts, last_report);
                }
                Some(_) = lookups.join_next(), if !lookups.is_empty() => {}
            }
        }
    }

    // Shutting down: let lookups in flight finish and publish what they find.
    let grace = tokio::time::sleep(shared.settings.shutdown_grace);
    tokio::pin!(grace);
    drop(found_tx);
    loop {
        tokio::select! {
            joined = lookups.join_next() => if joined.is_none() { break },
            () = &mut grace => {
                tracing::warn!(cut = lookups.len(), "lookups still running at the end of the grace period");
                lookups.abort_all();
                break;
            }
            Some(frame) = found_rx.recv() => publish_last(&shared, live.as_mut(), frame).await,
        }
    }
    while let Ok(frame) = found_rx.try_recv() {
        publish_last(&shared, live.as_mut(), frame).await;
    }
    if let Some(subscription) = live {
        let topic = subscription.topic.clone();
        match subscription.unsubscribe().await {
            Ok(()) => tracing::info!(%topic, "unsubscribed from Threat Bus"),
            Err(error) => tracing::warn!(%topic, %error, "unsubscribing from Threat Bus failed"),
        }
    }
    log_counts(&shared.counts, last_report);
}

async fn publish_last(shared: &Shared, subscription: Option<&mut Subscription>, frame: String) {
    match subscription {
        Some(subscription) => match subscription.publish(frame).await {
            Ok(()) => shared.count(&shared.counts.sightings_sent, "sighting_sent", 1),
            Err(error) => {
                tracing::warn!(%error, "publishing a sighting failed");
                shared.count(&shared.counts.errors, "error", 1);
            }
        },
        None => shared.count(&shared.counts.errors, "error", 1),
    }
}

/// Subscribes, retrying with a growing pause until it works or `stop` is set.
async fn connect(
    settings: &ThreatBusSettings,
    stop: &mut watch::Receiver<bool>,
) -> Option<(Subscription, Inbox)> {
    let mut pause = RECONNECT_FIRST;
    loop {
        if *stop.borrow() {
            return None;
        }
        let attempt = Subscription::open(&settings.manage, INDICATOR_TOPIC, settings.snapshot_days);
        let result = tokio::select! {
            result = attempt => result,
            _ = stop.changed() => return None,
        };
        match result {
            Ok(opened) => {
                tracing::info!(manage = %settings.manage, topic = %opened.0.topic, "subscribed to Threat Bus");
                return Some(opened);
            }
            Err(error) => {
                tracing::warn!(manage = %settings.manage, %error, retry_in_s = pause.as_secs(), "cannot subscribe to Threat Bus");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return None,
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

/// Forwards frames from the SUB socket until it fails.
async fn read(mut inbox: Inbox, frames: mpsc::Sender<Vec<u8>>) {
    loop {
        match inbox.recv().await {
            Ok(frame) => {
                if frames.send(frame).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "receiving from Threat Bus failed");
                return;
            }
        }
    }
}

/// Counts a frame and starts its lookup, or counts why it is skipped.
fn receive(
    shared: &Arc<Shared>,
    frame: &[u8],
    permits: &Arc<Semaphore>,
    found: &mpsc::Sender<String>,
    lookups: &mut JoinSet<()>,
) {
    shared.count(&shared.counts.received, "received", 1);
    let message = {
        let own = shared
            .own_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stix::parse_message(frame, |id| own.set.contains(id))
    };
    match message {
        Message::Indicator(indicator) => {
            let (shared, permits, found) = (shared.clone(), permits.clone(), found.clone());
            lookups.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                enrich(&shared, &indicator, &found).await;
            });
        }
        Message::Skipped(reason) => {
            tracing::debug!(reason = reason.as_str(), "message skipped");
            shared.count(&shared.counts.skipped, "skipped", 1);
        }
    }
}

/// Looks the indicator's value up at every configured provider that supports
/// its type, and queues a STIX sighting per CTIM sighting found.
async fn enrich(shared: &Shared, indicator: &Indicator, found: &mpsc::Sender<String>) {
    let settings = &shared.settings;
    let providers = shared.providers.for_credentials(&settings.credentials);
    let observable = &indicator.observable;
    let mut sightings = 0u64;
    for provider in providers
        .iter()
        .filter(|provider| provider.supports(Capability::Observe, observable.kind))
    {
        let scope = Scope::new(&settings.limits, settings.pool.clone());
        match provider
            .observe(observable, settings.entities_limit, &scope)
            .await
        {
            Ok(entities) => {
                for sighting in &entities.sightings.0 {
                    let stix =
                        StixSighting::new(indicator, sighting, uuid::Uuid::new_v4(), Utc::now());
                    let frame = match stix.frame() {
                        Ok(frame) => frame,
                        Err(error) => {
                            tracing::warn!(%error, "cannot encode a sighting");
                            shared.count(&shared.counts.errors, "error", 1);
                            continue;
                        }
                    };
                    shared
                        .own_ids
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(stix.id.clone());
                    if found.send(frame).await.is_err() {
                        return;
                    }
                    sightings += 1;
                }
            }
            Err(error) => {
                tracing::warn!(
                    provider = %provider.name(),
                    observable = %observable,
                    indicator = %indicator.id,
                    %error,
                    "lookup failed"
                );
                shared.count(&shared.counts.errors, "error", 1);
            }
        }
    }
    tracing::info!(indicator = %indicator.id, observable = %observable, sightings, "indicator looked up");
    if sightings > 0 {
        shared.count(&shared.counts.enriched, "enriched", 1);
    }
}

/// A small HTTP server for Threat Bus mode: `GET /metrics` (Prometheus text)
/// and `GET /watchdog`.
pub fn metrics_server(
    host: std::net::IpAddr,
    port: u16,
    metrics: Arc<Metrics>,
) -> std::io::Result<actix_web::dev::Server> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let server = HttpServer::new(move || {
        let metrics = metrics.clone();
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let text = metrics.render();
                    async move {
                        match text {
                            Ok(text) => HttpResponse::Ok()
                                .content_type("text/plain; version=0.0.4; charset=utf-8")
                                .body(text),
                            Err(error) => {
                                tracing::error!(%error, "cannot render the metrics");
                                HttpResponse::InternalServerError().finish()
                            }
                        }
                    }
                }),
            )
            .route(
                "/watchdog",
                web::get()
                    .to(|| async { HttpResponse::Ok().json(serde_json::json!({"data": "ok"})) }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind((host, port))?
    .run();
    Ok(server)
}

/// Logs the counts of the last period and the totals; returns the totals.
fn log_counts(counts: &Counts, previous: CountsSnapshot) -> CountsSnapshot {
    let now = counts.snapshot();
    tracing::info!(
        received = now.received - previous.received,
        enriched = now.enriched - previous.enriched,
        sightings_sent = now.sightings_sent - previous.sightings_sent,
        skipped = now.skipped - previous.skipped,
        errors = now.errors - previous.errors,
        total_received = now.received,
        total_sightings_sent = now.sightings_sent,
        "threatbus counts"
    );
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ids_are_remembered_up_to_a_bound() {
        let mut ids = RecentIds::default();
        for n in 0..OWN_IDS_REMEMBERED + 5 {
            ids.insert(format!("sighting--{n}"));
        }
        assert_eq!(ids.set.len(), OWN_IDS_REMEMBERED);
        assert!(!ids.set.contains("sighting--0"));
        assert!(
            ids.set
                .contains(&format!("sighting--{}", OWN_IDS_REMEMBERED + 4))
        );
    }
}
