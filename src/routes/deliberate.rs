use actix_web::{HttpRequest, HttpResponse, web};

use super::{read_observables, respond};
use crate::auth::Credentials;
use crate::error::RelayError;
use crate::providers::{Capability, fan_out};
use crate::startup::AppState;

/// POST /deliberate/observables: the verdicts alone.
pub async fn deliberate(
    state: web::Data<AppState>,
    credentials: Credentials,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, RelayError> {
    let observables = read_observables(&request, payload, &state.limits).await?;
    let providers = state.providers.for_credentials(&credentials);
    let limit = state.entities_limit(&credentials);
    let outcome = fan_out(
        &providers,
        &observables,
        Capability::Deliberate,
        state.limits.lookup_concurrency,
        |provider, observable| provider.deliberate(observable, limit),
        |data, found| data.extend(found),
    )
    .await;
    Ok(respond(outcome))
}
