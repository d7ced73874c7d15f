//! Logging: the tracing subscriber every mode installs.

mod json;

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::JsonFields;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber: JSON lines (the default) or human-readable
/// text, on stdout. Lines are handed to a writer thread, so a request never
/// waits on a write to stdout; the thread writes them in batches. Keep the
/// returned guard until exit: dropping it flushes what is still queued.
/// Does nothing (and returns `None`) if a subscriber is already installed.
pub fn init(settings: &LogSettings) -> Option<WorkerGuard> {
    let mut filter =
        EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // `try_init` only fails when a subscriber exists already: keep that one.
    let format = match settings.format {
        LogFormat::Auto if std::io::stdout().is_terminal() => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        chosen => chosen,
    };
    let installed = match format {
        LogFormat::Json | LogFormat::Auto => builder
            .fmt_fields(JsonFields::new())
            .event_format(json::JsonLines)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    installed.ok().map(|()| guard)
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
