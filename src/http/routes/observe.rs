use actix_web::{HttpRequest, HttpResponse, web};

use super::{read_observables, respond};
use crate::domain::Credentials;
use crate::enrich::RequestError;
use crate::enrich::fan_out;
use crate::http::{AppState, Worker};
use crate::providers::Capability;

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
    let outcome = fan_out(
        &providers,
        &observables,
        Capability::Observe,
        state.limits.lookup_concurrency,
        |provider, observable| provider.observe(observable, limit, &scope),
        |data, found| data.extend(found),
    )
    .await;
    Ok(respond(outcome))
}
