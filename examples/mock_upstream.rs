//! A stand-in for C1fApp and CyberScan, for the container check and the
//! benchmark: answers in the services' shapes after a configurable delay.
//!
//! ```sh
//! cargo run --release --example mock_upstream -- --port 8081 --latency-ms 50
//! ```
//!
//! * `POST /cifapp/api/` — a JSON array of `--records` C1fApp records, or of
//!   N records for an API key ending in `-records-N` (N ≤ 100): tests tell
//!   whose credentials a lookup used by the number of sightings
//! * `POST /api/v1/token` — `{"access_token": "mock-access-token"}`
//! * `GET /api/v1/domain/<domain>`, `GET /api/v1/ip/<ip>` — the host report
//! * `GET /api/v1/vulnerabilities/ip/<ip>` — `--vulnerabilities` findings
//!
//! Answers are built once at start; the only work per request is the delay.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Clone, Parser)]
#[command(about = "Mock C1fApp and CyberScan upstream")]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 8081)]
    port: u16,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// C1fApp records per search.
    #[arg(long, default_value_t = 3)]
    records: usize,
    /// CyberScan vulnerabilities per IP.
    #[arg(long, default_value_t = 3)]
    vulnerabilities: usize,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
}

struct Answers {
    latency: Duration,
    c1fapp: String,
    /// `c1fapp_by_count[n]`: n records, for keys ending in `-records-<n>`.
    c1fapp_by_count: Vec<String>,
    token: String,
    host: String,
    vulnerabilities: String,
}

fn c1fapp_records(count: usize) -> Value {
    Value::Array(
        (0..count)
            .map(|i| {
                json!({
                    "feed_label": [format!("Feed {}", i % 3)],
                    "domain": ["login.example.net"],
                    "description": ["Example"],
                    "derived": "direct",
                    "address": ["https://login.example.net/?session=abc"],
                    "ip_address": ["192.0.2.10"],
                    "asn": ["-"],
                    "confidence": [95 - (i % 50) as i64],
                    "country": ["US"],
                    "reportime": [format!("2020-04-{:02}", 1 + i % 28)],
                    "source": [format!("http://www.phishtank.com/phish_detail.php?phish_id={i}")],
                    "asn_desc": ["-"],
                    "assessment": ["phishing"]
                })
            })
            .collect(),
    )
}

fn vulnerabilities(count: usize) -> Value {
    let findings: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "name": format!("Finding {i}"),
                "family": "General",
                "description": "A mock vulnerability",
                "severity": "Medium",
                "port": 22,
                "protocol": "tcp",
                "cve": format!("CVE-2020-{:05}", 10000 + i),
                "cvss": 6.8,
                "confidence": 30
            })
        })
        .collect();
    json!({"ip": "192.0.2.10", "vulnerabilities": findings})
}

async fn answer(answers: &Answers, body: &str) -> HttpResponse {
    if !answers.latency.is_zero() {
        actix_web::rt::time::sleep(answers.latency).await;
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.to_owned())
}

// POST handlers take the body: actix closes a keep-alive connection whose
// request body was left unread, which would make every call a new connection.
async fn c1fapp(answers: web::Data<Answers>, body: web::Bytes) -> HttpResponse {
    let count = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|request| {
            let key = request.get("key")?.as_str()?;
            let (_, count) = key.rsplit_once("-records-")?;
            count.parse::<usize>().ok()
        });
    match count.and_then(|count| answers.c1fapp_by_count.get(count)) {
        Some(records) => answer(&answers, records).await,
        None => answer(&answers, &answers.c1fapp).await,
    }
}

async fn token(answers: web::Data<Answers>, _body: web::Bytes) -> HttpResponse {
    answer(&answers, &answers.token).await
}

async fn host(answers: web::Data<Answers>) -> HttpResponse {
    answer(&answers, &answers.host).await
}

async fn findings(answers: web::Data<Answers>) -> HttpResponse {
    answer(&answers, &answers.vulnerabilities).await
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let answers = web::Data::new(Answers {
        latency: Duration::from_millis(args.latency_ms),
        c1fapp: c1fapp_records(args.records).to_string(),
        c1fapp_by_count: (0..=100)
            .map(|count| c1fapp_records(count).to_string())
            .collect(),
        token: json!({"access_token": "mock-access-token"}).to_string(),
        host: json!({
            "domain": "login.example.net",
            "ip": "192.0.2.10",
            "vulns": {"critical": 0, "high": 0, "medium": 3, "low": 0, "info": 0},
            "cvss_total": 20.4,
            "open_ports": 2,
            "details_page": "https://www.cyberscan.io/vulnerabilities/login.example.net/192.0.2.10"
        })
        .to_string(),
        vulnerabilities: vulnerabilities(args.vulnerabilities).to_string(),
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(answers.clone())
            .route("/cifapp/api/", web::post().to(c1fapp))
            .route("/api/v1/token", web::post().to(token))
            .route("/api/v1/domain/{domain}", web::get().to(host))
            .route("/api/v1/ip/{ip}", web::get().to(host))
            .route("/api/v1/vulnerabilities/ip/{ip}", web::get().to(findings))
    })
    .backlog(4096)
    .max_connection_rate(4096);
    if let Some(workers) = args.workers {
        server = server.workers(workers);
    }
    eprintln!(
        "mock upstream on 127.0.0.1:{} ({} ms)",
        args.port, args.latency_ms
    );
    server.bind(("127.0.0.1", args.port))?.run().await
}
