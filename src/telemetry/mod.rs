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
    let installed = match settings.format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(json::JsonLines)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    installed.ok().map(|()| guard)
}
