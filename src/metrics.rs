//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! One registry per application (no process-wide globals), so every test app
//! counts only its own traffic. Labels have bounded values: routes are route
//! patterns, outcomes are status classes or failure kinds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_calls: IntCounterVec,
    upstream_duration: HistogramVec,
    jwks_fetches: IntCounterVec,
    cache_lookups: IntCounterVec,
    upstream_retries: IntCounterVec,
    upstream_skipped: IntCounterVec,
    upstream_coalesced: IntCounterVec,
    threatbus_events: IntCounterVec,
    backbone_events: IntCounterVec,
    backbone_in_flight: IntGauge,
    held_bytes: IntGauge,
    answers_timed_out: prometheus::IntCounter,
    auth_failures: IntCounterVec,
    quota_refusals: IntCounterVec,
    redis_up: IntGauge,
    redis_fallbacks: IntCounterVec,
    trace_spans: IntCounterVec,
    names: Vec<String>,
}

/// What became of the spans ended for export (there is one tracer per
/// process, so these are process-wide; every registry shows them).
pub static SPANS_EXPORTED: AtomicU64 = AtomicU64::new(0);
/// Spans dropped because the export queue was full (a slow or dead collector).
pub static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Spans in batches the collector did not take.
pub static SPANS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Registers `collector` and notes the names it exports.
fn register(
    registry: &Registry,
    names: &mut Vec<String>,
    collector: impl prometheus::core::Collector + 'static,
) -> Result<(), prometheus::Error> {
    names.extend(collector.desc().iter().map(|desc| desc.fq_name.clone()));
    registry.register(Box::new(collector))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("ctr_relay".to_owned()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route and status (499: the caller went away first)",
            ),
            &["route", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_calls = IntCounterVec::new(
            Opts::new(
                "upstream_calls_total",
                "Calls to upstream services, by provider, operation and outcome \
                 (HTTP status class, or the kind of failure)",
            ),
            &["provider", "operation", "outcome"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "upstream_call_duration_seconds",
                "Duration of upstream calls, by provider and operation",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "operation"],
        )?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "jwks_fetches_total",
                "Key set fetches, by jwks_host and outcome",
            ),
            &["jwks_host", "outcome"],
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "cache_lookups_total",
                "Result cache lookups, by provider and result (hit / miss; shared_hit: a \
                 miss here answered from the fleet's cache in Redis)",
            ),
            &["provider", "result"],
        )?;
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "upstream_retries_total",
                "Idempotent upstream calls tried a second time, by provider and operation",
            ),
            &["provider", "operation"],
        )?;
        let upstream_skipped = IntCounterVec::new(
            Opts::new(
                "upstream_skipped_total",
                "Upstream calls not sent, by provider and reason \
                 (rate_limited: the credential waits for the provider's Retry-After)",
            ),
            &["provider", "reason"],
        )?;
        let upstream_coalesced = IntCounterVec::new(
            Opts::new(
                "upstream_coalesced_total",
                "Lookups answered by a call already in flight for the same provider, \
                 credential and observable, instead of a call of their own",
            ),
            &["provider"],
        )?;
        let threatbus_events = IntCounterVec::new(
            Opts::new(
                "threatbus_events_total",
                "Threat Bus mode: messages received, indicators enriched, sightings sent, \
                 messages skipped, errors",
            ),
            &["event"],
        )?;
        let backbone_events = IntCounterVec::new(
            Opts::new(
                "backbone_events_total",
                "Backbone mode: requests received, replied, answered with an error, \
                 redelivered, rejected, ignored, dead-lettered; replies refused; reconnects",
            ),
            &["event"],
        )?;
        let backbone_in_flight = IntGauge::new(
            "backbone_in_flight",
            "Backbone mode: requests being answered now",
        )?;
        let held_bytes = IntGauge::new(
            "held_bytes",
            "Bytes the requests in flight hold now (upstream answers read, answers kept), \
             of MAX_HELD_BYTES",
        )?;
        let answers_timed_out = prometheus::IntCounter::new(
            "answers_timed_out_total",
            "Answers whose caller did not read them within ANSWER_SEND_TIMEOUT_SECONDS: \
             the connection was closed",
        )?;
        let mut names = Vec::new();
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Requests refused for their token, by reason (they are answered HTTP 200 \
                 with an authorization error, so status codes do not show them)",
            ),
            &["reason"],
        )?;
        let quota_refusals = IntCounterVec::new(
            Opts::new(
                "quota_refusals_total",
                "Upstream calls not made because the credential's quota was reached",
            ),
            &["provider"],
        )?;
        let redis_up = IntGauge::new(
            "redis_up",
            "1 while the last Redis call worked, 0 while the relay counts on its own \
             (no REDIS_URL: always 0)",
        )?;
        let redis_fallbacks = IntCounterVec::new(
            Opts::new(
                "redis_fallbacks_total",
                "Redis calls that failed or timed out, so the relay used its own memory",
            ),
            &["operation"],
        )?;
        let trace_spans = IntCounterVec::new(
            Opts::new(
                "trace_spans_total",
                "Spans for the OTLP collector, by result (exported; dropped: the export \
                 queue was full; failed: the collector did not take their batch)",
            ),
            &["result"],
        )?;
        register(&registry, &mut names, trace_spans.clone())?;
        register(&registry, &mut names, quota_refusals.clone())?;
        register(&registry, &mut names, redis_up.clone())?;
        register(&registry, &mut names, redis_fallbacks.clone())?;
        register(&registry, &mut names, auth_failures.clone())?;
        register(&registry, &mut names, backbone_events.clone())?;
        register(&registry, &mut names, backbone_in_flight.clone())?;
        register(&registry, &mut names, held_bytes.clone())?;
        register(&registry, &mut names, answers_timed_out.clone())?;
        register(&registry, &mut names, threatbus_events.clone())?;
        register(&registry, &mut names, requests.clone())?;
        register(&registry, &mut names, upstream_retries.clone())?;
        register(&registry, &mut names, upstream_skipped.clone())?;
        register(&registry, &mut names, upstream_coalesced.clone())?;
        register(&registry, &mut names, cache_lookups.clone())?;
        register(&registry, &mut names, request_duration.clone())?;
        register(&registry, &mut names, upstream_calls.clone())?;
        register(&registry, &mut names, upstream_duration.clone())?;
        register(&registry, &mut names, jwks_fetches.clone())?;
        #[cfg(target_os = "linux")]
        register(
            &registry,
            &mut names,
            prometheus::process_collector::ProcessCollector::for_self(),
        )?;
        Ok(Self {
            registry,
            requests,
            request_duration,
            upstream_calls,
            upstream_duration,
            jwks_fetches,
            cache_lookups,
            upstream_retries,
            upstream_skipped,
            upstream_coalesced,
            threatbus_events,
            backbone_events,
            backbone_in_flight,
            held_bytes,
            answers_timed_out,
            auth_failures,
            quota_refusals,
            redis_up,
            redis_fallbacks,
            trace_spans,
            names,
        })
    }

    /// The full name of every metric registered (the process metrics too),
    /// whether it has been used yet or not.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A call not made: `provider`'s quota for its credential was reached.
    pub fn quota_refusal(&self, provider: &str) {
        self.quota_refusals.with_label_values(&[provider]).inc();
    }

    /// A lookup answered from the fleet's cache (Redis), after a miss here.
    pub fn cache_lookup_shared(&self, provider: &str) {
        self.cache_lookups
            .with_label_values(&[provider, "shared_hit"])
            .inc();
    }

    /// Whether Redis answers (1) or the relay counts on its own (0).
    pub fn redis_up(&self, up: bool) {
        self.redis_up.set(i64::from(up));
    }

    /// A Redis call that failed or timed out (`operation`: a fixed name).
    pub fn redis_fallback(&self, operation: &'static str) {
        self.redis_fallbacks.with_label_values(&[operation]).inc();
    }

    /// The gauge of the bytes the requests in flight hold (the memory pool's).
    pub fn held_bytes(&self) -> IntGauge {
        self.held_bytes.clone()
    }

    /// An answer not read in time: its connection was closed.
    pub fn answer_timed_out(&self) {
        self.answers_timed_out.inc();
    }

    /// A token refused, and why (a fixed label).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, status_text(status)])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// One upstream call: `Ok(status)` when an answer came, else the kind of
    /// failure (a fixed label: `timeout`, `connect`, …).
    pub fn upstream_call(
        &self,
        provider: &str,
        operation: &str,
        outcome: Result<u16, &'static str>,
        elapsed: Duration,
    ) {
        let outcome = match outcome {
            Ok(status) => status_class(status),
            Err(kind) => kind,
        };
        self.upstream_calls
            .with_label_values(&[provider, operation, outcome])
            .inc();
        self.upstream_duration
            .with_label_values(&[provider, operation])
            .observe(elapsed.as_secs_f64());
    }

    /// An idempotent call about to be tried again.
    pub fn upstream_retry(&self, provider: &str, operation: &str) {
        self.upstream_retries
            .with_label_values(&[provider, operation])
            .inc();
    }

    /// A call not sent, and why (a fixed label).
    pub fn upstream_skipped(&self, provider: &str, reason: &'static str) {
        self.upstream_skipped
            .with_label_values(&[provider, reason])
            .inc();
    }

    /// A lookup that waited for a call in flight instead of making one.
    pub fn upstream_coalesced(&self, provider: &str) {
        self.upstream_coalesced.with_label_values(&[provider]).inc();
    }

    /// Threat Bus mode: `n` more of `event` (a fixed label).
    pub fn threatbus_event(&self, event: &'static str, n: u64) {
        self.threatbus_events.with_label_values(&[event]).inc_by(n);
    }

    /// Backbone mode: one more `event` (a fixed label).
    pub fn backbone_event(&self, event: &'static str) {
        self.backbone_events.with_label_values(&[event]).inc();
    }

    /// Backbone mode: requests being answered, up or down by one.
    pub fn backbone_in_flight(&self, delta: i64) {
        self.backbone_in_flight.add(delta);
    }

    /// One key set fetch; `jwks_host` is always an allowlisted host.
    pub fn jwks_fetch(&self, jwks_host: &str, succeeded: bool) {
        let outcome = if succeeded { "ok" } else { "error" };
        self.jwks_fetches
            .with_label_values(&[jwks_host, outcome])
            .inc();
    }

    /// One result-cache lookup.
    pub fn cache_lookup(&self, provider: &str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups
            .with_label_values(&[provider, result])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        if SPANS_EXPORTED.load(Ordering::Relaxed) > 0
            || SPANS_DROPPED.load(Ordering::Relaxed) > 0
            || SPANS_FAILED.load(Ordering::Relaxed) > 0
        {
            for (result, count) in [
                ("exported", &SPANS_EXPORTED),
                ("dropped", &SPANS_DROPPED),
                ("failed", &SPANS_FAILED),
            ] {
                let counter = self.trace_spans.with_label_values(&[result]);
                counter.reset();
                counter.inc_by(count.load(Ordering::Relaxed));
            }
        }
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The status as a label without allocating for the common ones.
fn status_text(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        404 => "404",
        405 => "405",
        413 => "413",
        415 => "415",
        431 => "431",
        499 => "499",
        500 => "500",
        _ => status_class(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics table of docs/operations.md and the registry name the same metrics.
    #[test]
    fn the_operations_page_lists_every_metric_and_no_other() {
        use std::collections::BTreeSet;
        let readme = include_str!("../docs/operations.md");
        let listed: BTreeSet<String> = readme
            .lines()
            .filter_map(|line| line.strip_prefix("| `ctr_relay_"))
            .filter_map(|rest| rest.split('`').next())
            .map(|name| format!("ctr_relay_{name}"))
            .collect();
        let exported: BTreeSet<String> = Metrics::new()
            .unwrap()
            .names()
            .iter()
            .map(|name| match name.starts_with("process_") {
                true => "ctr_relay_process_*".to_owned(),
                false => format!("ctr_relay_{name}"),
            })
            .collect();
        assert_eq!(listed, exported);
    }

    #[test]
    fn requests_and_upstream_calls_are_counted() {
        let metrics = Metrics::new().unwrap();
        metrics.request("/observe/observables", 200, Duration::from_millis(12));
        metrics.upstream_call("C1fApp", "search", Ok(200), Duration::from_millis(5));
        metrics.upstream_call("C1fApp", "search", Err("timeout"), Duration::from_secs(1));
        metrics.jwks_fetch("visibility.amp.cisco.com", true);
        let text = metrics.render().unwrap();
        for line in [
            r#"ctr_relay_http_requests_total{route="/observe/observables",status="200"} 1"#,
            r#"ctr_relay_http_request_duration_seconds_count{route="/observe/observables"} 1"#,
            r#"ctr_relay_upstream_calls_total{operation="search",outcome="2xx",provider="C1fApp"} 1"#,
            r#"ctr_relay_upstream_calls_total{operation="search",outcome="timeout",provider="C1fApp"} 1"#,
            r#"ctr_relay_upstream_call_duration_seconds_count{operation="search",provider="C1fApp"} 2"#,
            r#"ctr_relay_jwks_fetches_total{jwks_host="visibility.amp.cisco.com",outcome="ok"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn uncommon_statuses_are_grouped_by_class() {
        assert_eq!(status_text(200), "200");
        assert_eq!(status_text(418), "4xx");
        assert_eq!(status_text(503), "5xx");
    }
}
