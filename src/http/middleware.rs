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
