//! Tenant isolation, against the release relay: each scenario starts its own
//! relay, prints its figures, and returns the bounds it found broken.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Relay, calls, client, ips, serve, serve_at, token};

const MIB: usize = 1024 * 1024;

/// The relay binary, from the command line (`--relay`).
fn binary() -> String {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == "--relay")
        .map(|pair| pair[1].clone())
        .unwrap_or_default()
}

/// The relay's peak resident memory while a scenario runs, sampled every 20 ms.
struct PeakRss {
    stop: Arc<AtomicBool>,
    peak_kb: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn start(relay: &Relay) -> Self {
        let (stop, peak_kb) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let pid = relay.child.id();
        let task = {
            let (stop, peak_kb) = (stop.clone(), peak_kb.clone());
            actix_web::rt::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    peak_kb.fetch_max(super::rss_kb(pid), Ordering::Relaxed);
                    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Self {
            stop,
            peak_kb,
            task,
        }
    }

    /// The peak, in MB.
    async fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// An upstream on `address` that hands out CyberScan tokens and answers every
/// other request with `Content-Length: declared`, `sent` bytes of it, then
/// nothing for a minute. Its port and the lookups it received.
async fn announcing(
    address: &str,
    declared: usize,
    sent: usize,
) -> Result<(u16, Arc<AtomicUsize>), String> {
    let listener = tokio::net::TcpListener::bind((address, 0))
        .await
        .map_err(|error| error.to_string())?;
    let port = listener
        .local_addr()
        .map_err(|error| error.to_string())?
        .port();
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = lookups.clone();
    actix_web::rt::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = counted.clone();
            actix_web::rt::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_lowercase();
                    if text.starts_with("post") {
                        let length: usize = text
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0u8; length];
                        let _ = socket.read_exact(&mut body).await;
                        let answer = br#"{"access_token":"announcing-token"}"#;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\n\r\n",
                            answer.len()
                        );
                        let _ = socket.write_all(head.as_bytes()).await;
                        let _ = socket.write_all(answer).await;
                        continue;
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {declared}\r\n\r\n"
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&vec![b' '; sent]).await;
                    actix_web::rt::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
            });
        }
    });
    Ok((port, lookups))
}

fn c1fapp_record() -> Value {
    json!({
        "feed_label": ["Feed"], "domain": ["a.example"], "description": ["-"], "derived": "direct",
        "address": ["https://a.example/"], "ip_address": ["192.0.2.10"], "asn": ["-"],
        "confidence": [90], "country": ["-"], "reportime": ["2026-01-01"],
        "source": ["https://feed.example/1"], "asn_desc": ["-"], "assessment": ["test"]
    })
}

/// One of the relay's metrics without labels (0 when it cannot be read).
async fn metric(relay: &Relay, name: &str) -> u64 {
    let Ok(http) = client(Duration::from_secs(5)) else {
        return 0;
    };
    let url = format!("http://127.0.0.1:{}/metrics", relay.port);
    let Ok(response) = http.get(url).send().await else {
        return 0;
    };
    let prefix = format!("{name} ");
    response
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The relay's `ctr_relay_held_bytes`.
async fn held_bytes(relay: &Relay) -> u64 {
    metric(relay, "ctr_relay_held_bytes").await
}

/// `n` C1fApp lookups by tenant B, one after another: how many came back with
/// data and no error, and the slowest.
async fn tenant_b_c1fapp(relay: &Relay, n: usize) -> (usize, Duration) {
    let Ok(http) = client(Duration::from_secs(10)) else {
        return (0, Duration::MAX);
    };
    let tenant_b = token(&json!({"key": "tenant-b-key"}));
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let asked = Instant::now();
        let answer: Value = match http
            .post(relay.url())
            .bearer_auth(&tenant_b)
            .json(&json!([{"type": "ip", "value": "192.0.2.10"}]))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        slowest = slowest.max(asked.elapsed());
        if answer["data"]["sightings"]["count"] == 1 && answer.get("errors").is_none() {
            answered += 1;
        }
    }
    (answered, slowest)
}

