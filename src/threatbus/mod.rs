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
mod guard;
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
use guard::OnOversized;
use stix::{Indicator, Message, StixSighting};

/// The topic subscribed to unless others are named.
pub const INDICATOR_TOPIC: &str = "stix2/indicator";
/// The longest topic accepted.
const MAX_TOPIC_CHARS: usize = 256;

/// The topics to subscribe to, checked: each a STIX topic (`stix2/…`, since
/// the relay reads STIX alone) without spaces (a space ends the topic of a
/// frame) or control characters, at most [`MAX_TOPIC_CHARS`]; repeats
/// dropped, order kept; at least one.
pub fn topics(named: &[String]) -> Result<Vec<String>, String> {
    let mut topics: Vec<String> = Vec::new();
    for topic in named.iter().map(|topic| topic.trim()) {
        if !topic.starts_with("stix2/") || topic.len() == "stix2/".len() {
            return Err(format!("{topic:?} is not a STIX topic (stix2/<type>)"));
        }
        if topic.len() > MAX_TOPIC_CHARS || !topic.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{topic:?} holds a space or a control character, or is longer than {MAX_TOPIC_CHARS} characters"
            ));
        }
        if !topics.iter().any(|known| known == topic) {
            topics.push(topic.to_owned());
        }
    }
    if topics.is_empty() {
        return Err("no topic".to_owned());
    }
    Ok(topics)
}

