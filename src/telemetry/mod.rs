//! Logging and traces: the tracing subscriber every mode installs, and the
//! OTLP export of spans (`trace.rs`) when an endpoint is configured.

mod json;
pub mod trace;

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

/// What must live until exit: the log writer (dropping it flushes the lines
/// still queued) and, with traces, the exporter (dropping it exports the
/// spans still queued, for at most two seconds).
pub struct Telemetry {
    // Dropped in this order: spans first, then the log lines they may cause.
    _trace: Option<trace::TraceGuard>,
    _log: WorkerGuard,
}

/// Installs the global subscriber: JSON lines (the default) or human-readable
/// text, on stdout, and with an OTLP endpoint the export of the relay's
/// spans. Lines are handed to a writer thread, so a request never waits on a
/// write to stdout; the thread writes them in batches. Keep the returned
/// guard until exit. Returns `Ok(None)` if a subscriber is already installed
/// (the tests), and an error when the trace exporter cannot be built.
pub fn init(settings: &LogSettings) -> Result<Option<Telemetry>, String> {
    let mut filter =
        EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans made only for traces stay out of the log lines (which show the
    // request's span), and cost the log layer nothing.
    if let Ok(directive) = format!("{}=off", trace::TARGET).parse() {
        filter = filter.add_directive(directive);
    }
    if !settings.filter.contains("lapin") {
        // The AMQP client logs a failed connection as several ERROR lines,
        // beside the relay's own warning naming the broker and the retry:
        // off unless RUST_LOG names it (`RUST_LOG=info,lapin=debug`).
        if let Ok(directive) = "lapin=off".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        // Never drop a line: when 16k lines are queued (stdout slower than
        // the relay), requests wait for the writer. This also bounds the
        // queue's memory (a few MB).
        .lossy(false)
        .buffered_lines_limit(16 * 1024)
        .thread_name("ctr-relay-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stdout()));
    let format = match settings.format {
        LogFormat::Auto if std::io::stdout().is_terminal() => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        chosen => chosen,
    };
    let lines = match format {
        LogFormat::Json | LogFormat::Auto => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(json::JsonLines)
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(writer)
            .boxed(),
    };
    let (spans, trace_guard) = match &settings.trace {
        Some(trace_settings) => {
            let (provider, trace_guard) = trace::provider(trace_settings)?;
            // Only the spans made for traces, and no log line as a span event:
            // what is exported is what `trace.rs` says it is.
            let spans = tracing_opentelemetry::layer()
                .with_tracer(trace::tracer(&provider))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                // Parents from tracing's own span tree: no OpenTelemetry
                // context is attached and detached at every poll.
                .with_context_activation(false)
                .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                    metadata.is_span() && metadata.target() == trace::TARGET
                }));
            (Some(spans), Some(trace_guard))
        }
        None => (None, None),
    };
    // `try_init` only fails when a subscriber exists already: keep that one.
    let installed = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(installed.ok().map(|()| Telemetry {
        _log: guard,
        _trace: trace_guard,
    }))
}

/// A duration in milliseconds for a log line, rounded to 10 µs (`7.98`, not
/// `7.981251`).
pub fn millis(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 100_000.0).round() / 100.0
}

#[cfg(test)]
mod millis_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn milliseconds_are_rounded_to_ten_microseconds() {
        assert_eq!(millis(Duration::from_nanos(7_981_251)), 7.98);
        assert_eq!(millis(Duration::from_nanos(176_922)), 0.18);
        assert_eq!(millis(Duration::from_secs(2)), 2000.0);
    }
}
