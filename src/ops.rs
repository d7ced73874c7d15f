//! The operations port of the modes without the HTTP API (Threat Bus,
//! Communications Backbone): `GET /metrics` (Prometheus text) and
//! `GET /watchdog` (liveness), on a port of their own.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Serialize;

use crate::metrics::Metrics;

#[derive(Serialize)]
struct Alive {
    data: &'static str,
}

async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    match metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(error) => {
            tracing::error!(%error, "cannot render the metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

async fn watchdog() -> HttpResponse {
    HttpResponse::Ok().json(Alive { data: "ok" })
}

/// The server, bound to `host:port`, not yet running.
pub fn server(host: IpAddr, port: u16, metrics_of: Arc<Metrics>) -> std::io::Result<Server> {
    let shared = web::Data::from(metrics_of);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/watchdog", web::get().to(watchdog))
    })
    .workers(1)
    .disable_signals()
    .bind((host, port))?
    .run())
}

/// Starts the server on the current runtime when a port is given; the handle
/// stops it.
pub fn start(
    host: IpAddr,
    port: Option<u16>,
    metrics: Arc<Metrics>,
) -> Result<Option<ServerHandle>, String> {
    let Some(port) = port else {
        return Ok(None);
    };
    let server =
        server(host, port, metrics).map_err(|error| format!("metrics port {port}: {error}"))?;
    tracing::info!(port, "serving /metrics");
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(Some(handle))
}
