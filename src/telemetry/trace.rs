//! Traces: the relay's `tracing` spans (target `ctr_relay`) exported over
//! OTLP/HTTP with protobuf, when an endpoint is configured. Off, no span of
//! this module is created and nothing costs.
//!
//! Export never runs on a request's path: an ended span goes into a bounded
//! queue (`OTEL_BSP_MAX_QUEUE_SIZE`) that one thread of its own drains in
//! batches; when the queue is full (a slow or dead collector) the span is
//! dropped and counted (`ctr_relay_trace_spans_total{result="dropped"}`).
//! Attributes never carry an observable's value, a key or a token.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{ParentlessSampling, Sampling, TraceSettings};
use crate::metrics::{SPANS_DROPPED, SPANS_EXPORTED, SPANS_FAILED};
use crate::outbound::Tls;

/// The target of the spans made only for traces (provider calls, key set
/// fetches, bus messages): the log lines never see them.
pub const TARGET: &str = "ctr_relay::trace";

/// Whether spans are exported: set once, at start-up.
static ON: AtomicBool = AtomicBool::new(false);

/// Spans are exported: worth creating them.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The longest the last batch may take at exit (a dead collector must not
/// hold the process up).
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Keeps the exporter running; at drop, exports what is queued (for at most
/// [`FINAL_FLUSH`]) and stops.
pub struct TraceGuard {
    provider: SdkTracerProvider,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        ON.store(false, Ordering::Relaxed);
        let _ = self.provider.shutdown_with_timeout(FINAL_FLUSH);
    }
}

/// The tracer provider of `settings`, its export thread started. Fails when
/// the exporter cannot be built (said at start-up, never later).
pub fn provider(settings: &TraceSettings) -> Result<(SdkTracerProvider, TraceGuard), String> {
    let queue = Queue::start(settings)?;
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    attributes.extend(
        settings
            .resource
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    let resource = Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(attributes)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(queue)
        .with_sampler(sampler(settings.sampling))
        .with_resource(resource)
        .build();
    ON.store(true, Ordering::Relaxed);
    let guard = TraceGuard {
        provider: provider.clone(),
    };
    Ok((provider, guard))
}

/// The `tracing` layer that turns the relay's spans into OpenTelemetry spans.
pub fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("ctr-relay")
}

fn sampler(sampling: Sampling) -> Sampler {
    let parentless = |choice: ParentlessSampling| match choice {
        ParentlessSampling::AlwaysOn => Sampler::AlwaysOn,
        ParentlessSampling::AlwaysOff => Sampler::AlwaysOff,
        ParentlessSampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    match sampling {
        Sampling::AlwaysOn => Sampler::AlwaysOn,
        Sampling::AlwaysOff => Sampler::AlwaysOff,
        Sampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        Sampling::ParentBased(choice) => Sampler::ParentBased(Box::new(parentless(choice))),
    }
}

/// Continues the W3C trace context a caller sent (its `traceparent` and
/// `tracestate` headers) in `span`. A malformed `traceparent` is ignored.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    struct Headers<'a> {
        parent: &'a str,
        state: Option<&'a str>,
    }
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.parent),
                "tracestate" => self.state,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    let Some(parent) = traceparent else {
        return;
    };
    let headers = Headers {
        parent,
        state: tracestate,
    };
    let context = TraceContextPropagator::new().extract(&headers);
    let _ = span.set_parent(context);
}

/// The `traceparent` (and `tracestate`) headers of `span`, to send on.
pub fn trace_headers(span: &tracing::Span) -> Vec<(&'static str, String)> {
    struct Headers(Vec<(&'static str, String)>);
    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            let key = match key {
                "traceparent" => "traceparent",
                "tracestate" => "tracestate",
                _ => return,
            };
            self.0.push((key, value));
        }
    }
    let mut headers = Headers(Vec::new());
    let context: Context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut headers);
    headers.0
}

/// How one provider lookup ended, noted where it is known (the cache, the
/// coalescer, the upstream call) and read when the lookup's span closes.
#[derive(Debug)]
pub struct Noted {
    outcome: Cell<Option<&'static str>>,
    bytes: Cell<u64>,
    /// The call's span (for the `traceparent` sent on, when asked).
    span: tracing::Span,
}

