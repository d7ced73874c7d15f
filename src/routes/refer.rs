use actix_web::{HttpRequest, HttpResponse, web};

use super::{read_observables, respond};
use crate::auth::Credentials;
use crate::error::RelayError;
use crate::providers::{Capability, fan_out};
use crate::startup::AppState;

/// POST /refer/observables: links to each provider's own page for an observable.
pub async fn refer(
    state: web::Data<AppState>,
    credentials: Credentials,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, RelayError> {
    let observables = read_observables(&request, payload, &state.limits).await?;
    let providers = state.providers.for_credentials(&credentials);
    let outcome = fan_out(
        &providers,
        &observables,
        Capability::Refer,
        state.limits.lookup_concurrency,
        |provider, observable| provider.refer(observable),
        |data: &mut Vec<_>, found| data.extend(found),
    )
    .await;
    Ok(respond(outcome))
}
