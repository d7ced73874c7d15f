use actix_web::HttpResponse;
use serde::Serialize;

#[derive(Serialize)]
struct Version {
    version: &'static str,
}

/// POST /version: no authentication.
pub async fn version() -> HttpResponse {
    HttpResponse::Ok().json(Version {
        version: env!("CARGO_PKG_VERSION"),
    })
}
