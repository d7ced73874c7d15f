//! The load test of `scripts/load-test.sh`: many connections for a while,
//! valid and invalid requests mixed, against a relay whose upstream is
//! `examples/mock_upstream.rs`. Passes (exit 0) when no answer was a 5xx or a
//! transport error, every valid answer carried all its results, every invalid
//! one its expected error, /watchdog answered throughout, and the relay's
//! memory stayed bounded and did not grow.
//!
//! ```sh
//! cargo run --example load_test -- --relay http://127.0.0.1:9090 --relay-pid <pid> \
//!     --secret-key <SECRET_KEY> --cyberscan-host http://127.0.0.1:8081
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(about = "Load test of a running relay")]
struct Args {
    /// The relay's base URL.
    #[arg(long)]
    relay: String,
    /// The relay's process id, for its memory (from /proc).
    #[arg(long)]
    relay_pid: u32,
    /// The relay's SECRET_KEY, to mint tokens.
    #[arg(long)]
    secret_key: String,
    /// The CyberScan address tokens carry (the mock upstream).
    #[arg(long)]
    cyberscan_host: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Fail when the relay's resident memory exceeds this many MB.
    #[arg(long, default_value_t = 256)]
    max_rss_mb: u64,
    /// Fail when /watchdog takes longer than this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    watchdog_timeout_ms: u64,
}

/// One kind of request and what its answer must be.
#[derive(Debug, Clone)]
struct Kind {
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    authorization: Option<String>,
    body: Vec<u8>,
    expect: Expect,
}

#[derive(Debug, Clone)]
enum Expect {
    /// HTTP 200, no `errors`, and the same entity counts as the reference
    /// answer taken before the load.
    Data,
    /// This HTTP status and this CTIM error code.
    Error(u16, &'static str),
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    server_errors: u64,
    transport_errors: u64,
    wrong: u64,
    first_problem: Option<String>,
}

fn token(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

fn kinds(args: &Args) -> Vec<Kind> {
    let c1fapp = format!(
        "Bearer {}",
        token(&args.secret_key, &json!({"key": "load-test-key"}))
    );
    let both = format!(
        "Bearer {}",
        token(
            &args.secret_key,
            &json!({"key": "load-test-key", "api_key": "load-test-key", "host": args.cyberscan_host})
        )
    );
    let mut tampered = c1fapp.clone();
    tampered.pop();
    tampered.push(if c1fapp.ends_with('A') { 'B' } else { 'A' });
    let json = |value: Value| value.to_string().into_bytes();
    let observe = reqwest::Method::POST;
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"type": "ip", "value": format!("10.0.{}.{}", i / 256, i % 256)}))
        .collect();
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let kind = |name, path, authorization: &str, body: Vec<u8>, expect| Kind {
        name,
        method: observe.clone(),
        path,
        authorization: (!authorization.is_empty()).then(|| authorization.to_owned()),
        body,
        expect,
    };
    vec![
        kind(
            "observe 1 ip, C1fApp",
            "/observe/observables",
            &c1fapp,
            json(json!([{"type": "ip", "value": "192.0.2.10"}])),
            Expect::Data,
        ),
        kind(
            "observe 3 observables, C1fApp",
            "/observe/observables",
            &c1fapp,
            json(json!([
                {"type": "ip", "value": "192.0.2.11"},
                {"type": "domain", "value": "login.example.net"},
                {"type": "url", "value": "https://login.example.net/?session=abc"}
            ])),
            Expect::Data,
        ),
        kind(
            "observe ip + domain, both providers",
            "/observe/observables",
            &both,
            json(json!([
                {"type": "ip", "value": "192.0.2.12"},
                {"type": "domain", "value": "login.example.net"}
            ])),
            Expect::Data,
        ),
        kind(
            "deliberate 2 observables",
            "/deliberate/observables",
            &c1fapp,
            json(json!([
                {"type": "ip", "value": "192.0.2.13"},
                {"type": "domain", "value": "login.example.net"}
            ])),
            Expect::Data,
        ),
        kind(
            "refer, CyberScan",
            "/refer/observables",
            &both,
            json(json!([{"type": "ip", "value": "192.0.2.14"}])),
            Expect::Data,
        ),
        kind(
            "tampered token",
            "/observe/observables",
            &tampered,
            json(json!([{"type": "ip", "value": "192.0.2.10"}])),
            Expect::Error(200, "authorization error"),
        ),
        kind(
            "no token",
            "/observe/observables",
            "",
            json(json!([{"type": "ip", "value": "192.0.2.10"}])),
            Expect::Error(200, "authorization error"),
        ),
        kind(
            "17 KiB Authorization header",
            "/observe/observables",
            &format!("Bearer {}", "a".repeat(17 * 1024)),
            json(json!([{"type": "ip", "value": "192.0.2.10"}])),
            Expect::Error(200, "authorization error"),
        ),
        kind(
            "body not JSON",
            "/observe/observables",
            &c1fapp,
            b"{not json".to_vec(),
            Expect::Error(200, "invalid argument"),
        ),
        kind(
            "deeply nested JSON",
            "/observe/observables",
            &c1fapp,
            nested,
            Expect::Error(200, "invalid argument"),
        ),
        kind(
            "1,001 observables",
            "/observe/observables",
            &c1fapp,
            json(Value::Array(many)),
            Expect::Error(200, "invalid argument"),
        ),
        kind(
            "1.5 MiB body",
            "/observe/observables",
            &c1fapp,
            vec![b' '; 1536 * 1024],
            Expect::Error(413, "payload too large"),
        ),
        kind(
            "unknown route",
            "/observe/everything",
            &c1fapp,
            json(json!([])),
            Expect::Error(404, "not found"),
        ),
    ]
}

