//! A rolling restart under load, as Kubernetes does it (`scripts/rolling-restart.sh`):
//! a relay with several workers serves steady traffic on many connections, gets
//! SIGTERM in the middle, and must answer every request it accepted before the
//! signal with its data, refuse new connections, and exit 0 within its grace
//! period. Several rounds, each with a new relay.
//!
//! With `--delay N` (the relay's `SHUTDOWN_DELAY_SECONDS`) it plays the load
//! balancer too, as Kubernetes' readiness probe and endpoints do: it asks
//! `/readyz` every 250 ms and, once that answers 503, sends no new request.
//! Then not one connection may be refused and not one request fail, and the
//! listener must still be open 300 ms after the signal.
//!
//! The upstream is served here (C1fApp's shape) and records every value it is
//! asked about: a request the relay accepted is one whose lookup reached the
//! upstream. Each request asks about a value of its own, so every answer can be
//! matched to its request. Most lookups take 20–200 ms; those of a few
//! connections take seconds, as a slow lookup among fast ones does: at SIGTERM
//! the workers without a slow lookup finish first and stop while others still
//! work — which is when a worker must not take with it a connection another is
//! using.
//!
//! ```sh
//! cargo run --example rolling_restart -- --relay target/release/ctr-relay
//! ```

use std::collections::HashSet;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use ctr_relay::outbound::Tls;
use jsonwebtoken::{EncodingKey, Header};
use rand::Rng;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "SIGTERM a relay under load; every accepted request must be answered")]
struct Args {
    /// The relay binary.
    #[arg(long)]
    relay: String,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Of which this many ask only slow questions.
    #[arg(long, default_value_t = 2)]
    slow_connections: usize,
    /// How long a slow lookup takes upstream, milliseconds.
    #[arg(long, default_value_t = 3000)]
    slow_ms: u64,
    /// Relay workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds of load before SIGTERM.
    #[arg(long, default_value_t = 5)]
    before: u64,
    /// The relay's SHUTDOWN_GRACE_SECONDS.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Rounds, each with a new relay.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The relay's SHUTDOWN_DELAY_SECONDS; above 0, the load follows /readyz.
    #[arg(long, default_value_t = 0)]
    delay: u64,
}

/// Values asked about on slow connections start with this.
const SLOW_PREFIX: &str = "172.16.";
/// The range of a fast lookup's upstream latency, milliseconds.
const FAST_MS: std::ops::RangeInclusive<u64> = 20..=200;

/// What became of one request.
#[derive(Debug)]
enum Fate {
    /// HTTP 200 with a sighting of the value asked about.
    Answered,
    /// An answer, but not the data asked for (an error, another status).
    Wrong(String),
    /// No answer: refused, or the connection closed before an answer.
    NoAnswer(String),
}

impl Fate {
    fn detail(&self) -> &str {
        match self {
            Fate::Answered => "answered",
            Fate::Wrong(detail) | Fate::NoAnswer(detail) => detail,
        }
    }
}

struct Sent {
    value: String,
    at: Instant,
    fate: Fate,
}

struct Upstream {
    seen: Mutex<HashSet<String>>,
    slow: Duration,
    record: String,
}

