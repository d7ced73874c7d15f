use actix_web::{HttpRequest, HttpResponse};

use super::Data;
use crate::error::RelayError;

/// GET /watchdog: liveness, no authentication. Echoes the `Health-Check` header.
pub async fn watchdog(request: HttpRequest) -> Result<HttpResponse, RelayError> {
    let value = request
        .headers()
        .get("Health-Check")
        .and_then(|value| value.to_str().ok())
        .ok_or(RelayError::HealthCheckFailed)?;
    Ok(HttpResponse::Ok().json(Data { data: value }))
}
