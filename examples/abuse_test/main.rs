//! The hostile scenarios of `scripts/abuse-test.sh`, against the release relay,
//! with hostile upstreams served here. Each scenario starts its own relay,
//! prints its figures, and fails (exit 1) when a bound is broken:
//!
//! 1. memory: tenants whose CyberScan answers one 10 MiB vulnerability per IP
//!    ask about 20 IPs at a time, on 8 connections; the relay's peak RSS and
//!    its answers' sizes are bounded;
//! 2. disconnect: a caller gives up after 1 s on a request of 96 slow
//!    lookups; no upstream call starts afterwards;
//! 3. tenants: tenant A's CyberScan host stalls while A floods it with more
//!    lookups than the provider has places; tenant B's lookups against a
//!    healthy host stay fast and get their data;
//! 4. proxy: with HTTP(S)_PROXY and ALL_PROXY set, tokens naming internal
//!    CyberScan hosts never reach the proxy;
//!
//! and the tenant-isolation scenarios of `isolation.rs`: the pool filled by
//! announced lengths and by real bytes, one machine under many spellings,
//! untrusted JSON, the result cache's bound, slow readers, and every bound
//! at its default at once against the Kubernetes manifest's memory limit.
//!
//! ```sh
//! cargo run --example abuse_test -- --relay target/release/ctr-relay
//! ```

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use ctr_relay::outbound::Tls;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

mod isolation;

#[derive(Debug, Parser)]
#[command(about = "Hostile tenants and upstreams against a relay")]
struct Args {
    /// The relay binary.
    #[arg(long)]
    relay: String,
    /// Fail when the relay's resident memory passes this many MB.
    #[arg(long, default_value_t = 160)]
    max_rss_mb: u64,
    /// Fail when tenant B's slowest lookup takes longer than this while
    /// tenant A's host stalls, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    max_tenant_b_ms: u64,
    /// Run only this scenario (by the name it prints).
    #[arg(long)]
    only: Option<String>,
}

const SECRET: &str = "abuse-test-secret-key-0123456789abcdef";

// ---------------------------------------------------------------------------
// Hostile upstreams

/// How one upstream behaves, and what it saw.
struct Upstream {
    /// CyberScan vulnerabilities answer (prebuilt).
    findings: web::Bytes,
    /// Delay before answering a lookup (not the token call).
    delay: Duration,
    /// Lookups received, and when.
    calls: Mutex<Vec<Instant>>,
}

async fn token_call(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().json(json!({"access_token": "hostile-upstream-token"}))
}

async fn lookup(upstream: web::Data<Upstream>, _body: web::Bytes) -> HttpResponse {
    upstream
        .calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Instant::now());
    if !upstream.delay.is_zero() {
        actix_web::rt::time::sleep(upstream.delay).await;
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(upstream.findings.clone())
}

/// Serves CyberScan's token and vulnerabilities routes, and C1fApp's search
/// (answering `findings` after `delay`) on 127.0.0.1; its base URL and state.
fn serve(findings: Value, delay: Duration) -> Result<(String, web::Data<Upstream>), String> {
    serve_at("127.0.0.1", findings, delay)
}

/// As [`serve`], on `address` (another loopback address is another machine).
fn serve_at(
    address: &str,
    findings: Value,
    delay: Duration,
) -> Result<(String, web::Data<Upstream>), String> {
    let upstream = web::Data::new(Upstream {
        findings: web::Bytes::from(findings.to_string()),
        delay,
        calls: Mutex::new(Vec::new()),
    });
    let state = upstream.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/api/v1/token", web::post().to(token_call))
            .route("/api/v1/vulnerabilities/ip/{ip}", web::get().to(lookup))
            .route("/cifapp/api/", web::post().to(lookup))
    })
    .workers(2)
    .max_connections(100_000)
    .backlog(4096)
    .disable_signals()
    .bind((address, 0))
    .map_err(|error| error.to_string())?;
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    Ok((format!("http://{address}:{port}"), upstream))
}