/// Tenant B asks its healthy CyberScan at `host` about `n` IPs, one request
/// each: every latency, and whether that answer held its sighting.
pub async fn ask_cyberscan(
    relay: &Relay,
    host: &str,
    n: usize,
) -> Result<Vec<(Duration, bool)>, String> {
    let http = client(Duration::from_secs(10))?;
    let tenant_b = token(&json!({"api_key": "tenant-b", "host": host}));
    let mut asked = Vec::new();
    for n in 0..n {
        let started = Instant::now();
        let answer: Value = match http
            .post(relay.url())
            .bearer_auth(&tenant_b)
            .json(&json!([{"type": "ip", "value": format!("192.0.2.{}", n + 1)}]))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        asked.push((started.elapsed(), answer["data"]["sightings"]["count"] == 1));
    }
    Ok(asked)
}

/// Sends tenant A's request and forgets it (it never ends by itself).
fn send_and_forget(relay: &Relay, token: String, body: Value) -> tokio::task::JoinHandle<()> {
    let url = relay.url();
    actix_web::rt::spawn(async move {
        if let Ok(http) = client(Duration::from_secs(120)) {
            let _ = http.post(url).bearer_auth(token).json(&body).send().await;
        }
    })
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Item 1: tenant A fills the pool with announced lengths, then with real
/// bytes from its machine; tenant B's C1fApp lookups answer at once.
pub async fn pool() -> Result<Vec<String>, String> {
    let (c1fapp, _) = serve(json!([c1fapp_record()]), Duration::ZERO)?;
    let relay = Relay::start(
        &binary(),
        &[
            ("C1FAPP_API_URL", format!("{c1fapp}/cifapp/api/")),
            ("UPSTREAM_TIMEOUT_SECONDS", "30".to_owned()),
        ],
    )?;
    let mut problems = Vec::new();
    println!("\n== pool: tenant A's CyberScan announces lengths, or sends bytes, then stalls");
    let phases = [
        (
            "announces 64 MiB in 12 answers",
            "127.0.0.2",
            (64 * MIB) / 12 - 20,
            0,
        ),
        (
            "sends 9 MiB of each of 12 answers",
            "127.0.0.3",
            10 * MIB,
            9 * MIB,
        ),
    ];
    for (what, address, declared, sent) in phases {
        let (port, lookups) = announcing(address, declared, sent).await?;
        let host = format!("http://{address}:{port}");
        let tenant_a: Vec<_> = (0..3)
            .map(|n| {
                // Another key each time: the machine's share holds all the same.
                let token = token(&json!({"api_key": format!("tenant-a-{n}"), "host": host}));
                send_and_forget(&relay, token, ips(&format!("10.1.{n}"), 4))
            })
            .collect();
        wait_for(|| lookups.load(Ordering::SeqCst) >= 12).await;
        actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
        let held = held_bytes(&relay).await;
        let (answered, slowest) = tenant_b_c1fapp(&relay, 10).await;
        println!("tenant A {what}");
        println!(
            "  held for the requests:       {:.1} MiB (pool 64 MiB, a tenant's share 16 MiB)",
            held as f64 / MIB as f64
        );
        println!(
            "  tenant B, C1fApp:            {answered} of 10 answered, slowest {:.1} ms",
            slowest.as_secs_f64() * 1000.0
        );
        if answered != 10 || slowest > Duration::from_secs(1) {
            problems.push(format!(
                "tenant A {what}: tenant B {answered} of 10, slowest {slowest:?}"
            ));
        }
        if held > 16 * MIB as u64 {
            problems.push(format!(
                "tenant A {what}: {held} bytes held, over its share"
            ));
        }
        for request in tenant_a {
            request.abort();
        }
    }
    Ok(problems)
}

/// Item 2: tenant A names one stalling machine seven ways; tenant B's
/// CyberScan on another machine answers at once.
pub async fn spellings() -> Result<Vec<String>, String> {
    let (first, first_lookups) = announcing("127.0.0.1", 1000, 0).await?;
    let (second, second_lookups) = announcing("127.0.0.1", 1000, 0).await?;
    let finding = json!({"name": "OpenSSH", "cve": "CVE-2020-15778", "port": 22});
    let (healthy, _) = serve_at(
        "127.0.0.2",
        json!({"vulnerabilities": [finding]}),
        Duration::ZERO,
    )?;
    let relay = Relay::start(
        &binary(),
        &[
            ("UPSTREAM_TIMEOUT_SECONDS", "30".to_owned()),
            ("UPSTREAM_MAX_IN_FLIGHT", "8".to_owned()),
            ("UPSTREAM_MAX_IN_FLIGHT_PER_HOST", "4".to_owned()),
            ("UPSTREAM_MAX_IN_FLIGHT_PER_CREDENTIAL", "4".to_owned()),
            ("LOOKUP_CONCURRENCY", "8".to_owned()),
        ],
    )?;
    let spellings = [
        format!("http://127.0.0.1:{first}"),
        format!("http://localhost:{first}"),
        format!("http://127.0.0.1:{second}"),
        format!("http://127.0.0.1:{first}/"),
        format!("http://localhost.:{first}"),
        format!("http://LOCALHOST:{first}"),
        format!("http://[::ffff:127.0.0.1]:{first}"),
    ];
    let tenant_a: Vec<_> = spellings
        .iter()
        .enumerate()
        .map(|(n, host)| {
            let key = if n % 2 == 0 { "tenant-a" } else { "tenant-a2" };
            let token = token(&json!({"api_key": key, "host": host}));
            send_and_forget(&relay, token, ips(&format!("10.2.{n}"), 8))
        })
        .collect();
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    let held = first_lookups.load(Ordering::SeqCst) + second_lookups.load(Ordering::SeqCst);
    let asked = ask_cyberscan(&relay, &healthy, 10).await?;
    let answered = asked.iter().filter(|(_, with_data)| *with_data).count();
    let slowest = asked
        .iter()
        .map(|(latency, _)| *latency)
        .max()
        .unwrap_or_default();
    for request in tenant_a {
        request.abort();
    }
    println!(
        "\n== spellings: tenant A names one stalling machine 7 ways (2 ports, names, a \
         trailing dot and slash, IPv4-mapped), 8 places, 4 per host and per credential"
    );
    println!("places tenant A's machine holds: {held} (bound 4)");
    println!(
        "tenant B, CyberScan:           {answered} of 10 answered, slowest {:.1} ms",
        slowest.as_secs_f64() * 1000.0
    );
    let mut problems = Vec::new();
    if held > 4 {
        problems.push(format!("tenant A's machine holds {held} places"));
    }
    if answered != 10 || slowest > Duration::from_secs(1) {
        problems.push(format!("tenant B {answered} of 10, slowest {slowest:?}"));
    }
    Ok(problems)
}

/// Item 3: four concurrent 1 MiB bodies `[0,0,…]`; one C1fApp answer whose
/// confidence is an 8 MiB list. Peak RSS above idle.
pub async fn json() -> Result<Vec<String>, String> {
    let mut record = c1fapp_record();
    record["confidence"] = json!([vec![0; 4 * MIB]]);
    let (c1fapp, _) = serve(json!([record]), Duration::ZERO)?;
    let relay = Relay::start(
        &binary(),
        &[("C1FAPP_API_URL", format!("{c1fapp}/cifapp/api/"))],
    )?;
    let http = client(Duration::from_secs(30))?;
    let key = token(&json!({"key": "tenant-key"}));
    // Just under MAX_REQUEST_BYTES (1 MiB).
    let zeros = format!("[{}0]", "0,".repeat(MIB / 2 - 2));
    // Warm up: the first requests grow the relay's buffers once.
    let _ = http
        .post(relay.url())
        .bearer_auth(&key)
        .body("[]")
        .send()
        .await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let idle = relay.rss_kb() as f64 / 1024.0;
    let peak = PeakRss::start(&relay);
    let bodies: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, key, body) = (http.clone(), relay.url(), key.clone(), zeros.clone());
            actix_web::rt::spawn(async move {
                let response = http
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            })
        })
        .collect();
    let mut refused = 0;
    for body in bodies {
        if body
            .await
            .unwrap_or_default()
            .contains("Too many observables")
        {
            refused += 1;
        }
    }
    let bodies_peak = peak.stop().await - idle;
    let idle_before_answer = relay.rss_kb() as f64 / 1024.0;
    let peak = PeakRss::start(&relay);
    let answer: Value = match http
        .post(relay.url())
        .bearer_auth(&key)
        .json(&json!([{"type": "ip", "value": "192.0.2.10"}]))
        .send()
        .await
    {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let answer_peak = peak.stop().await - idle_before_answer;
    println!("\n== json: untrusted JSON is read into types that count as they read");
    println!(
        "4 bodies of 1 MiB [0,0,…]:     {refused} of 4 refused, RSS +{bodies_peak:.1} MB (bound +24 MB)"
    );
    println!(
        "C1fApp confidence of 8 MiB:    {} sighting, RSS +{answer_peak:.1} MB (bound +40 MB)",
        answer["data"]["sightings"]["count"]
    );
    let mut problems = Vec::new();
    if refused != 4 {
        problems.push(format!("{refused} of 4 bodies refused"));
    }
    if bodies_peak > 24.0 {
        problems.push(format!("the bodies took +{bodies_peak:.1} MB"));
    }
    if answer_peak > 40.0 {
        problems.push(format!("the C1fApp answer took +{answer_peak:.1} MB"));
    }
    Ok(problems)
}

