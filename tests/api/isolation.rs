//! No tenant takes another's memory or places, however it writes its host or
//! its upstream shapes an answer: bytes are charged as they arrive and each
//! tenant holds at most a share of the pool; places are keyed by the machine a
//! host resolves to and by the credential alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{
    C1FAPP_KEY, SECRET_KEY, TestApp, c1fapp_finds, c1fapp_record, hs256_token, json_body,
    observable, spawn_app_with,
};

/// An upstream that hands out CyberScan tokens, and answers every other
/// request with `Content-Length: declared`, `sent` bytes of it, then stalls.
struct Stalling {
    port: u16,
    /// Lookups (non-token requests) received.
    lookups: Arc<AtomicUsize>,
}

impl Stalling {
    async fn start(address: &str, declared: usize, sent: usize) -> Self {
        let listener = TcpListener::bind(address).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let lookups = Arc::new(AtomicUsize::new(0));
        let counted = lookups.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
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
                            let answer = br#"{"access_token":"stalling-token"}"#;
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
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                });
            }
        });
        Self { port, lookups }
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

fn ips(first: usize, n: usize) -> Value {
    Value::Array(
        (first..first + n)
            .map(|i| observable("ip", &format!("198.51.100.{i}")))
            .collect(),
    )
}

fn cyberscan_token(key: &str, host: &str) -> String {
    hs256_token(&json!({"api_key": key, "host": host}), SECRET_KEY)
}