impl Default for Noted {
    fn default() -> Self {
        Self {
            outcome: Cell::new(None),
            bytes: Cell::new(0),
            span: tracing::Span::none(),
        }
    }
}

impl Noted {
    pub fn outcome(&self) -> Option<&'static str> {
        self.outcome.get()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }
}

tokio::task_local! {
    static LOOKUP: Noted;
    static PARENT: tracing::Span;
}

/// Runs `work` with `span` as the parent of the spans made for traces
/// within it. The span is not entered at every poll (as `instrument` would):
/// spans for traces name their parent explicitly ([`parent`]).
pub async fn within<T>(span: tracing::Span, work: impl Future<Output = T>) -> T {
    PARENT.scope(span, work).await
}

/// The parent of a span made for traces now: the request's or message's.
pub fn parent() -> Option<tracing::Id> {
    PARENT.try_with(tracing::Span::id).ok().flatten()
}

/// Runs `lookup`, the provider call of `span`, with a [`Noted`] of its own
/// (when tracing is on), and returns it with the result.
pub async fn noting<T>(span: &tracing::Span, lookup: impl Future<Output = T>) -> (T, Noted) {
    match on() {
        true => {
            let noted = Noted {
                span: span.clone(),
                ..Noted::default()
            };
            LOOKUP
                .scope(noted, async {
                    let result = lookup.await;
                    let noted = LOOKUP.with(|noted| Noted {
                        outcome: Cell::new(noted.outcome.get()),
                        bytes: Cell::new(noted.bytes.get()),
                        span: tracing::Span::none(),
                    });
                    (result, noted)
                })
                .await
        }
        false => (lookup.await, Noted::default()),
    }
}

/// The `traceparent` (and `tracestate`) of the provider call being run.
pub fn call_headers() -> Vec<(&'static str, String)> {
    LOOKUP
        .try_with(|noted| trace_headers(&noted.span))
        .unwrap_or_default()
}

/// Notes how the lookup being run ended (`cached`, `coalesced`,
/// `rate_limited`, …); nothing when tracing is off.
pub fn note_outcome(outcome: &'static str) {
    let _ = LOOKUP.try_with(|noted| noted.outcome.set(Some(outcome)));
}

/// Notes `bytes` more read from an upstream by the lookup being run.
pub fn note_bytes(bytes: usize) {
    let _ = LOOKUP.try_with(|noted| noted.bytes.set(noted.bytes.get() + bytes as u64));
}

/// What the export thread is told.
enum Message {
    Span(Box<SpanData>),
    Flush(SyncSender<()>),
    /// The service's resource, which the exporter sends with every batch.
    Resource(Box<Resource>),
}

/// The span processor: a bounded queue and the thread that exports it.
#[derive(Debug)]
struct Queue {
    sender: SyncSender<Message>,
    stop: Arc<AtomicBool>,
    finished: Mutex<Option<Receiver<()>>>,
}

impl Queue {
    fn start(settings: &TraceSettings) -> Result<Self, String> {
        let (sender, receiver) = mpsc::sync_channel(settings.max_queue);
        let (built, ready) = mpsc::sync_channel::<Result<(), String>>(1);
        let (done, finished) = mpsc::sync_channel::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            settings: settings.clone(),
            receiver,
            stop: stop.clone(),
        };
        std::thread::Builder::new()
            .name("ctr-relay-trace".to_owned())
            .spawn(move || {
                worker.run(built);
                let _ = done.send(());
            })
            .map_err(|error| format!("the trace export thread cannot start: {error}"))?;
        ready
            .recv()
            .map_err(|_| "the trace export thread stopped".to_owned())??;
        Ok(Self {
            sender,
            stop,
            finished: Mutex::new(Some(finished)),
        })
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        match self.sender.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                SPANS_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (flushed, wait) = mpsc::sync_channel(1);
        self.sender
            .try_send(Message::Flush(flushed))
            .map_err(|_| OTelSdkError::InternalFailure("the export queue is full".to_owned()))?;
        wait.recv_timeout(FINAL_FLUSH)
            .map_err(|_| OTelSdkError::Timeout(FINAL_FLUSH))
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self
            .sender
            .try_send(Message::Resource(Box::new(resource.clone())));
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.stop.store(true, Ordering::Relaxed);
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match finished {
            Some(finished) => finished
                .recv_timeout(timeout)
                .map_err(|_| OTelSdkError::Timeout(timeout)),
            None => Err(OTelSdkError::AlreadyShutdown),
        }
    }
}

