use actix_web::{HttpRequest, HttpResponse, web};

use super::{read_observables, respond};
use crate::domain::Credentials;
use crate::enrich::RequestError;
use crate::enrich::fan_out;
use crate::http::{AppState, Worker};
use crate::providers::Capability;

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
    let outcome = fan_out(
        &providers,
        &observables,
        Capability::Refer,
        state.limits.lookup_concurrency,
        |provider, observable| provider.refer(observable, &scope),
        |data: &mut Vec<_>, found| data.extend(found),
    )
    .await;
    Ok(respond(outcome))
}
