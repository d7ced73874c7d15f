use actix_web::{HttpRequest, HttpResponse, web};

use super::{read_observables, respond};
use crate::domain::Credentials;
use crate::enrich::{self, RequestError};
use crate::http::{AppState, Worker};

/// POST /refer/observables: links to each provider's own page for an observable.
pub async fn refer(
    state: web::Data<AppState>,
    worker: web::Data<Worker>,
    credentials: Credentials,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, RequestError> {
    let observables = read_observables(&request, payload, &state.limits).await?;
    let providers = worker.providers.for_credentials(&credentials);
    let scope = state.scope();
    let outcome = enrich::refer(
        &providers,
        &observables,
        state.limits.lookup_concurrency,
        &scope,
    )
    .await;
    Ok(respond(outcome, state.delivery(&request, scope)))
}