/// The export thread: its own runtime drives the HTTP client.
struct Worker {
    settings: TraceSettings,
    receiver: Receiver<Message>,
    stop: Arc<AtomicBool>,
}

/// How often the export thread takes what was queued (and looks at the
/// stop flag): at 40,000 spans a second, 800 at a time, within the
/// default queue of 2,048.
const TICK: Duration = Duration::from_millis(20);
/// At most one warning per this long about a collector that fails.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl Worker {
    fn run(self, built: SyncSender<Result<(), String>>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = built.send(Err(format!("the trace export runtime: {error}")));
                return;
            }
        };
        let exporter = runtime.block_on(async { exporter(&self.settings) });
        let mut exporter = match exporter {
            Ok(exporter) => {
                let _ = built.send(Ok(()));
                exporter
            }
            Err(error) => {
                let _ = built.send(Err(error));
                return;
            }
        };
        let mut batch: Vec<SpanData> = Vec::with_capacity(self.settings.max_batch);
        let mut due = Instant::now() + self.settings.schedule_delay;
        let mut warned: Option<Instant> = None;
        let mut export = |exporter: &mut opentelemetry_otlp::SpanExporter,
                          batch: &mut Vec<SpanData>| {
            if !batch.is_empty() {
                export_batch(&runtime, exporter, std::mem::take(batch), &mut warned);
            }
        };
        // The thread never waits on the queue itself: a sender would then
        // wake it (a system call) for every span. It sleeps a tick, then
        // takes what arrived meanwhile.
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            loop {
                match self.receiver.try_recv() {
                    Ok(Message::Span(span)) => {
                        batch.push(*span);
                        if batch.len() >= self.settings.max_batch {
                            export(&mut exporter, &mut batch);
                        }
                    }
                    Ok(Message::Flush(flushed)) => {
                        export(&mut exporter, &mut batch);
                        let _ = flushed.send(());
                    }
                    Ok(Message::Resource(resource)) => exporter.set_resource(&resource),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        export(&mut exporter, &mut batch);
                        let _ = exporter.shutdown();
                        return;
                    }
                }
            }
            if stopping {
                export(&mut exporter, &mut batch);
                break;
            }
            if Instant::now() >= due {
                export(&mut exporter, &mut batch);
                due = Instant::now() + self.settings.schedule_delay;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()).min(TICK));
        }
        let _ = exporter.shutdown();
    }
}

/// Exports one batch, counting its spans as exported or failed.
fn export_batch(
    runtime: &tokio::runtime::Runtime,
    exporter: &mut opentelemetry_otlp::SpanExporter,
    spans: Vec<SpanData>,
    warned: &mut Option<Instant>,
) {
    let count = spans.len() as u64;
    match runtime.block_on(exporter.export(spans)) {
        Ok(()) => {
            SPANS_EXPORTED.fetch_add(count, Ordering::Relaxed);
        }
        Err(error) => {
            SPANS_FAILED.fetch_add(count, Ordering::Relaxed);
            if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                *warned = Some(Instant::now());
                tracing::warn!(
                    spans = count,
                    error = %error,
                    "the OTLP collector did not take a batch of spans (said at most once a minute)"
                );
            }
        }
    }
}

/// The OTLP/HTTP protobuf exporter, over a reqwest client built with the
/// relay's TLS policy (no redirects, its roots), driven by this thread.
fn exporter(settings: &TraceSettings) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let tls = Tls::new().map_err(|error| format!("OTLP exporter: {error}"))?;
    let client = tls
        .client(settings.timeout)
        .map_err(|error| format!("OTLP exporter: {error}"))?;
    let headers = settings
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose().to_owned()))
        .collect();
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(settings.endpoint.as_str())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(settings.timeout)
        .with_headers(headers)
        .build()
        .map_err(|error| format!("OTLP exporter: {error}"))
}