/// The entity counts of an answer: `data.<entity>.count` for each entity.
fn counts(answer: &Value) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    if let Some(data) = answer.get("data").and_then(Value::as_object) {
        for (entity, docs) in data {
            let count = docs.get("count").and_then(Value::as_u64).unwrap_or(0);
            counts.insert(entity.clone(), count);
        }
    }
    if let Some(list) = answer.get("data").and_then(Value::as_array) {
        counts.insert("references".to_owned(), list.len() as u64);
    }
    counts
}

async fn send(
    http: &reqwest::Client,
    relay: &str,
    kind: &Kind,
) -> Result<(u16, Value), reqwest::Error> {
    let mut request = http
        .request(kind.method.clone(), format!("{relay}{}", kind.path))
        .header("content-type", "application/json")
        .body(kind.body.clone());
    if let Some(authorization) = &kind.authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// What is wrong with an answer, if anything.
fn check(
    kind: &Kind,
    status: u16,
    answer: &Value,
    reference: &BTreeMap<String, u64>,
) -> Option<String> {
    match &kind.expect {
        Expect::Data => {
            if status != 200 || answer.get("errors").is_some() {
                return Some(format!("HTTP {status} {answer}"));
            }
            let found = counts(answer);
            (&found != reference).then(|| format!("counts {found:?}, expected {reference:?}"))
        }
        Expect::Error(expected_status, code) => {
            let got = answer["errors"][0]["code"].as_str().unwrap_or("");
            (status != *expected_status || got != *code)
                .then(|| format!("HTTP {status} {got:?}, expected HTTP {expected_status} {code:?}"))
        }
    }
}

fn client(connections: usize) -> Result<reqwest::Client, String> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| error.to_string())?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|error| error.to_string())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => println!("PASS"),
        Err(problems) => {
            for problem in problems {
                println!("FAIL  {problem}");
            }
            std::process::exit(1);
        }
    }
}