/// Item 4: the result cache's byte bound holds in resident memory: 120
/// distinct 3 MiB CyberScan answers with a cache of 32 MiB.
pub async fn cache() -> Result<Vec<String>, String> {
    let finding = json!({"name": "Big", "cve": "CVE-2026-0001", "port": 22,
                         "description": "d".repeat(3 * MIB)});
    let (host, upstream) = serve(json!({"vulnerabilities": [finding]}), Duration::ZERO)?;
    let relay = Relay::start(&binary(), &[("RESULT_CACHE_TTL_SECONDS", "600".to_owned())])?;
    let http = client(Duration::from_secs(60))?;
    let key = token(&json!({"api_key": "tenant-key", "host": host}));
    let peak = PeakRss::start(&relay);
    let mut streams = Vec::new();
    for stream in 0..4 {
        let (http, url, key) = (http.clone(), relay.url(), key.clone());
        streams.push(actix_web::rt::spawn(async move {
            for n in 0..30 {
                let body = json!([{"type": "ip", "value": format!("10.4.{stream}.{n}")}]);
                let _ = http.post(&url).bearer_auth(&key).json(&body).send().await;
            }
        }));
    }
    for stream in streams {
        let _ = stream.await;
    }
    let peak = peak.stop().await;
    println!("\n== cache: 120 distinct 3 MiB CyberScan answers, RESULT_CACHE_TTL_SECONDS=600");
    println!("upstream lookups:              {}", calls(&upstream).len());
    println!("relay RSS peak:                {peak:.1} MB (bound 90 MB)");
    println!(
        "relay RSS after:               {:.1} MB",
        relay.rss_kb() as f64 / 1024.0
    );
    let mut problems = Vec::new();
    if peak > 90.0 {
        problems.push(format!("peak RSS {peak:.1} MB"));
    }
    Ok(problems)
}