fn calls(upstream: &Upstream) -> Vec<Instant> {
    upstream
        .calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

// ---------------------------------------------------------------------------
// The relay

struct Relay {
    child: Child,
    port: u16,
}

impl Relay {
    fn start(binary: &str, envs: &[(&str, String)]) -> Result<Relay, String> {
        let port = free_port();
        let child = Command::new(binary)
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("SECRET_KEY", SECRET)
            .env("CYBERSCAN_ALLOW_PRIVATE_HOSTS", "true")
            .env("RUST_LOG", "warn")
            // As the container image and the Kubernetes manifest run it.
            .env("MIMALLOC_PURGE_DELAY", "10")
            .envs(envs.iter().map(|(name, value)| (*name, value.as_str())))
            // The allocator's own options, to compare its settings.
            .envs(std::env::vars().filter(|(name, _)| name.starts_with("MIMALLOC_")))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("{binary}: {error}"))?;
        let relay = Relay { child, port };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(relay);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err("the relay did not start".to_owned())
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/observe/observables", self.port)
    }

    fn rss_kb(&self) -> u64 {
        rss_kb(self.child.id())
    }
}

/// A process's resident memory, in kB (0 when it cannot be read).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or(0)
}

fn token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_default()
}

fn ips(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"type": "ip", "value": format!("{prefix}.{}", i + 1)}))
            .collect(),
    )
}

fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    Tls::new()
        .and_then(|tls| Ok(tls.client_builder(timeout).build()?))
        .map_err(|error| error.to_string())
}

// ---------------------------------------------------------------------------
// Scenarios

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let mut problems = Vec::new();
    let want = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    let mut results = Vec::new();
    if want("memory") {
        results.push(("memory", memory(&args).await));
    }
    if want("disconnect") {
        results.push(("disconnect", disconnect(&args).await));
    }
    if want("tenants") {
        results.push(("tenants", tenants(&args).await));
    }
    if want("proxy") {
        results.push(("proxy", proxy(&args).await));
    }
    if want("pool") {
        results.push(("pool", isolation::pool().await));
    }
    if want("spellings") {
        results.push(("spellings", isolation::spellings().await));
    }
    if want("json") {
        results.push(("json", isolation::json().await));
    }
    if want("cache") {
        results.push(("cache", isolation::cache().await));
    }
    if want("slow-readers") {
        results.push(("slow readers", isolation::slow_readers().await));
    }
    if want("bounds") {
        results.push(("bounds", isolation::bounds().await));
    }
    for (name, result) in results {
        match result {
            Ok(found) => problems.extend(
                found
                    .into_iter()
                    .map(|problem| format!("{name}: {problem}")),
            ),
            Err(error) => problems.push(format!("{name}: could not run: {error}")),
        }
    }
    if problems.is_empty() {
        println!("\nPASS");
    } else {
        println!();
        for problem in &problems {
            println!("FAIL  {problem}");
        }
        std::process::exit(1);
    }
}

