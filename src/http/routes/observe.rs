use actix_web::{HttpRequest, HttpResponse, web};

use super::{read_observables, respond};
use crate::domain::Credentials;
use crate::enrich::{self, RequestError};
use crate::http::{AppState, Worker};

/// POST /observe/observables: every supported observable at every provider.
pub async fn observe(
    state: web::Data<AppState>,
    worker: web::Data<Worker>,
    credentials: Credentials,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, RequestError> {
    let observables = read_observables(&request, payload, &state.limits).await?;
    let providers = worker.providers.for_credentials(&credentials);
    let scope = state.scope();
    let limit = state.entities_limit(&credentials);
    let outcome = enrich::observe(
        &providers,
        &observables,
        limit,
        state.limits.lookup_concurrency,
        &scope,
    )
    .await;
    Ok(respond(outcome, state.delivery(&request, scope)))
}