/// A caller that asks about `ips` and then reads `rate` bytes a second with
/// a small receive buffer: bytes read before the relay closed the connection
/// (or the whole answer), and how long after its first byte.
async fn slow_reader(port: u16, token: String, ips: Value, rate: usize) -> (usize, Duration, bool) {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return (0, Duration::ZERO, false);
    };
    let _ = socket.set_recv_buffer_size(4096);
    let Ok(mut stream) = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
    else {
        return (0, Duration::ZERO, false);
    };
    let body = ips.to_string();
    let head = format!(
        "POST /observe/observables HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return (0, Duration::ZERO, false);
    }
    let mut first = None;
    let mut received = 0;
    let mut buffer = vec![0u8; rate];
    let started = Instant::now();
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => {
                return (
                    received,
                    first.map_or(Duration::ZERO, |at: Instant| at.elapsed()),
                    true,
                );
            }
            Err(_) => {
                return (
                    received,
                    first.map_or(Duration::ZERO, |at: Instant| at.elapsed()),
                    false,
                );
            }
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                received += n;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            return (received, Duration::MAX, false);
        }
        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Answers of about 16 MB: 100 findings of 4 KB text for each of 40 IPs.
fn large_answers() -> Value {
    let findings: Vec<Value> = (0..100)
        .map(|n| {
            json!({"name": format!("Finding {n}"), "cve": "", "port": 22,
                        "description": "d".repeat(4000)})
        })
        .collect();
    json!({"vulnerabilities": findings})
}

