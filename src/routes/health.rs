use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::Data;
use crate::auth::Credentials;
use crate::error::ErrorEnvelope;
use crate::providers;
use crate::startup::AppState;

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// POST /health: every provider the token has credentials for answers and
/// accepts them.
pub async fn health(state: web::Data<AppState>, credentials: Credentials) -> HttpResponse {
    let providers = state.providers.for_credentials(&credentials);
    let errors = providers::health(&providers).await;
    if errors.is_empty() {
        HttpResponse::Ok().json(Data {
            data: Status { status: "ok" },
        })
    } else {
        HttpResponse::Ok().json(ErrorEnvelope { errors: &errors })
    }
}
