use actix_web::{HttpRequest, HttpResponse};

use super::Data;
use crate::enrich::RequestError;
use crate::http::state::AppState;

/// GET /watchdog: liveness, no authentication. Echoes the `Health-Check` header.
pub async fn watchdog(request: HttpRequest) -> Result<HttpResponse, RequestError> {
    let value = request
        .headers()
        .get("Health-Check")
        .and_then(|value| value.to_str().ok())
        .ok_or(RequestError::HealthCheckFailed)?;
    Ok(HttpResponse::Ok().json(Data { data: value }))
}

/// GET /readyz: readiness, no authentication. 200 while the relay serves; 503
/// from SIGTERM on, while the listener stays open for
/// `SHUTDOWN_DELAY_SECONDS` so that load balancers stop sending connections
/// before any is refused.
pub async fn readyz(state: actix_web::web::Data<AppState>) -> Result<HttpResponse, RequestError> {
    match state.is_draining() {
        true => Err(RequestError::ShuttingDown),
        false => Ok(HttpResponse::Ok().json(Data { data: "ready" })),
    }
}
