use actix_web::HttpResponse;
use serde::Serialize;

use super::Data;

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// POST /respond/observables: the relay offers no response actions.
pub async fn observables() -> HttpResponse {
    HttpResponse::Ok().json(Data::<[(); 0]> { data: [] })
}

/// POST /respond/trigger: there is nothing to trigger.
pub async fn trigger() -> HttpResponse {
    HttpResponse::Ok().json(Data {
        data: Status { status: "failure" },
    })
}