/// Tenants whose CyberScan answers one 10 MiB vulnerability for every IP.
async fn memory(args: &Args) -> Result<Vec<String>, String> {
    let finding = json!({
        "name": "Enormous", "family": "General", "description": "d".repeat(10 * 1024 * 1024 - 200),
        "severity": "High", "port": 22, "protocol": "tcp", "cve": "CVE-2026-0001", "cvss": 9.8
    });
    let (host, upstream) = serve(json!({"vulnerabilities": [finding]}), Duration::ZERO)?;
    let relay = Relay::start(&args.relay, &[])?;
    let idle_kb = relay.rss_kb();
    let http = client(Duration::from_secs(60))?;
    let tokens: Vec<String> = (0..8)
        .map(|n| token(&json!({"api_key": format!("tenant-{n}"), "host": host})))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let peak_kb = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak_kb) = (stop.clone(), peak_kb.clone());
        let pid = relay.child.id();
        actix_web::rt::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak_kb.fetch_max(rss_kb(pid), Ordering::Relaxed);
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let largest_answer = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut connections = Vec::new();
    for (n, token) in tokens.into_iter().enumerate() {
        let (http, url) = (http.clone(), relay.url());
        let (largest_answer, answers, limited) =
            (largest_answer.clone(), answers.clone(), limited.clone());
        connections.push(actix_web::rt::spawn(async move {
            for round in 0..3 {
                let body = ips(&format!("10.{n}.{round}"), 20);
                let Ok(response) = http.post(&url).bearer_auth(&token).json(&body).send().await
                else {
                    continue;
                };
                let Ok(text) = response.text().await else {
                    continue;
                };
                answers.fetch_add(1, Ordering::Relaxed);
                largest_answer.fetch_max(text.len(), Ordering::Relaxed);
                if text.contains("REQUEST_MAX_UPSTREAM_BYTES") || text.contains("MAX_HELD_BYTES") {
                    limited.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for connection in connections {
        let _ = connection.await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let peak_mb = peak_kb.load(Ordering::Relaxed) as f64 / 1024.0;
    let largest = largest_answer.load(Ordering::Relaxed);
    println!(
        "\n== memory: 8 tenants × 3 requests × 20 IPs, each answered with one 10 MiB vulnerability"
    );
    println!(
        "relay RSS idle:                {:.1} MB",
        idle_kb as f64 / 1024.0
    );
    println!(
        "relay RSS peak:                {peak_mb:.1} MB (bound {} MB)",
        args.max_rss_mb
    );
    println!(
        "answers:                       {}",
        answers.load(Ordering::Relaxed)
    );
    println!(
        "answers stopped at a limit:    {}",
        limited.load(Ordering::Relaxed)
    );
    println!(
        "largest answer:                {:.1} KB",
        largest as f64 / 1024.0
    );
    println!("upstream lookups served:       {}", calls(&upstream).len());
    println!(
        "seconds:                       {:.1}",
        started.elapsed().as_secs_f64()
    );
    let mut problems = Vec::new();
    if peak_mb > args.max_rss_mb as f64 {
        problems.push(format!(
            "peak RSS {peak_mb:.1} MB over {} MB",
            args.max_rss_mb
        ));
    }
    if largest > 16 * 1024 * 1024 {
        problems.push(format!(
            "an answer of {largest} bytes, over REQUEST_MAX_RESPONSE_BYTES"
        ));
    }
    if answers.load(Ordering::Relaxed) != 24 {
        problems.push("not every request was answered".to_owned());
    }
    Ok(problems)
}

/// A caller who gives up after 1 s on 96 lookups of a slow C1fApp.
async fn disconnect(args: &Args) -> Result<Vec<String>, String> {
    let record = json!({
        "feed_label": ["Slow"], "domain": ["slow.example"], "description": ["-"], "derived": "direct",
        "address": ["-"], "ip_address": ["192.0.2.10"], "asn": ["-"], "confidence": [90],
        "country": ["-"], "reportime": ["2026-01-01"], "source": ["https://feed.example/1"],
        "asn_desc": ["-"], "assessment": ["test"]
    });
    let (host, upstream) = serve(json!([record]), Duration::from_millis(800))?;
    let relay = Relay::start(
        &args.relay,
        &[("C1FAPP_API_URL", format!("{host}/cifapp/api/"))],
    )?;
    let http = client(Duration::from_secs(1))?;
    let gave_up = http
        .post(relay.url())
        .bearer_auth(token(&json!({"key": "impatient-key"})))
        .json(&ips("198.51.100", 96))
        .send()
        .await;
    let left = Instant::now();
    actix_web::rt::time::sleep(Duration::from_secs(4)).await;
    let seen = calls(&upstream);
    // A call already on its way when the caller left may land a moment later.
    let after = seen
        .iter()
        .filter(|at| **at > left + Duration::from_millis(100))
        .count();
    println!("\n== disconnect: 96 lookups of 800 ms, 32 at a time; the caller leaves after 1 s");
    println!(
        "caller's request:              {}",
        if gave_up.is_err() {
            "timed out"
        } else {
            "answered"
        }
    );
    println!("upstream calls made:           {} (of 96)", seen.len());
    println!("upstream calls after it left:  {after}");
    let mut problems = Vec::new();
    if gave_up.is_ok() {
        problems.push("the request was answered within 1 s".to_owned());
    }
    if after > 0 {
        problems.push(format!(
            "{after} upstream calls started after the caller left"
        ));
    }
    Ok(problems)
}

/// Tenant A floods while its CyberScan host stalls; tenant B asks a healthy one.
async fn tenants(args: &Args) -> Result<Vec<String>, String> {
    // Tenant A's host is another machine than tenant B's.
    let (stalling, _) = serve_at(
        "127.0.0.2",
        json!({"vulnerabilities": []}),
        Duration::from_secs(60),
    )?;
    let finding = json!({"name": "OpenSSH", "cve": "CVE-2020-15778", "port": 22});
    let (healthy, _) = serve(json!({"vulnerabilities": [finding]}), Duration::ZERO)?;
    let relay = Relay::start(
        &args.relay,
        &[("UPSTREAM_TIMEOUT_SECONDS", "30".to_owned())],
    )?;
    let http = client(Duration::from_secs(60))?;
    let tenant_a = token(&json!({"api_key": "tenant-a", "host": stalling}));
    // 40 requests of 100 lookups, 32 at a time each: more than the 1,024
    // places the provider has.
    let mut flood = Vec::new();
    for n in 0..40 {
        let (http, url, token) = (http.clone(), relay.url(), tenant_a.clone());
        flood.push(actix_web::rt::spawn(async move {
            let _ = http
                .post(&url)
                .bearer_auth(&token)
                .json(&ips(&format!("10.20.{n}"), 100))
                .send()
                .await;
        }));
    }
    actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
    let asked = isolation::ask_cyberscan(&relay, &healthy, 20).await?;
    let mut latencies: Vec<Duration> = asked.iter().map(|(latency, _)| *latency).collect();
    let with_data = asked.iter().filter(|(_, with_data)| *with_data).count();
    for request in flood {
        request.abort();
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let slowest = latencies[latencies.len() - 1];
    println!(
        "\n== tenants: A floods 40 requests × 100 IPs at a stalling CyberScan; B asks 20 times"
    );
    println!("tenant B answers with data:    {with_data} of 20");
    println!(
        "tenant B latency, median:      {:.1} ms",
        median.as_secs_f64() * 1000.0
    );
    println!(
        "tenant B latency, slowest:     {:.1} ms (bound {} ms)",
        slowest.as_secs_f64() * 1000.0,
        args.max_tenant_b_ms
    );
    let mut problems = Vec::new();
    if with_data != 20 {
        problems.push(format!("tenant B got its data {with_data} times of 20"));
    }
    if slowest > Duration::from_millis(args.max_tenant_b_ms) {
        problems.push(format!("tenant B waited {slowest:?}"));
    }
    Ok(problems)
}

/// Environment proxies and tokens naming internal CyberScan hosts.
async fn proxy(args: &Args) -> Result<Vec<String>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| error.to_string())?;
    let proxy = format!(
        "http://{}",
        listener.local_addr().map_err(|error| error.to_string())?
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let accept = {
        let hits = hits.clone();
        actix_web::rt::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                hits.fetch_add(1, Ordering::Relaxed);
                drop(stream);
            }
        })
    };
    let envs: Vec<(&str, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, proxy.clone()))
    .chain([("CYBERSCAN_ALLOW_PRIVATE_HOSTS", "false".to_owned())])
    .collect();
    let relay = Relay::start(&args.relay, &envs)?;
    let http = client(Duration::from_secs(30))?;
    let hosts = [
        "localhost:8500",
        "http://localhost:8500",
        "http://127.0.0.1:8500",
        "http://169.254.169.254",
        "http://[::1]:8500",
    ];
    let mut refused = 0;
    for host in hosts {
        let answer: Value = match http
            .post(relay.url())
            .bearer_auth(token(&json!({"api_key": "proxy-test-key", "host": host})))
            .json(&json!([{"type": "ip", "value": "192.0.2.10"}]))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("private or local address"))
        {
            refused += 1;
        }
    }
    accept.abort();
    let hits = hits.load(Ordering::Relaxed);
    println!("\n== proxy: HTTP(S)_PROXY and ALL_PROXY set; tokens name 5 internal CyberScan hosts");
    println!(
        "refused as private or local:   {refused} of {}",
        hosts.len()
    );
    println!("proxy hits:                    {hits}");
    let mut problems = Vec::new();
    if hits > 0 {
        problems.push(format!("the proxy received {hits} connections"));
    }
    if refused != hosts.len() {
        problems.push(format!(
            "only {refused} of {} hosts were refused",
            hosts.len()
        ));
    }
    Ok(problems)
}
