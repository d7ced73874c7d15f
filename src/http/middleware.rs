//! One log line and one metric sample per request, and a request id.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, web};
use tracing::Instrument;

use super::extract::TokenLog;
use super::state::AppState;

/// The most characters of an `X-Forwarded-For` header that are logged.
const MAX_FORWARDED_CHARS: usize = 256;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Gives every request an id (returned as `X-Request-Id`), runs it inside a span
/// carrying that id, logs one line when it is answered (method, route, status,
/// latency, the caller's address, and the token's issuer and audience — or
/// why it was refused) and counts it in the metrics. A request dropped before it is
/// answered (its caller closed the connection) is logged and counted too, as
/// `"request cancelled"` with status 499. Headers and bodies are never logged.
pub async fn log_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let mut id_buffer = [0; uuid::fmt::Hyphenated::LENGTH];
    let request_id: &str = uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut id_buffer);
    // The peer's address (a proxy's, behind one), and what the proxy says
    // about the caller: the header is the caller's to write, so it is logged
    // as said, clipped, never trusted.
    let client = request.peer_addr().map(|address| address.ip());
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .map(|text| text.chars().take(MAX_FORWARDED_CHARS).collect::<String>());
    let method = request.method().clone();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "request",
        request_id,
        client = client.map(tracing::field::display),
        forwarded_for = forwarded_for.as_deref()
    );
    // With traces, a span of their own (the log lines never see it), child
    // of the caller's `traceparent` when there is one.
    let traced = crate::telemetry::trace::on().then(|| {
        let traced = tracing::info_span!(
            target: crate::telemetry::trace::TARGET,
            parent: None,
            "http request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.route = route.as_str(),
            http.response.status_code = tracing::field::Empty,
            client = client.map(tracing::field::display),
            request_id,
            token.issuer = tracing::field::Empty,
        );
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        crate::telemetry::trace::continue_trace(
            &traced,
            header("traceparent"),
            header("tracestate"),
        );
        traced
    });
    let mut pending = Pending {
        started: Instant::now(),
        method,
        route,
        state: request.app_data::<web::Data<AppState>>().cloned(),
        span: span.clone(),
        answered: false,
    };
    let call = next.call(request);
    let mut response = match &traced {
        Some(traced) => {
            crate::telemetry::trace::within(traced.clone(), call)
                .instrument(span.clone())
                .await?
        }
        None => call.instrument(span.clone()).await?,
    };
    pending.answered = true;

    let status = response.status().as_u16();
    let elapsed = pending.started.elapsed();
    if let Some(state) = &pending.state {
        state.metrics.request(&pending.route, status, elapsed);
        if state.is_draining() {
            // A kept-alive connection would outlive the listener: the
            // caller's next request opens one to a replica that stays.
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
    }
    let latency_ms = crate::telemetry::millis(elapsed);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    let token = response.request().extensions().get::<TokenLog>().cloned();
    let (iss, aud, auth_failure): (Option<&str>, Option<&str>, Option<&str>) = match &token {
        Some(TokenLog::Accepted(identity)) => (
            identity.issuer.as_deref(),
            identity.audience.as_deref(),
            None,
        ),
        Some(TokenLog::Refused(reason)) => (None, None, Some(reason)),
        None => (None, None, None),
    };
    let (method, route) = (pending.method.as_str(), pending.route.as_str());
    if let Some(traced) = &traced {
        traced.record("http.response.status_code", status);
        if status >= 500 {
            traced.record("otel.status_code", "ERROR");
        }
        if let Some(iss) = iss {
            traced.record("token.issuer", iss);
        }
    }
    span.in_scope(|| {
        tracing::info!(
            method,
            route,
            status,
            latency_ms,
            iss,
            aud,
            auth_failure,
            "request"
        );
    });
    Ok(response)
}

/// "Client closed request", as nginx counts it.
const CANCELLED: u16 = 499;

/// A request being served; if it is dropped unanswered, says so.
struct Pending {
    started: Instant,
    method: actix_web::http::Method,
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
        let latency_ms = crate::telemetry::millis(elapsed);
        let (method, route) = (self.method.as_str(), self.route.as_str());
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
