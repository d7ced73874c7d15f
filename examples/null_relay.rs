//! The benchmark's second anchor: a relay that does no work. The same stack
//! as ctr-relay — actix-web in, reqwest out (the relay's client settings:
//! its TLS policy, timeouts, idle pool, `TCP_NODELAY`), one client per
//! worker, mimalloc — but each request's body is copied to the upstream as
//! it is and the upstream's answer copied back: no JWT, no JSON, no mapping,
//! no metrics, no log line. What ctr-relay costs above it is its own work.
//! With `--fan-out N` each request makes N upstream calls at once (as the
//! relay does for N observables) and answers the first one's body, so
//! memory per call in flight can be compared too.
//!
//! ```sh
//! cargo run --release --example null_relay -- --port 9091 \
//!     --upstream http://127.0.0.1:8081/cifapp/api/ --workers 2
//! ```

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use ctr_relay::outbound::Tls;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    port: u16,
    /// Where every request's body is POSTed.
    #[arg(long)]
    upstream: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Upstream calls per request, concurrent.
    #[arg(long, default_value_t = 1)]
    fan_out: usize,
}

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

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let tls = Tls::new().map_err(std::io::Error::other)?;
    let url = args.upstream.clone();
    let fan_out = args.fan_out;
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
    .workers(args.workers)
    .disable_signals()
    .bind(("127.0.0.1", args.port))?
    .run()
    .await
}