async fn c1fapp(upstream: web::Data<Upstream>, body: web::Bytes) -> HttpResponse {
    let value = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body["request"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let latency = if value.starts_with(SLOW_PREFIX) {
        upstream.slow
    } else {
        Duration::from_millis(rand::rng().random_range(FAST_MS))
    };
    upstream
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(value);
    actix_web::rt::time::sleep(latency).await;
    HttpResponse::Ok()
        .content_type("application/json")
        .body(upstream.record.clone())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or(0)
}

fn wait_until_listening(port: u16) -> bool {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The answer carries a sighting of `value`, and no error.
fn has_its_data(answer: &Value, value: &str) -> bool {
    answer.get("errors").is_none()
        && answer["data"]["sightings"]["docs"]
            .as_array()
            .is_some_and(|docs| {
                docs.iter()
                    .any(|doc| doc["observables"][0]["value"] == value)
            })
}

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let upstream = web::Data::new(Upstream {
        seen: Mutex::new(HashSet::new()),
        slow: Duration::from_millis(args.slow_ms),
        record: json!([{
            "feed_label": ["Rolling"], "domain": ["rolling.example"], "description": ["-"],
            "derived": "direct", "address": ["-"], "ip_address": ["192.0.2.10"], "asn": ["-"],
            "confidence": [90], "country": ["-"], "reportime": ["2026-01-01"],
            "source": ["https://feed.example/1"], "asn_desc": ["-"], "assessment": ["test"]
        }])
        .to_string(),
    });
    let upstream_port = free_port();
    let server = {
        let upstream = upstream.clone();
        HttpServer::new(move || {
            App::new()
                .app_data(upstream.clone())
                .route("/cifapp/api/", web::post().to(c1fapp))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", upstream_port))
    };
    let server = match server {
        Ok(server) => server.run(),
        Err(error) => {
            println!("FAIL  upstream: {error}");
            std::process::exit(1);
        }
    };
    let handle = server.handle();
    actix_web::rt::spawn(server);

    println!(
        "{} connections ({} of them slow, {} ms), {} workers, SIGTERM after {} s, fast lookups {}-{} ms",
        args.connections,
        args.slow_connections,
        args.slow_ms,
        args.workers,
        args.before,
        FAST_MS.start(),
        FAST_MS.end()
    );
    if args.delay > 0 {
        println!(
            "SHUTDOWN_DELAY_SECONDS={}: the load follows /readyz, as a Service's endpoints do",
            args.delay
        );
    }
    let mut failed = false;
    for round in 1..=args.rounds {
        println!("\nround {round}");
        if let Err(problems) = round_of(&args, &upstream, upstream_port).await {
            for problem in problems {
                println!("FAIL  round {round}: {problem}");
            }
            failed = true;
        }
    }
    handle.stop(false).await;
    if failed {
        std::process::exit(1);
    }
    println!("\nPASS");
}

/// One relay, loaded, signalled, and reckoned with.
async fn round_of(args: &Args, upstream: &Upstream, upstream_port: u16) -> Result<(), Vec<String>> {
    let fail = |message: String| vec![message];
    let port = free_port();
    let secret = "rolling-restart-secret-key-0123456789";
    let mut relay = Command::new(&args.relay)
        .env_clear()
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("SECRET_KEY", secret)
        .env(
            "C1FAPP_API_URL",
            format!("http://127.0.0.1:{upstream_port}/cifapp/api/"),
        )
        .env("WORKERS", args.workers.to_string())
        .env("SHUTDOWN_GRACE_SECONDS", args.grace.to_string())
        .env("SHUTDOWN_DELAY_SECONDS", args.delay.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| fail(format!("{}: {error}", args.relay)))?;
    if !wait_until_listening(port) {
        let _ = relay.kill();
        return Err(fail("the relay did not start".to_owned()));
    }
    let token = format!(
        "Bearer {}",
        jsonwebtoken::encode(
            &Header::default(),
            &json!({"key": "rolling-restart-key"}),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|error| fail(error.to_string()))?
    );

    // The load: each connection asks about values of its own, one at a time.
    let tls = Tls::new().map_err(|error| fail(error.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let url = format!("http://127.0.0.1:{port}/observe/observables");
    let mut clients = Vec::new();
    for connection in 0..args.connections {
        let slow = connection < args.slow_connections;
        let (stop, counter, url, token, tls) = (
            stop.clone(),
            counter.clone(),
            url.clone(),
            token.clone(),
            tls.clone(),
        );
        clients.push(actix_web::rt::spawn(async move {
            // One client per connection, with one pooled connection.
            let Ok(http) = tls
                .client_builder(Duration::from_secs(60))
                .pool_max_idle_per_host(1)
                .build()
            else {
                return Vec::new();
            };
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let value = match slow {
                    true => format!("{SLOW_PREFIX}{}.{}", (n >> 8) & 255, n & 255),
                    false => format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
                };
                let at = Instant::now();
                let result = http
                    .post(&url)
                    .header("authorization", &token)
                    .json(&json!([{"type": "ip", "value": value}]))
                    .send()
                    .await;
                let fate = match result {
                    Err(error) => Fate::NoAnswer(error.to_string()),
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.json::<Value>().await {
                            Ok(answer) if status == 200 && has_its_data(&answer, &value) => {
                                Fate::Answered
                            }
                            Ok(answer) => Fate::Wrong(format!("HTTP {status} {answer}")),
                            Err(error) => Fate::NoAnswer(format!("body: {error}")),
                        }
                    }
                };
                let failed = matches!(fate, Fate::NoAnswer(_));
                sent.push(Sent { value, at, fate });
                if failed {
                    // The relay is going away: do not spin.
                    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                }
            }
            sent
        }));
    }

    // The balancer: out of rotation once /readyz says so (with a delay).
    let out_of_rotation = Arc::new(Mutex::new(None::<Instant>));
    let balancer = (args.delay > 0).then(|| {
        let (stop, out, tls) = (stop.clone(), out_of_rotation.clone(), tls.clone());
        let readyz = format!("http://127.0.0.1:{port}/readyz");
        actix_web::rt::spawn(async move {
            let Ok(http) = tls.client_builder(Duration::from_secs(1)).build() else {
                return;
            };
            loop {
                actix_web::rt::time::sleep(Duration::from_millis(250)).await;
                let ready = matches!(http.get(&readyz).send().await, Ok(r) if r.status() == 200);
                if !ready {
                    *out.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        })
    });

    actix_web::rt::time::sleep(Duration::from_secs(args.before)).await;
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status()
        .map_err(|error| fail(format!("kill: {error}")))?;
    if !killed.success() {
        return Err(fail("kill -TERM failed".to_owned()));
    }
    // New connections must be refused once the relay has begun to stop.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let refused = TcpStream::connect(("127.0.0.1", port)).is_err();

    // The relay must exit by itself, within its delay and grace period.
    let allowed = Duration::from_secs(args.delay + args.grace);
    let deadline = allowed + Duration::from_secs(5);
    let exit = loop {
        match relay.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if signalled.elapsed() < deadline => {
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break None,
        }
    };
    let exited_after = signalled.elapsed();
    if exit.is_none() {
        let _ = relay.kill();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(balancer) = balancer {
        let _ = balancer.await;
    }
    let left_rotation = out_of_rotation
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .map(|at| at.saturating_duration_since(signalled));
    let mut sent = Vec::new();
    for client in clients {
        sent.extend(client.await.unwrap_or_default());
    }

    // The reckoning.
    let seen = std::mem::take(
        &mut *upstream
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let count = |keep: &dyn Fn(&Sent) -> bool| sent.iter().filter(|s| keep(s)).count();
    let before_signal = count(&|s| s.at < signalled);
    let answered = count(&|s| matches!(s.fate, Fate::Answered));
    let slow_answered =
        count(&|s| matches!(s.fate, Fate::Answered) && s.value.starts_with(SLOW_PREFIX));
    let wrong: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(s.fate, Fate::Wrong(_)))
        .collect();
    let unanswered: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(s.fate, Fate::NoAnswer(_)))
        .collect();
    let lost: Vec<&&Sent> = unanswered
        .iter()
        .filter(|s| seen.contains(&s.value))
        .collect();
    let unanswered_before_signal = unanswered.iter().filter(|s| s.at < signalled).count();

    println!("  requests sent:                      {}", sent.len());
    println!("    sent before SIGTERM:              {before_signal}");
    println!("  accepted by the relay (upstream):   {}", seen.len());
    println!("  answered 200 with their data:       {answered}");
    println!("    of which slow lookups:            {slow_answered}");
    println!("  answered wrongly:                   {}", wrong.len());
    println!("  not accepted (refused / closed):    {}", unanswered.len());
    println!("    of which sent before SIGTERM:     {unanswered_before_signal}");
    println!("  accepted but not answered (lost):   {}", lost.len());
    println!(
        "  new connection 300 ms after SIGTERM: {}",
        if refused { "refused" } else { "accepted" }
    );
    if let Some(after) = left_rotation {
        println!(
            "  out of rotation (/readyz 503) after: {:.2} s (delay {} s)",
            after.as_secs_f64(),
            args.delay
        );
    }
    match exit {
        Some(status) => println!(
            "  relay exit:                         {} after {:.2} s (grace {} s)",
            status
                .code()
                .map_or("signal".to_owned(), |code| code.to_string()),
            exited_after.as_secs_f64(),
            args.grace
        ),
        None => println!(
            "  relay exit:                         none within {} s",
            deadline.as_secs()
        ),
    }

    let mut problems = Vec::new();
    if before_signal == 0 || answered == 0 {
        problems.push("no load was served before the signal".to_owned());
    }
    if let Some(first) = wrong.first() {
        problems.push(format!(
            "{} accepted requests were answered without their data; first {}: {}",
            wrong.len(),
            first.value,
            first.fate.detail()
        ));
    }
    if let Some(first) = lost.first() {
        problems.push(format!(
            "{} accepted requests got no answer; first {}: {}",
            lost.len(),
            first.value,
            first.fate.detail()
        ));
    }
    if args.delay == 0 && !refused {
        problems.push("a new connection was accepted after SIGTERM".to_owned());
    }
    if args.delay > 0 {
        if refused {
            problems.push("a new connection was refused during the delay".to_owned());
        }
        if let Some(first) = unanswered.first() {
            problems.push(format!(
                "{} requests were refused or cut off with the delay on; first {}: {}",
                unanswered.len(),
                first.value,
                first.fate.detail()
            ));
        }
        match left_rotation {
            Some(after) if after < Duration::from_secs(args.delay) => {}
            Some(after) => problems.push(format!(
                "/readyz turned 503 only after {:.2} s, not within the {} s delay",
                after.as_secs_f64(),
                args.delay
            )),
            None => problems.push("/readyz never turned 503".to_owned()),
        }
    }
    match exit {
        Some(status) if status.code() == Some(0) && exited_after <= allowed => {}
        Some(status) => problems.push(format!(
            "the relay exited with {status} after {:.2} s (delay {} s, grace {} s)",
            exited_after.as_secs_f64(),
            args.delay,
            args.grace
        )),
        None => problems.push("the relay did not exit".to_owned()),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