/// Objects this relay published, remembered to ignore them if they come back.
const OWN_IDS_REMEMBERED: usize = 10_000;
/// Messages between the socket reader and the loop, and sightings between
/// the lookups and the publisher. Both are drained without waiting on a
/// provider, so they stay near empty.
const CHANNEL: usize = 64;
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ThreatBusSettings {
    pub manage: ManageEndpoint,
    /// The Threat Bus topics of one subscription (checked by [`topics`]).
    pub topics: Vec<String>,
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
    /// Indicators waiting for a lookup; past this, new ones are dropped
    /// (and counted).
    pub queue: usize,
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
    /// Indicators not looked up: the queue was full, or the relay was
    /// stopping.
    pub dropped: AtomicU64,
    /// Messages larger than the bound, cut at the socket.
    pub oversized: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountsSnapshot {
    pub received: u64,
    pub enriched: u64,
    pub sightings_sent: u64,
    pub skipped: u64,
    pub errors: u64,
    pub dropped: u64,
    pub oversized: u64,
}

impl Counts {
    pub fn snapshot(&self) -> CountsSnapshot {
        CountsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            enriched: self.enriched.load(Ordering::Relaxed),
            sightings_sent: self.sightings_sent.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            oversized: self.oversized.load(Ordering::Relaxed),
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

/// Why the loop on one connection ended.
enum Ended {
    /// A shutdown signal.
    Stop,
    /// The connection broke, a send failed or a heartbeat was refused.
    Reconnect,
}

/// Runs until `shutdown` completes: subscribes, enriches, publishes; on
/// shutdown starts no queued lookup, lets those in flight finish (at most
/// `shutdown_grace`), publishes what they found and unsubscribes.
///
/// Backpressure: indicators wait in a queue of `settings.queue`; a lookup is
/// started only with one of `lookup_concurrency` permits in hand; an
/// indicator arriving to a full queue is dropped and counted.
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
    let oversized: OnOversized = {
        let shared = shared.clone();
        Arc::new(move || shared.count(&shared.counts.oversized, "oversized", 1))
    };
    let (found_tx, mut found_rx) = mpsc::channel::<String>(CHANNEL);
    let permits = Arc::new(Semaphore::new(
        shared.settings.limits.lookup_concurrency.max(1),
    ));
    let mut pending: VecDeque<Indicator> = VecDeque::new();
    let mut lookups = JoinSet::new();
    let mut report = tokio::time::interval(shared.settings.report_every);
    report.set_missed_tick_behavior(MissedTickBehavior::Delay);
    report.tick().await;
    let mut last_report = CountsSnapshot::default();

    let mut live: Option<Subscription> = None;
    while !*stop.borrow() {
        let Some((mut subscription, inbox)) =
            connect(&shared.settings, &oversized, &mut stop).await
        else {
            break;
        };
        let (frames_tx, mut frames) = mpsc::channel::<Vec<u8>>(CHANNEL);
        let reader = tokio::spawn(read(inbox, frames_tx));
        let mut heartbeat = tokio::time::interval(shared.settings.heartbeat);
        // A slow heartbeat delays the next one rather than bunching them.
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let ended = loop {
            tokio::select! {
                _ = stop.changed() => break Ended::Stop,
                frame = frames.recv() => match frame {
                    Some(frame) => receive(&shared, &frame, &mut pending),
                    None => {
                        tracing::warn!("the Threat Bus connection broke; reconnecting");
                        break Ended::Reconnect;
                    }
                },
                permit = permits.clone().acquire_owned(), if !pending.is_empty() => {
                    let (Ok(permit), Some(indicator)) = (permit, pending.pop_front()) else {
                        continue;
                    };
                    let (shared, found) = (shared.clone(), found_tx.clone());
                    lookups.spawn(async move {
                        let _permit = permit;
                        let span = message_span(&indicator);
                        crate::telemetry::trace::within(span, enrich(&shared, &indicator, &found)).await;
                    });
                }
                Some(frame) = found_rx.recv() => {
                    if let Err(error) = subscription.publish(frame).await {
                        tracing::warn!(%error, "publishing a sighting failed; reconnecting");
                        shared.count(&shared.counts.errors, "error", 1);
                        break Ended::Reconnect;
                    }
                    shared.count(&shared.counts.sightings_sent, "sighting_sent", 1);
                }
                _ = heartbeat.tick() => {
                    if let Err(error) = subscription.heartbeat().await {
                        tracing::warn!(%error, "Threat Bus heartbeat failed; subscribing again");
                        break Ended::Reconnect;
                    }
                }
                _ = report.tick() => {
                    last_report = log_counts(&shared.counts, last_report);
                }
                Some(_) = lookups.join_next(), if !lookups.is_empty() => {}
            }
        };
        reader.abort();
        match ended {
            Ended::Stop => {
                live = Some(subscription);
                break;
            }
            // The old topic goes before a new one is asked for (if Threat Bus
            // still knows it), so no stale subscription is left behind.
            Ended::Reconnect => match subscription.unsubscribe().await {
                Ok(()) => tracing::info!("unsubscribed the old topic before subscribing again"),
                Err(error) => tracing::debug!(%error, "the old topic could not be unsubscribed"),
            },
        }
    }

    // Shutting down: queued indicators are not looked up; lookups in flight
    // finish and their sightings are published.
    if !pending.is_empty() {
        tracing::warn!(
            dropped = pending.len(),
            "queued indicators not looked up: the relay is stopping"
        );
        shared.count(&shared.counts.dropped, "dropped", pending.len() as u64);
        pending.clear();
    }
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
    oversized: &OnOversized,
    stop: &mut watch::Receiver<bool>,
) -> Option<(Subscription, Inbox)> {
    let mut pause = RECONNECT_FIRST;
    loop {
        if *stop.borrow() {
            return None;
        }
        let attempt = Subscription::open(
            &settings.manage,
            &settings.topics,
            settings.snapshot_days,
            oversized.clone(),
        );
        let result = tokio::select! {
            result = attempt => result,
            _ = stop.changed() => return None,
        };
        match result {
            Ok(opened) => {
                tracing::info!(manage = %settings.manage, topics = %settings.topics.join(","), p2p_topic = %opened.0.topic, "subscribed to Threat Bus");
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

/// Counts a frame and queues its indicator, or counts why it is skipped or
/// dropped.
fn receive(shared: &Shared, frame: &[u8], pending: &mut VecDeque<Indicator>) {
    shared.count(&shared.counts.received, "received", 1);
    let message = {
        let own = shared
            .own_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stix::parse_message(frame, |id| own.set.contains(id))
    };
    match message {
        Message::Indicator(indicator) if pending.len() >= shared.settings.queue => {
            tracing::debug!(indicator = %indicator.id, "queue full: indicator dropped");
            shared.count(&shared.counts.dropped, "dropped", 1);
        }
        Message::Indicator(indicator) => pending.push_back(indicator),
        Message::Skipped(reason) => {
            tracing::debug!(reason = reason.as_str(), "message skipped");
            shared.count(&shared.counts.skipped, "skipped", 1);
        }
    }
}

/// The span of one indicator from the bus (when traces are on): its type,
/// never its value.
fn message_span(indicator: &Indicator) -> tracing::Span {
    match crate::telemetry::trace::on() {
        true => tracing::info_span!(
            target: crate::telemetry::trace::TARGET,
            parent: None,
            "threatbus indicator",
            otel.kind = "consumer",
            messaging.system = "threatbus",
            observable.type = indicator.observable.kind.as_str(),
        ),
        false => tracing::Span::none(),
    }
}

/// Looks the indicator's value up at every configured provider that supports
/// its type, and queues a STIX sighting per CTIM sighting found.
async fn enrich(shared: &Shared, indicator: &Indicator, found: &mpsc::Sender<String>) {
    let settings = &shared.settings;
    let providers = shared.providers.for_credentials(&settings.credentials);
    let observable = &indicator.observable;
    let mut sightings = 0u64;
    // One deadline and budget per indicator, as per HTTP request.
    let scope = Scope::new(&settings.limits, settings.pool.clone());
    for provider in providers
        .iter()
        .filter(|provider| provider.supports(Capability::Observe, observable.kind))
    {
        let lookup = provider.observe(observable, settings.entities_limit, &scope);
        let result = match crate::telemetry::trace::on() {
            true => crate::enrich::traced(provider, observable, Capability::Observe, lookup).await,
            false => lookup.await,
        };
        match result {
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

/// Logs the counts of the last period and the totals; returns the totals.
fn log_counts(counts: &Counts, previous: CountsSnapshot) -> CountsSnapshot {
    let now = counts.snapshot();
    tracing::info!(
        received = now.received - previous.received,
        enriched = now.enriched - previous.enriched,
        sightings_sent = now.sightings_sent - previous.sightings_sent,
        skipped = now.skipped - previous.skipped,
        errors = now.errors - previous.errors,
        dropped = now.dropped - previous.dropped,
        oversized = now.oversized - previous.oversized,
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
    fn topics_are_stix_topics_once_each_in_order() {
        let named = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            topics(&named(&[
                " stix2/indicator",
                "stix2/sighting",
                "stix2/indicator"
            ]))
            .unwrap(),
            named(&["stix2/indicator", "stix2/sighting"])
        );
        for bad in [
            &[][..],
            &["zeek/intel"],
            &["stix2/"],
            &["stix2/indicator extra"],
            &["stix2/a\u{1}"],
            &["stix2/indicator", ""],
        ] {
            assert!(topics(&named(bad)).is_err(), "{bad:?}");
        }
        assert!(topics(&named(&[&format!("stix2/{}", "a".repeat(251))])).is_err());
        assert!(topics(&named(&[&format!("stix2/{}", "a".repeat(250))])).is_ok());
    }

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