/// Item 5: 20 callers read 16 MB answers at 1 KB/s. Their hosts are four
/// machines and the pool has room for every answer, so that all twenty are
/// made and wait for their readers (`bounds` runs them at the defaults).
/// Judged from the relay's side: a reader drains its own receive buffer
/// after the reset.
pub async fn slow_readers() -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for n in 12..16 {
        hosts.push(serve_at(&format!("127.0.0.{n}"), large_answers(), Duration::ZERO)?.0);
    }
    let relay = Relay::start(
        &binary(),
        &[
            ("ANSWER_SEND_TIMEOUT_SECONDS", "5".to_owned()),
            ("MAX_HELD_BYTES", (1 << 30).to_string()),
            ("MAX_HELD_BYTES_PER_TENANT", (256 << 20).to_string()),
            ("REQUEST_MAX_RESPONSE_BYTES", (64 << 20).to_string()),
            ("UPSTREAM_TIMEOUT_SECONDS", "30".to_owned()),
        ],
    )?;
    let peak = PeakRss::start(&relay);
    let readers: Vec<_> = (0..20)
        .map(|n| {
            let host = &hosts[n % hosts.len()];
            let token = token(&json!({"api_key": format!("reader-{n}"), "host": host}));
            let port = relay.port;
            actix_web::rt::spawn(slow_reader(
                port,
                token,
                ips(&format!("10.5.{n}"), 40),
                1024,
            ))
        })
        .collect();
    // The answers are made within a few seconds; then 5 s to be read.
    let mut held_waiting = 0;
    for _ in 0..8 {
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        held_waiting = held_waiting.max(held_bytes(&relay).await);
    }
    actix_web::rt::time::sleep(Duration::from_secs(10)).await;
    let held_after = held_bytes(&relay).await;
    let cut = metric(&relay, "ctr_relay_answers_timed_out_total").await;
    for reader in readers {
        reader.abort();
    }
    let peak = peak.stop().await;
    println!(
        "\n== slow readers: 20 callers read answers of 16 MB at 1 KB/s (4 hosts, a pool \
         of 1 GiB), ANSWER_SEND_TIMEOUT_SECONDS=5"
    );
    println!(
        "held while they read, at most: {:.1} MiB (the answers count until sent)",
        held_waiting as f64 / MIB as f64
    );
    println!("answers cut at the deadline:   {cut}");
    println!("held after the deadline:       {held_after} bytes");
    println!("relay RSS peak:                {peak:.1} MB");
    let mut problems = Vec::new();
    if cut < 10 {
        problems.push(format!("{cut} answers of 20 were cut at the deadline"));
    }
    if held_waiting == 0 {
        problems.push("the answers waiting for their readers were not counted".to_owned());
    }
    if held_after != 0 {
        problems.push(format!("{held_after} bytes still held after the deadline"));
    }
    Ok(problems)
}

/// The memory limit of the relay's container in `deploy/kubernetes.yaml`, in MB.
fn manifest_limit_mb() -> Option<f64> {
    let manifest = std::fs::read_to_string("deploy/kubernetes.yaml").ok()?;
    let value = manifest
        .lines()
        .find_map(|line| line.split("limits: {memory: ").nth(1))?;
    let mib: f64 = value
        .trim_end_matches('}')
        .trim()
        .strip_suffix("Mi")?
        .parse()
        .ok()?;
    Some(mib * 1.048_576)
}

