//! One log line and one metric sample per request, and a request id.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use tracing::Instrument;

use super::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Gives every request an id (returned as `X-Request-Id`), runs it inside a span
/// carrying that id, logs one line when it is answered (method, route, status,
/// latency) and counts it in the metrics. A request dropped before it is
/// answered (its caller closed the connection) is logged and counted too, as
/// `"request cancelled"` with status 499. Headers and bodies are never logged.
pub async fn log_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("request", request_id = %request_id);
    let mut pending = Pending {
        started: Instant::now(),
        method: request.method().to_string(),
        route: request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned()),
        state: request.app_data::<web::Data<AppState>>().cloned(),
        span: span.clone(),
        answered: false,
    };
    let mut response = next.call(request).instrument(span.clone()).await?;
    pending.answered = true;

    let status = response.status().as_u16();
    let elapsed = pending.started.elapsed();
    if let Some(state) = &pending.state {
        state.metrics.request(&pending.route, status, elapsed);
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    let (method, route) = (&pending.method, &pending.route);
    span.in_scope(|| {
        tracing::info!(method, route, status, latency_ms, "request");
    });
    Ok(response)
}

/// "Client closed request", as nginx counts it.
const CANCELLED: u16 = 499;

/// A request being served; if it is dropped unanswered, says so.
struct Pending {
    started: Instant,
    method: String,
    route: String,
    state: Option<web::Data<AppState>>,
    span: tracing::Span,
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let elapsed = self.started.elapsed();
        if let Some(state) = &self.state {
            state.metrics.request(&self.route, CANCELLED, elapsed);
        }
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let (method, route) = (&self.method, &self.route);
        self.span.in_scope(|| {
            tracing::info!(
                method,
                route,
                status = CANCELLED,
                latency_ms,
                "request cancelled: the caller went away"
            );
        });
    }
}
