use actix_web::{HttpResponse, web};

use crate::enrich::RequestError;
use crate::http::AppState;

/// GET /metrics: Prometheus text exposition, no authentication (it holds
/// counts and timings only; restrict it at the network if needed).
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, RequestError> {
    let text = state.metrics.render().map_err(|error| {
        tracing::error!(%error, "cannot render the metrics");
        RequestError::Internal("cannot render the metrics")
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