async fn run(args: &Args) -> Result<(), Vec<String>> {
    let kinds = Arc::new(kinds(args));
    let http = client(args.connections).map_err(|error| vec![error])?;

    // The reference answer of each valid kind, before any load.
    let mut references = Vec::new();
    for kind in kinds.iter() {
        let reference = match kind.expect {
            Expect::Data => {
                let (status, answer) = send(&http, &args.relay, kind)
                    .await
                    .map_err(|error| vec![format!("{}: {error}", kind.name)])?;
                if status != 200 || answer.get("errors").is_some() || counts(&answer).is_empty() {
                    return Err(vec![format!(
                        "{}: the reference answer is not data: HTTP {status} {answer}",
                        kind.name
                    )]);
                }
                counts(&answer)
            }
            Expect::Error(..) => BTreeMap::new(),
        };
        references.push(reference);
    }
    let references = Arc::new(references);
    let tallies: Arc<Vec<Mutex<Tally>>> =
        Arc::new(kinds.iter().map(|_| Mutex::new(Tally::default())).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // The load: each connection walks the kinds, starting at its own offset.
    let mut workers = Vec::new();
    for connection in 0..args.connections {
        let (http, kinds, references, tallies, stop) = (
            http.clone(),
            kinds.clone(),
            references.clone(),
            tallies.clone(),
            stop.clone(),
        );
        let relay = args.relay.clone();
        workers.push(tokio::spawn(async move {
            let mut index = connection % kinds.len();
            while !stop.load(Ordering::Relaxed) {
                let kind = &kinds[index];
                let result = send(&http, &relay, kind).await;
                let mut tally = tallies[index].lock().await;
                tally.sent += 1;
                let problem = match result {
                    Err(error) => {
                        tally.transport_errors += 1;
                        Some(format!("transport error: {error}"))
                    }
                    Ok((status, _)) if status >= 500 => {
                        tally.server_errors += 1;
                        Some(format!("HTTP {status}"))
                    }
                    Ok((status, answer)) => {
                        match check(kind, status, &answer, &references[index]) {
                            Some(problem) => {
                                tally.wrong += 1;
                                Some(problem)
                            }
                            None => {
                                tally.ok += 1;
                                None
                            }
                        }
                    }
                };
                if tally.first_problem.is_none() {
                    tally.first_problem = problem;
                }
                drop(tally);
                index = (index + 1) % kinds.len();
            }
        }));
    }

    // /watchdog on its own connection, every 100 ms; memory every 250 ms.
    let watchdog = {
        let (relay, stop) = (args.relay.clone(), stop.clone());
        let timeout = Duration::from_millis(args.watchdog_timeout_ms);
        let http = client(1).map_err(|error| vec![error])?;
        tokio::spawn(async move {
            let (mut answered, mut failed, mut slowest) = (0u64, 0u64, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let result = http
                    .get(format!("{relay}/watchdog"))
                    .header("Health-Check", "load-test")
                    .timeout(timeout)
                    .send()
                    .await;
                let took = asked.elapsed();
                slowest = slowest.max(took);
                match result {
                    Ok(response) if response.status() == 200 => answered += 1,
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100).saturating_sub(took)).await;
            }
            (answered, failed, slowest)
        })
    };
    let memory = {
        let (pid, stop) = (args.relay_pid, stop.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    samples.push(kb);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            samples
        })
    };

    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (answered, watchdog_failed, slowest) = watchdog.await.unwrap_or_default();
    let samples = memory.await.unwrap_or_default();

    // Report.
    let mut problems = Vec::new();
    println!(
        "{} connections, {:.1} s\n\n| request | sent | ok | 5xx | transport errors | wrong |\n|---|---:|---:|---:|---:|---:|",
        args.connections, elapsed
    );
    let mut total = 0;
    for (kind, tally) in kinds.iter().zip(tallies.iter()) {
        let tally = tally.lock().await;
        total += tally.sent;
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            kind.name,
            tally.sent,
            tally.ok,
            tally.server_errors,
            tally.transport_errors,
            tally.wrong
        );
        if tally.ok != tally.sent || tally.sent == 0 {
            problems.push(format!(
                "{}: {} of {} not as expected; first: {}",
                kind.name,
                tally.sent - tally.ok,
                tally.sent,
                tally.first_problem.as_deref().unwrap_or("none sent")
            ));
        }
    }
    println!(
        "\n{total} requests, {:.0} requests/s",
        total as f64 / elapsed
    );
    println!(
        "/watchdog: {answered} answered, {watchdog_failed} failed, slowest {:.1} ms",
        slowest.as_secs_f64() * 1000.0
    );
    if watchdog_failed > 0 || answered == 0 {
        problems.push(format!("/watchdog failed {watchdog_failed} times"));
    }
    // Memory: bounded (the peak under --max-rss-mb), and not growing. In a
    // short run the working set (pooled connections, allocator arenas) is
    // still reaching its size through the first half, so growth is judged
    // against the first half's peak: the last quarter's mean must stay within
    // 10 % (or 2 MB) of it. A leak of even 1 KB per request adds over 10 MB
    // in the second half of a 30 s run.
    let peak = samples.iter().copied().max().unwrap_or(0);
    let quarter = samples.len() / 4;
    let mean = |part: &[u64]| part.iter().sum::<u64>() as f64 / part.len().max(1) as f64 / 1024.0;
    let first_half_peak = samples[..samples.len() / 2]
        .iter()
        .copied()
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    let last = mean(&samples[samples.len() - quarter..]);
    println!(
        "relay RSS: peak {:.1} MB; first-half peak {first_half_peak:.1} MB, last-quarter mean {last:.1} MB",
        peak as f64 / 1024.0
    );
    if samples.is_empty() {
        problems.push("the relay's memory could not be read".to_owned());
    }
    if peak / 1024 > args.max_rss_mb {
        problems.push(format!(
            "relay RSS peaked at {} MB, over {} MB",
            peak / 1024,
            args.max_rss_mb
        ));
    }
    if last > first_half_peak * 1.10 && last - first_half_peak > 2.0 {
        problems.push(format!(
            "relay RSS grew: last-quarter mean {last:.1} MB, first-half peak {first_half_peak:.1} MB"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
