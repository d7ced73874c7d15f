use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::Data;
use crate::ctim::ErrorEnvelope;
use crate::domain::Credentials;
use crate::enrich;
use crate::http::{AppState, Worker};

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// POST /health: every provider the token has credentials for answers and
/// accepts them.
pub async fn health(
    state: web::Data<AppState>,
    worker: web::Data<Worker>,
    credentials: Credentials,
) -> HttpResponse {
    let providers = worker.providers.for_credentials(&credentials);
    let errors = enrich::health(&providers, &state.scope()).await;
    if errors.is_empty() {
        HttpResponse::Ok().json(Data {
            data: Status { status: "ok" },
        })
    } else {
        HttpResponse::Ok().json(ErrorEnvelope { errors: &errors })
    }
}
