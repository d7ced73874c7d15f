//! One thin handler per endpoint, and what they share: reading the observables
//! of a request body and writing the `{"data", "errors"}` envelope.

mod deliberate;
mod health;
mod metrics;
mod observe;
mod refer;
mod version;
mod watchdog;

use actix_web::http::{Method, header};
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, Route, mime};
use futures_util::StreamExt;
use serde::Serialize;

use crate::config::RequestLimits;
use crate::ctim::{CtimError, Entities, Reference, Verdicts};
use crate::domain::{Observable, parse_observables};
use crate::enrich::{Outcome, RequestError};
use crate::http::answer::Delivery;

/// Wires every endpoint. A known path with another method answers 405; an
/// unknown path 404 (both with the JSON envelope). There are no
/// `/respond/…` routes: the relay has no response action to offer, and the
/// module type lists only what exists (`module_type.json`).
/// `/metrics` is served here unless it has a port of its own
/// (`metrics_here` false: `METRICS_PORT`).
pub fn configure(config: &mut web::ServiceConfig, metrics_here: bool) {
    let post = |path: &str, route: Route| resource(path, "POST", route.method(Method::POST));
    let get = |path: &str, route: Route| resource(path, "GET", route.method(Method::GET));
    config
        .service(post("/health", web::to(health::health)))
        .service(post("/observe/observables", web::to(observe::observe)))
        .service(post("/refer/observables", web::to(refer::refer)))
        .service(post(
            "/deliberate/observables",
            web::to(deliberate::deliberate),
        ))
        .service(post("/version", web::to(version::version)))
        .service(get("/watchdog", web::to(watchdog::watchdog)))
        .service(get("/readyz", web::to(watchdog::readyz)));
    if metrics_here {
        config.service(get("/metrics", web::to(metrics::metrics)));
    }
    config.default_service(web::to(not_found));
}

/// `path` served by `route` for `method`; any other method answers 405 with
/// `Allow: <method>` and the JSON envelope.
fn resource(path: &str, method: &'static str, route: Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move || async move {
            let mut response = RequestError::MethodNotAllowed.error_response();
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(method));
            response
        }))
}

async fn not_found() -> Result<HttpResponse, RequestError> {
    Err(RequestError::NotFound)
}

/// `{"data": ...}` alone.
#[derive(Debug, Serialize)]
pub struct Data<T> {
    pub data: T,
}

/// `{"data": ..., "errors": [...]}`, each part present only when it says something.
#[derive(Debug, Serialize)]
struct Envelope<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<CtimError>,
}

/// Whether a response's data found anything, and about how large its JSON is.
pub trait Found {
    fn found_nothing(&self) -> bool;
    fn size_hint(&self) -> usize;
}

impl Found for Entities {
    fn found_nothing(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> usize {
        let docs = self.sightings.len()
            + self.indicators.len()
            + self.relationships.len()
            + self.judgements.len()
            + self.verdicts.len();
        256 + 512 * docs
    }
}

impl Found for Verdicts {
    fn found_nothing(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> usize {
        256 + 320 * self.verdicts.len()
    }
}

impl Found for Vec<Reference> {
    fn found_nothing(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> usize {
        256 + 320 * self.len()
    }
}

/// `data` when there are no errors (even if empty) or when something was
/// found; `errors` whenever there are any.
fn respond<T: Serialize + Found>(outcome: Outcome<T>, delivery: Delivery) -> HttpResponse {
    let data = match outcome.errors.is_empty() || !outcome.data.found_nothing() {
        true => Some(outcome.data),
        false => None,
    };
    let envelope = Envelope {
        data,
        errors: outcome.errors,
    };
    // Sized up front: answers of many entities otherwise grow the buffer by
    // doubling, copying it each time.
    let mut body = Vec::with_capacity(envelope.data.as_ref().map_or(256, Found::size_hint));
    match serde_json::to_writer(&mut body, &envelope) {
        Ok(()) => HttpResponse::Ok()
            .content_type(actix_web::http::header::ContentType::json())
            .body(delivery.body(body)),
        Err(error) => {
            tracing::error!(%error, "cannot serialize the answer");
            RequestError::Internal("cannot serialize the answer").error_response()
        }
    }
}

/// Reads a JSON body of observables: checks the media type, bounds the size,
/// and parses. Called after authentication, so an unauthenticated caller never
/// makes the relay read its body.
async fn read_observables(
    request: &HttpRequest,
    mut payload: web::Payload,
    limits: &RequestLimits,
) -> Result<Vec<Observable>, RequestError> {
    check_media_type(request)?;
    let limit = limits.max_body_bytes;
    let too_large = RequestError::PayloadTooLarge { limit };
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large);
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk: Bytes = chunk.map_err(|error| {
            RequestError::InvalidPayload(format!("The body could not be read: {error}."))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    parse_observables(&body, limits.max_observables).map_err(RequestError::InvalidPayload)
}

/// JSON (`application/json` or any `+json` type) or no declared type at all.
fn check_media_type(request: &HttpRequest) -> Result<(), RequestError> {
    let declared = || {
        request
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    match request.mime_type() {
        Ok(None) => Ok(()),
        Ok(Some(mime))
            if mime.type_() == mime::APPLICATION
                && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON)) =>
        {
            Ok(())
        }
        _ => Err(RequestError::UnsupportedMediaType(declared())),
    }
}
