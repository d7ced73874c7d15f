use actix_web::{HttpRequest, HttpResponse};

use super::Data;
use crate::enrich::RequestError;

/// GET /watchdog: liveness, no authentication. Echoes the `Health-Check` header.
pub async fn watchdog(request: HttpRequest) -> Result<HttpResponse, RequestError> {
    let value = request
        .headers()
        .get("Health-Check")
        .and_then(|value| value.to_str().ok())
        .ok_or(RequestError::HealthCheckFailed)?;
    Ok(HttpResponse::Ok().json(Data { data: value }))
}
