//! Logging: a tracing subscriber, and one line per request.

mod json;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use std::io::{BufWriter, IsTerminal};

use tracing::Instrument;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::JsonFields;

use crate::config::{LogFormat, LogSettings};
use crate::startup::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Installs the global subscriber: JSON lines (the default) or human-readable
/// text, on stdout. Lines are handed to a writer thread, so a request never
/// waits on a write to stdout; the thread writes them in batches. Keep the
/// returned guard until exit: dropping it flushes what is still queued.
/// Does nothing (and returns `None`) if a subscriber is already installed.
pub fn init(settings: &LogSettings) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
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

/// Gives every request an id (returned as `X-Request-Id`), runs it inside a span
/// carrying that id, logs one line when it is answered (method, route, status,
/// latency) and counts it in the metrics. Headers and bodies are never logged.
pub async fn log_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %request_id);
    let mut response = next.call(request).instrument(span.clone()).await?;

    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(state) = response.request().app_data::<web::Data<AppState>>() {
        state.metrics.request(&route, status, elapsed);
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    span.in_scope(|| {
        tracing::info!(method, route, status, latency_ms, "request");
    });
    Ok(response)
}
