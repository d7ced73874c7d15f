//! The null relay's server: actix-web in, reqwest out with the relay's
//! client settings, one client per worker; each body copied to the upstream
//! `fan_out` times at once, the first answer copied back. Shared by
//! `examples/null_relay` and `examples/allocations.rs`.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use ctr_relay::outbound::Tls;

struct Upstream {
    http: reqwest::Client,
    url: String,
    fan_out: usize,
}

async fn call(upstream: &Upstream, body: web::Bytes) -> Result<web::Bytes, reqwest::Error> {
    let response = upstream
        .http
        .post(&upstream.url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    response.bytes().await
}

async fn forward(upstream: web::Data<Upstream>, body: web::Bytes) -> HttpResponse {
    let calls = (0..upstream.fan_out.max(1)).map(|_| call(&upstream, body.clone()));
    let answers = futures_util::future::join_all(calls).await;
    match answers
        .into_iter()
        .next()
        .unwrap_or_else(|| Ok(web::Bytes::new()))
    {
        Ok(bytes) => HttpResponse::Ok()
            .content_type("application/json")
            .body(bytes),
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

/// Serves `POST /observe/observables` on 127.0.0.1:`port` until stopped.
pub async fn serve(port: u16, url: String, workers: usize, fan_out: usize) -> std::io::Result<()> {
    let tls = Tls::new().map_err(std::io::Error::other)?;
    HttpServer::new(move || {
        // One client per worker, built on its runtime, as the relay does.
        let http = tls
            .client_builder(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build();
        let app = App::new();
        match http {
            Ok(http) => app
                .app_data(web::Data::new(Upstream {
                    http,
                    url: url.clone(),
                    fan_out,
                }))
                .route("/observe/observables", web::post().to(forward)),
            Err(_) => app,
        }
    })
    .workers(workers)
    .disable_signals()
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