/// Sends tenant A's request in the background: it never ends by itself.
fn send_in_background(app: &TestApp, token: String, body: Value) -> tokio::task::JoinHandle<()> {
    let (http, url) = (app.http.clone(), app.url("/observe/observables"));
    tokio::spawn(async move {
        let _ = http.post(url).bearer_auth(token).json(&body).send().await;
    })
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Tenant B's C1fApp lookup, answered within 2 s (at once, but on a loaded
/// machine) and without an error.
async fn tenant_b_is_answered(app: &TestApp) {
    let started = Instant::now();
    let answer = json_body(
        app.post(
            "/observe/observables",
            &hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY),
            &json!([observable("ip", "192.0.2.10")]),
        )
        .await,
    )
    .await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(answer["data"]["sightings"]["count"], 1, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn declared_lengths_take_nothing_from_the_pool_before_their_bytes_arrive() {
    let app = spawn_app_with(|settings| {
        settings.upstream.timeout = Duration::from_secs(10);
    })
    .await;
    c1fapp_finds(&app, "192.0.2.10", json!([c1fapp_record(json!({}))]), 1).await;
    // Twelve lookups whose announced lengths, with the token answers
    // (33 bytes, read up to three times), fill the 64 MiB pool but for less
    // than tenant B's answer.
    let stalling = Stalling::start("127.0.0.1:0", (64 << 20) / 12 - 20, 0).await;
    let host = format!("http://127.0.0.1:{}", stalling.port);
    let tenant_a: Vec<_> = (0..3)
        .map(|n| send_in_background(&app, cyberscan_token("key-a", &host), ips(n * 4 + 1, 4)))
        .collect();
    wait_for("tenant A's 12 lookups", || stalling.lookups() >= 12).await;
    // The relay has read every head.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tenant_b_is_answered(&app).await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("ctr_relay_held_bytes "),
        "the bytes held are exported: {metrics}"
    );
    for request in tenant_a {
        request.abort();
    }
}

#[tokio::test]
async fn one_tenant_holds_at_most_its_share_of_the_pool() {
    let app = spawn_app_with(|settings| {
        settings.upstream.timeout = Duration::from_secs(10);
        settings.upstream.max_response_bytes = 1024 * 1024;
        settings.limits.max_held_bytes = 4 * 1024 * 1024;
        settings.limits.max_held_bytes_per_tenant = 1024 * 1024;
    })
    .await;
    c1fapp_finds(&app, "192.0.2.10", json!([c1fapp_record(json!({}))]), 1).await;
    // Each lookup sends 900 KiB of an announced 1 MiB, then stalls: twelve
    // of them would hold 10.5 MiB, far more than the 4 MiB pool.
    let stalling = Stalling::start("127.0.0.1:0", 1024 * 1024, 900 * 1024).await;
    let host = format!("http://127.0.0.1:{}", stalling.port);
    let tenant_a: Vec<_> = (0..3)
        .map(|n| {
            // Another API key each time: the machine's share still holds.
            let token = cyberscan_token(&format!("key-a-{n}"), &host);
            send_in_background(&app, token, ips(n * 4 + 1, 4))
        })
        .collect();
    wait_for("tenant A's 12 lookups", || stalling.lookups() >= 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tenant_b_is_answered(&app).await;
    let held = held_bytes(&app).await;
    assert!(
        held <= 1024 * 1024,
        "tenant A holds at most its share: {held}"
    );
    for request in tenant_a {
        request.abort();
    }
}

async fn held_bytes(app: &TestApp) -> u64 {
    let metrics = app.metrics_text().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("ctr_relay_held_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ctr_relay_held_bytes: {metrics}"))
}

/// Other names this machine's hosts file gives 127.0.0.1 (several names of
/// one address).
fn other_names_of_loopback() -> impl Iterator<Item = String> {
    std::fs::read_to_string("/etc/hosts")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.split_whitespace().next() == Some("127.0.0.1"))
        .flat_map(|line| {
            line.split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|name| name != "localhost" && !name.starts_with('#'))
        .collect::<Vec<_>>()
        .into_iter()
}

#[tokio::test]
async fn places_are_not_multiplied_by_spelling_one_machine_another_way() {
    let app = spawn_app_with(|settings| {
        settings.upstream.timeout = Duration::from_secs(3);
        settings.upstream.max_in_flight = 8;
        settings.upstream.max_in_flight_per_host = 4;
        settings.upstream.max_in_flight_per_credential = 4;
        settings.limits.lookup_concurrency = 8;
    })
    .await;
    // Tenant A's machine (127.0.0.1) stalls on two ports.
    let first = Stalling::start("127.0.0.1:0", 1000, 0).await;
    let second = Stalling::start("127.0.0.1:0", 1000, 0).await;
    let (p, q) = (first.port, second.port);
    let spellings: Vec<String> = [
        format!("http://127.0.0.1:{p}"),
        format!("http://localhost:{p}"),
        format!("http://127.0.0.1:{q}"),
        format!("http://127.0.0.1:{p}/"),
        format!("http://localhost.:{p}"),
        format!("http://LOCALHOST:{p}"),
        format!("http://[::ffff:127.0.0.1]:{p}"),
    ]
    .into_iter()
    .chain(other_names_of_loopback().map(|name| format!("http://{name}:{p}")))
    .collect::<Vec<_>>();
    // One API key (written into each spelling's token), and several keys.
    let tenant_a: Vec<_> = spellings
        .iter()
        .enumerate()
        .map(|(n, host)| {
            let key = if n % 2 == 0 { "key-a" } else { "key-a2" };
            send_in_background(&app, cyberscan_token(key, host), ips(n * 8 + 1, 8))
        })
        .collect();
    wait_for("tenant A's lookups", || {
        first.lookups() + second.lookups() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        first.lookups() + second.lookups(),
        4,
        "one machine: its 4 places, however it is written"
    );

    // Tenant B's CyberScan, on another machine (127.0.0.2), answers at once.
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let tenant_b = wiremock::MockServer::builder()
        .listener(listener)
        .start()
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(json!({"access_token": "b"})),
        )
        .mount(&tenant_b)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(
            json!({"vulnerabilities": [crate::helpers::vulnerability("OpenSSH", "")]}),
        ))
        .mount(&tenant_b)
        .await;
    let started = Instant::now();
    let answer = json_body(
        app.post(
            "/observe/observables",
            &cyberscan_token("key-b", &tenant_b.uri()),
            &json!([observable("ip", "192.0.2.10")]),
        )
        .await,
    )
    .await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(answer["data"]["sightings"]["count"], 1, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for request in tenant_a {
        request.abort();
    }
}

/// A caller that sends its request and then reads at most `rate` bytes a
/// second, with a small receive buffer; how many bytes it got before the
/// relay closed the connection, and how long after the first one.
async fn slow_reader(
    relay: &str,
    token: &str,
    body: &Value,
    rate: usize,
    answering: &AtomicUsize,
) -> (usize, Duration) {
    // A small receive window, set before connecting, so the answer waits
    // in the relay rather than in this side's kernel.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address: std::net::SocketAddr = relay.trim_start_matches("http://").parse().unwrap();
    socket.connect(&address.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    let body = body.to_string();
    let head = format!(
        "POST /observe/observables HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut first_byte = None;
    let mut received = 0;
    let mut buffer = vec![0u8; rate.max(1)];
    let started = Instant::now();
    loop {
        let since = || first_byte.map_or(Duration::ZERO, |at: Instant| at.elapsed());
        if started.elapsed() > Duration::from_secs(40) {
            return (received, since());
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, since()),
            Ok(Ok(n)) => {
                if first_byte.is_none() {
                    first_byte = Some(Instant::now());
                    answering.fetch_add(1, Ordering::SeqCst);
                }
                received += n;
            }
            Err(_) => panic!("the relay kept a stalled answer open for 10 s"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn an_answer_its_caller_does_not_read_is_counted_until_sent_then_cut_off() {
    let app = spawn_app_with(|settings| {
        // Long enough that every answer is being read before the first
        // deadline, however slowly this machine makes them.
        settings.limits.answer_send_timeout = Duration::from_secs(8);
        // 400 KB upstream answers: not the tests' short upstream timeout;
        // answers of 9 MB whole, whatever order the lookups are mapped in.
        settings.upstream.timeout = Duration::from_secs(20);
        settings.limits.max_response_bytes = 1 << 28;
        settings.limits.max_held_bytes = 1 << 30;
        settings.limits.max_held_bytes_per_tenant = 1 << 30;
    })
    .await;
    // 100 findings of 4 KiB text for each IP: answers of about 9 MB, more
    // than the kernel's socket buffers hold.
    crate::helpers::cyberscan_issues_tokens(&app, 1).await;
    let findings: Vec<Value> = (0..100)
        .map(|n| {
            let mut finding = crate::helpers::vulnerability(&format!("Finding {n}"), "");
            finding["description"] = json!("d".repeat(4000));
            finding
        })
        .collect();
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({"vulnerabilities": findings})),
        )
        .mount(&app.cyberscan)
        .await;
    let token = app.cyberscan_token();
    let answering = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (relay, token) = (app.address.clone(), token.clone());
            let (body, answering) = (ips(1, 20), answering.clone());
            tokio::spawn(async move { slow_reader(&relay, &token, &body, 4096, &answering).await })
        })
        .collect();
    // Every handler has returned; every answer waits for its reader.
    for _ in 0..600 {
        if answering.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answering.load(Ordering::SeqCst), 3, "every answer started");
    let held = held_bytes(&app).await;
    assert!(
        held > 3 * 4_000_000,
        "the answers are counted while they wait for their readers: {held}"
    );
    for reader in readers {
        let (received, elapsed) = reader.await.unwrap();
        assert!(received < 1_000_000, "cut off: {received} bytes");
        // The deadline, and the reader's own 8 KiB of buffer at 4 KiB/s.
        assert!(elapsed < Duration::from_secs(14), "{elapsed:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(held_bytes(&app).await, 0, "given back when cut off");
    assert!(
        app.metrics_text()
            .await
            .contains("ctr_relay_answers_timed_out_total 3"),
        "counted"
    );
}