/// Item 10: every bound at its default at once — the pool full, both
/// providers' places full, the result caches filling, slow readers — and the
/// peak against the manifest's memory limit.
pub async fn bounds() -> Result<Vec<String>, String> {
    let limit = manifest_limit_mb().ok_or("no memory limit in deploy/kubernetes.yaml")?;
    // Stalling C1fApp, stalling CyberScan machines, a 10 MiB answerer, a
    // large-answer host for the slow readers.
    let (c1fapp, _) = serve(json!([c1fapp_record()]), Duration::from_secs(60))?;
    let mut stalling = Vec::new();
    for n in 2..10 {
        stalling.push(
            serve_at(
                &format!("127.0.0.{n}"),
                json!({"vulnerabilities": []}),
                Duration::from_secs(60),
            )?
            .0,
        );
    }
    let enormous = json!({"name": "Enormous", "cve": "CVE-2026-0001", "port": 22,
                          "description": "d".repeat(10 * MIB - 200)});
    let (big, _) = serve_at(
        "127.0.0.10",
        json!({"vulnerabilities": [enormous]}),
        Duration::ZERO,
    )?;
    let (large, _) = serve_at("127.0.0.11", large_answers(), Duration::ZERO)?;
    let relay = Relay::start(
        &binary(),
        &[
            ("C1FAPP_API_URL", format!("{c1fapp}/cifapp/api/")),
            ("UPSTREAM_TIMEOUT_SECONDS", "60".to_owned()),
            ("RESULT_CACHE_TTL_SECONDS", "600".to_owned()),
        ],
    )?;
    let peak = PeakRss::start(&relay);
    let mut load = Vec::new();
    // ABUSE_BOUNDS_PARTS (places,pool,readers) takes the run apart.
    let parts =
        std::env::var("ABUSE_BOUNDS_PARTS").unwrap_or_else(|_| "places,pool,readers".to_owned());
    let part = |name: &str| parts.split(',').any(|part| part == name);
    // C1fApp places: 4 credentials × 8 requests × 32 lookups = 1,024.
    for n in (0..32).filter(|_| part("places")) {
        let token = token(&json!({"key": format!("c1fapp-{}", n % 4)}));
        load.push(send_and_forget(
            &relay,
            token,
            ips(&format!("10.6.{n}"), 32),
        ));
    }
    // CyberScan places: 8 machines × 4 requests × 32 lookups = 1,024.
    for (m, host) in stalling.iter().enumerate().filter(|_| part("places")) {
        for n in 0..4 {
            let token = token(&json!({"api_key": format!("cyberscan-{m}-{n}"), "host": host}));
            load.push(send_and_forget(
                &relay,
                token,
                ips(&format!("10.7.{m}{n}"), 32),
            ));
        }
    }
    // The pool (and the CyberScan cache): 8 tenants of 10 MiB answers.
    for n in (0..8).filter(|_| part("pool")) {
        let token = token(&json!({"api_key": format!("big-{n}"), "host": big}));
        load.push(send_and_forget(
            &relay,
            token,
            ips(&format!("10.8.{n}"), 20),
        ));
    }
    // Slow readers of 16 MB answers.
    let readers: Vec<_> = (0..20)
        .filter(|_| part("readers"))
        .map(|n| {
            let token = token(&json!({"api_key": format!("reader-{n}"), "host": large}));
            actix_web::rt::spawn(slow_reader(
                relay.port,
                token,
                ips(&format!("10.9.{n}"), 40),
                1024,
            ))
        })
        .collect();
    actix_web::rt::time::sleep(Duration::from_secs(25)).await;
    let held = held_bytes(&relay).await;
    for task in load {
        task.abort();
    }
    for reader in readers {
        reader.abort();
    }
    let peak = peak.stop().await;
    println!(
        "\n== bounds: at the defaults, at once — 1,024 C1fApp and 1,024 CyberScan calls \
         stalled, 8 tenants of 10 MiB answers, 20 slow readers of 16 MB answers, the result \
         cache on"
    );
    println!(
        "held for requests at 25 s:     {:.1} MiB (pool 64 MiB)",
        held as f64 / MIB as f64
    );
    println!("relay RSS peak:                {peak:.1} MB (manifest limit {limit:.1} MB)");
    let mut problems = Vec::new();
    if peak > limit {
        problems.push(format!(
            "peak RSS {peak:.1} MB over the manifest's {limit:.1} MB"
        ));
    }
    Ok(problems)
}
