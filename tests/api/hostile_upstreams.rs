//! Every upstream fault, at each provider, on one observable of two: the
//! fault becomes that provider's error, and the other observable's data is kept.
//! Then retries (idempotent GETs only, once) and rate limits (HTTP 429 is
//! reported and waited out, never hammered).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    C1FAPP_KEY, CYBERSCAN_KEY, SECRET_KEY, TestApp, c1fapp_finds, c1fapp_record, c1fapp_search,
    cyberscan_answers, cyberscan_issues_tokens, hs256_token, observable, spawn_app, spawn_app_with,
    vulnerability,
};

const ROUTE: &str = "/observe/observables";
/// The observable whose lookup meets the fault.
const FAULTY: &str = "192.0.2.66";
/// The observable whose lookup succeeds.
const HEALTHY: &str = "192.0.2.1";
/// The test apps' C1fApp path and CyberScan vulnerabilities path for an IP.
const VULNERABILITIES: &str = "/api/v1/vulnerabilities/ip/";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Provider {
    C1fApp,
    CyberScan,
}

impl Provider {
    const BOTH: [Provider; 2] = [Provider::C1fApp, Provider::CyberScan];

    fn name(self) -> &'static str {
        match self {
            Provider::C1fApp => "C1fApp",
            Provider::CyberScan => "CyberScan",
        }
    }

    fn server(self, app: &TestApp) -> &MockServer {
        match self {
            Provider::C1fApp => &app.c1fapp,
            Provider::CyberScan => &app.cyberscan,
        }
    }

    fn token(self, app: &TestApp) -> String {
        match self {
            Provider::C1fApp => crate::helpers::c1fapp_token(),
            Provider::CyberScan => app.cyberscan_token(),
        }
    }

    /// The request for `ip` at this provider (C1fApp's search, CyberScan's
    /// vulnerabilities GET).
    fn lookup(self, ip: &str) -> wiremock::MockBuilder {
        match self {
            Provider::C1fApp => c1fapp_search(ip),
            Provider::CyberScan => {
                Mock::given(method("GET")).and(path(format!("{VULNERABILITIES}{ip}")))
            }
        }
    }

    /// The provider finds one thing for [`HEALTHY`] (and hands out tokens).
    async fn finds_the_healthy_one(self, app: &TestApp) {
        match self {
            Provider::C1fApp => {
                c1fapp_finds(app, HEALTHY, json!([c1fapp_record(json!({}))]), 1).await
            }
            Provider::CyberScan => {
                cyberscan_issues_tokens(app, 1).await;
                cyberscan_answers(
                    app,
                    &format!("/vulnerabilities/ip/{HEALTHY}"),
                    json!({"ip": HEALTHY, "vulnerabilities": [vulnerability("OpenSSH", "CVE-2020-15778")]}),
                    1,
                )
                .await;
            }
        }
    }

    /// How this provider words an unexpected status.
    fn unexpected(self, status: u16, body: &str) -> String {
        match self {
            Provider::C1fApp => format!("Unexpected response from C1fApp: {body}"),
            Provider::CyberScan => format!("Unexpected response from CyberScan: {status} {body}"),
        }
    }

    fn key_error(self) -> String {
        format!(
            "The data structure of {} API has changed. The module is broken.",
            self.name()
        )
    }
}

fn both_ips() -> Value {
    json!([observable("ip", FAULTY), observable("ip", HEALTHY)])
}

/// Observes [`FAULTY`] and [`HEALTHY`] at `provider`; asserts that the healthy
/// one's sighting is there and returns the one error.
async fn observe_expecting_one_error(app: &TestApp, provider: Provider) -> Value {
    let response = app
        .post_json_with(ROUTE, &provider.token(app), &both_ips())
        .await;
    assert_eq!(
        response["data"]["sightings"]["count"], 1,
        "{provider:?}: the healthy observable's data is kept: {response}"
    );
    let sighting = &response["data"]["sightings"]["docs"][0];
    assert_eq!(sighting["observables"][0]["value"], HEALTHY);
    assert_eq!(sighting["source"], provider.name());
    let errors = response["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{provider:?}: {response}");
    errors[0].clone()
}

fn error(code: &str, message: &str) -> Value {
    json!({"type": "fatal", "code": code, "message": message})
}

/// The fault as a wiremock answer to the faulty lookup, made `calls` times.
async fn faulty_lookup(app: &TestApp, provider: Provider, answer: ResponseTemplate, calls: u64) {
    provider
        .lookup(FAULTY)
        .respond_with(answer)
        .expect(calls)
        .mount(provider.server(app))
        .await;
}

/// At each provider in turn: the healthy observable finds one thing, the
/// faulty one gets `answer`; the response must hold the healthy one's data and
/// exactly the error `expected` gives for that provider.
async fn fault_gives(answer: impl Fn() -> ResponseTemplate, expected: impl Fn(Provider) -> Value) {
    for provider in Provider::BOTH {
        let app = spawn_app().await;
        provider.finds_the_healthy_one(&app).await;
        faulty_lookup(&app, provider, answer(), 1).await;
        assert_eq!(
            observe_expecting_one_error(&app, provider).await,
            expected(provider),
            "{provider:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_lookup_is_a_timeout() {
    fault_gives(
        || ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
        |provider| {
            error(
                "timeout",
                &format!("{} did not respond within 0.5 seconds", provider.name()),
            )
        },
    )
    .await;
}

#[tokio::test]
async fn too_many_requests_is_reported_with_the_upstream_text() {
    // Slower than the healthy lookup: a 429 holds back the calls that come
    // after it (see the rate-limit tests), not the ones already answered.
    fault_gives(
        || {
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .set_body_string("slow down")
                .set_delay(Duration::from_millis(200))
        },
        |provider| error("too many requests", &provider.unexpected(429, "slow down")),
    )
    .await;
}

#[tokio::test]
async fn a_server_error_is_reported_with_the_upstream_text() {
    fault_gives(
        || ResponseTemplate::new(500).set_body_string("internal error"),
        |provider| error("unknown", &provider.unexpected(500, "internal error")),
    )
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_key_error() {
    fault_gives(
        || {
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/html")
                .set_body_string("<html><body>Maintenance</body></html>")
        },
        |provider| error("key error", &provider.key_error()),
    )
    .await;
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_a_key_error() {
    for wrong in [
        json!({"unexpected": true}),
        json!("a string"),
        json!(42),
        json!(null),
    ] {
        fault_gives(
            || ResponseTemplate::new(200).set_body_json(&wrong),
            |provider| error("key error", &provider.key_error()),
        )
        .await;
    }
}

#[tokio::test]
async fn a_50_mb_body_is_refused_at_the_configured_bound() {
    let huge = vec![b'['; 50 * 1024 * 1024];
    fault_gives(
        || ResponseTemplate::new(200).set_body_bytes(huge.clone()),
        |provider| {
            error(
                "unknown",
                &format!(
                    "The response from {} is larger than 10485760 bytes",
                    provider.name()
                ),
            )
        },
    )
    .await;
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(0)
        .mount(&elsewhere)
        .await;
    fault_gives(
        || {
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/steal", elsewhere.uri()))
                .set_body_string("moved")
        },
        |provider| error("unknown", &provider.unexpected(302, "moved")),
    )
    .await;
}

/// What [`RawUpstream`] does with one request.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Promise 1,000 bytes, send a few, and hang up.
    BreakOff,
    /// Stream a chunked body of this many bytes (no length announced).
    Stream(usize),
    /// Close the connection without answering.
    HangUp,
}

/// A hand-written HTTP/1.1 upstream for faults wiremock cannot make: it
/// answers requests that mention [`HEALTHY`] (or the token call) properly and
/// misbehaves on the others. It counts requests and the bytes it managed to
/// send while misbehaving.
struct RawUpstream {
    url: String,
    requests: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
}

impl RawUpstream {
    /// `misbehave(n)` says what to do with the n-th faulty request (from 0),
    /// or `None` to answer it properly.
    async fn start(misbehave: fn(usize) -> Option<Misbehaviour>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let faulty = Arc::new(AtomicUsize::new(0));
        let (counted, streamed) = (requests.clone(), sent.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counted, streamed, faulty) =
                    (counted.clone(), streamed.clone(), faulty.clone());
                tokio::spawn(async move {
                    serve(stream, misbehave, &counted, &streamed, &faulty).await;
                });
            }
        });
        Self {
            url,
            requests,
            sent,
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    misbehave: fn(usize) -> Option<Misbehaviour>,
    requests: &AtomicUsize,
    sent: &AtomicUsize,
    faulty: &AtomicUsize,
) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    requests.fetch_add(1, Ordering::SeqCst);
    let is_faulty = request.contains(FAULTY);
    let behaviour = if is_faulty {
        misbehave(faulty.fetch_add(1, Ordering::SeqCst))
    } else {
        None
    };
    let Some(behaviour) = behaviour else {
        let body = if request.starts_with("POST /api/v1/token") {
            json!({"access_token": crate::helpers::CYBERSCAN_TOKEN})
        } else if request.starts_with("POST") {
            json!([c1fapp_record(json!({}))])
        } else {
            let ip = if is_faulty { FAULTY } else { HEALTHY };
            json!({"ip": ip, "vulnerabilities": [vulnerability("OpenSSH", "CVE-2020-15778")]})
        };
        let body = body.to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(body.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    };
    match behaviour {
        Misbehaviour::BreakOff => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n[{\"feed_")
                .await;
        }
        Misbehaviour::HangUp => {}
        Misbehaviour::Stream(total) => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = vec![b'['; 64 * 1024];
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk,
                b"\r\n".to_vec(),
            ]
            .concat();
            let mut written = 0;
            while written < total {
                if stream.write_all(&framed).await.is_err() {
                    break;
                }
                written += framed.len();
                sent.fetch_add(framed.len(), Ordering::SeqCst);
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// The request head and body as text (enough to route on).
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return Some(text.into_owned());
            }
        }
    }
}

/// A relay whose C1fApp is `upstream`, and a token for `provider` whose
/// CyberScan host is `upstream`.
async fn app_with_upstream(upstream: &RawUpstream, provider: Provider) -> (TestApp, String) {
    let c1fapp = format!("{}/cifapp/api/", upstream.url);
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url = Url::parse(&c1fapp).unwrap();
    })
    .await;
    let token = match provider {
        Provider::C1fApp => crate::helpers::c1fapp_token(),
        Provider::CyberScan => hs256_token(
            &json!({"api_key": CYBERSCAN_KEY, "host": upstream.url}),
            SECRET_KEY,
        ),
    };
    (app, token)
}

async fn observe_raw(app: &TestApp, token: &str, provider: Provider) -> Value {
    let response = app.post_json_with(ROUTE, token, &both_ips()).await;
    assert_eq!(
        response["data"]["sightings"]["count"], 1,
        "{provider:?}: {response}"
    );
    assert_eq!(
        response["data"]["sightings"]["docs"][0]["observables"][0]["value"],
        HEALTHY
    );
    let errors = response["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{provider:?}: {response}");
    errors[0].clone()
}

#[tokio::test]
async fn a_connection_reset_mid_body_is_a_connection_error() {
    for provider in Provider::BOTH {
        let upstream = RawUpstream::start(|_| Some(Misbehaviour::BreakOff)).await;
        let (app, token) = app_with_upstream(&upstream, provider).await;
        assert_eq!(
            observe_raw(&app, &token, provider).await,
            error(
                "connection error",
                &format!(
                    "The connection to {} was interrupted before the response was complete",
                    provider.name()
                )
            )
        );
    }
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_at_the_bound() {
    for provider in Provider::BOTH {
        let upstream = RawUpstream::start(|_| Some(Misbehaviour::Stream(50 * 1024 * 1024))).await;
        let (app, token) = app_with_upstream(&upstream, provider).await;
        assert_eq!(
            observe_raw(&app, &token, provider).await,
            error(
                "unknown",
                &format!(
                    "The response from {} is larger than 10485760 bytes",
                    provider.name()
                )
            )
        );
        let sent = upstream.sent.load(Ordering::SeqCst);
        assert!(
            sent < 40 * 1024 * 1024,
            "the relay stopped reading near its bound, not at 50 MB ({sent} bytes sent)"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_keeps_the_other_providers_data() {
    let closed = format!("http://127.0.0.1:{}", crate::helpers::closed_port());
    // CyberScan refuses; C1fApp answers.
    let app = spawn_app().await;
    c1fapp_finds(&app, HEALTHY, json!([c1fapp_record(json!({}))]), 1).await;
    let token = hs256_token(
        &json!({"key": C1FAPP_KEY, "api_key": CYBERSCAN_KEY, "host": closed}),
        SECRET_KEY,
    );
    let response = app
        .post_json_with(ROUTE, &token, &json!([observable("ip", HEALTHY)]))
        .await;
    assert_eq!(response["data"]["sightings"]["count"], 1, "{response}");
    assert_eq!(response["data"]["sightings"]["docs"][0]["source"], "C1fApp");
    assert_eq!(
        response["errors"],
        json!([error(
            "connection error",
            &format!(
                "Unable to connect to CyberScan, validate the configured API endpoint: {closed}/api/v1"
            )
        )])
    );

    // C1fApp refuses; CyberScan answers.
    let c1fapp = format!("{closed}/cifapp/api/");
    let configured = c1fapp.clone();
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url = Url::parse(&configured).unwrap();
    })
    .await;
    Provider::CyberScan.finds_the_healthy_one(&app).await;
    let response = app
        .post_json_with(
            ROUTE,
            &app.both_token(),
            &json!([observable("ip", HEALTHY)]),
        )
        .await;
    assert_eq!(response["data"]["sightings"]["count"], 1, "{response}");
    assert_eq!(
        response["data"]["sightings"]["docs"][0]["source"],
        "CyberScan"
    );
    assert_eq!(
        response["errors"],
        json!([error(
            "connection error",
            &format!("Unable to connect to C1fApp, validate the configured API endpoint: {c1fapp}")
        )])
    );
}

// Retries.

#[tokio::test]
async fn a_get_that_meets_a_gateway_error_is_retried_once_and_succeeds() {
    for status in [502, 503, 504] {
        let app = spawn_app().await;
        Provider::CyberScan.finds_the_healthy_one(&app).await;
        fails_once_then_answers(&app, status).await;
        Provider::CyberScan
            .lookup(FAULTY)
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"ip": FAULTY, "vulnerabilities": [vulnerability("Telnet", "")]}),
            ))
            .expect(1)
            .mount(&app.cyberscan)
            .await;
        let response = app
            .post_json_with(ROUTE, &app.cyberscan_token(), &both_ips())
            .await;
        assert!(
            response.get("errors").is_none(),
            "HTTP {status}: {response}"
        );
        assert_eq!(response["data"]["sightings"]["count"], 2);
    }
}

/// Wiremock answers a mock until its limit, then falls through to the next;
/// `up_to_n_times(1)` on the first makes "fail once, then succeed".
async fn fails_once_then_answers(app: &TestApp, status: u16) {
    Provider::CyberScan
        .lookup(FAULTY)
        .respond_with(ResponseTemplate::new(status).set_body_string("busy"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.cyberscan)
        .await;
}

#[tokio::test]
async fn a_get_is_retried_only_once() {
    let app = spawn_app().await;
    Provider::CyberScan.finds_the_healthy_one(&app).await;
    faulty_lookup(
        &app,
        Provider::CyberScan,
        ResponseTemplate::new(503).set_body_string("still busy"),
        2,
    )
    .await;
    assert_eq!(
        observe_expecting_one_error(&app, Provider::CyberScan).await,
        error(
            "unknown",
            &Provider::CyberScan.unexpected(503, "still busy")
        )
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(
            r#"ctr_relay_upstream_retries_total{operation="vulnerabilities",provider="CyberScan"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn posts_are_never_retried() {
    // C1fApp's search is a POST.
    let app = spawn_app().await;
    Provider::C1fApp.finds_the_healthy_one(&app).await;
    faulty_lookup(
        &app,
        Provider::C1fApp,
        ResponseTemplate::new(503).set_body_string("busy"),
        1,
    )
    .await;
    assert_eq!(
        observe_expecting_one_error(&app, Provider::C1fApp).await,
        error("unknown", &Provider::C1fApp.unexpected(503, "busy"))
    );

    // CyberScan's token call is a POST.
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    let response = app
        .post_json_with(
            ROUTE,
            &app.cyberscan_token(),
            &json!([observable("ip", HEALTHY)]),
        )
        .await;
    assert_eq!(
        response,
        json!({"errors": [error("unknown", &Provider::CyberScan.unexpected(503, "busy"))]})
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    for status in [400, 404, 500] {
        let app = spawn_app().await;
        Provider::CyberScan.finds_the_healthy_one(&app).await;
        fails_once_then_answers(&app, status).await;
        let response = app
            .post_json_with(ROUTE, &app.cyberscan_token(), &both_ips())
            .await;
        assert_eq!(
            response["errors"][0]["message"],
            Provider::CyberScan.unexpected(status, "busy")
        );
    }
}

#[tokio::test]
async fn a_get_cut_off_is_retried_on_a_new_connection() {
    // The first faulty request breaks off mid-body; the retry is answered.
    let upstream = RawUpstream::start(|n| (n == 0).then_some(Misbehaviour::BreakOff)).await;
    let (app, token) = app_with_upstream(&upstream, Provider::CyberScan).await;
    let response = app.post_json_with(ROUTE, &token, &both_ips()).await;
    assert!(response.get("errors").is_none(), "{response}");
    assert_eq!(response["data"]["sightings"]["count"], 2);
    // token, healthy, faulty twice
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 4);

    // A connection closed without an answer is retried too.
    let upstream = RawUpstream::start(|n| (n == 0).then_some(Misbehaviour::HangUp)).await;
    let (app, token) = app_with_upstream(&upstream, Provider::CyberScan).await;
    let response = app.post_json_with(ROUTE, &token, &both_ips()).await;
    assert!(response.get("errors").is_none(), "{response}");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 4);
}

// Rate limits.

async fn observe_one(app: &TestApp, token: &str) -> Value {
    app.post_json_with(ROUTE, token, &json!([observable("ip", FAULTY)]))
        .await
}

#[tokio::test]
async fn a_rate_limited_credential_waits_for_retry_after() {
    for provider in Provider::BOTH {
        let app = spawn_app().await;
        if provider == Provider::CyberScan {
            cyberscan_issues_tokens(&app, 1).await;
        }
        let limited = ResponseTemplate::new(429)
            .insert_header("retry-after", "60")
            .set_body_string("quota exceeded");
        faulty_lookup(&app, provider, limited, 1).await;
        let expected = json!({"errors": [error(
            "too many requests",
            &provider.unexpected(429, "quota exceeded")
        )]});
        // The first call meets the 429; the next requests get the same answer
        // without a call (the mock expects exactly one).
        for _ in 0..3 {
            assert_eq!(observe_one(&app, &provider.token(&app)).await, expected);
        }
        let metrics = app.metrics_text().await;
        let skipped = format!(
            r#"ctr_relay_upstream_skipped_total{{provider="{}",reason="rate_limited"}} 2"#,
            provider.name()
        );
        assert!(metrics.contains(&skipped), "{metrics}");
    }
}

#[tokio::test]
async fn a_rate_limit_holds_for_that_credential_only() {
    let app = spawn_app().await;
    faulty_lookup(
        &app,
        Provider::C1fApp,
        ResponseTemplate::new(429).insert_header("retry-after", "60"),
        1,
    )
    .await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_partial_json(
            json!({"key": "another-key", "request": FAULTY}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([c1fapp_record(json!({}))])))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let limited = observe_one(&app, &crate::helpers::c1fapp_token()).await;
    assert_eq!(limited["errors"][0]["code"], "too many requests");
    let other = hs256_token(&json!({"key": "another-key"}), SECRET_KEY);
    let response = observe_one(&app, &other).await;
    assert!(response.get("errors").is_none(), "{response}");
}

#[tokio::test]
async fn calls_resume_once_retry_after_has_passed() {
    let app = spawn_app().await;
    faulty_lookup(
        &app,
        Provider::C1fApp,
        ResponseTemplate::new(429).insert_header("retry-after", "1"),
        1,
    )
    .await;
    let token = crate::helpers::c1fapp_token();
    assert_eq!(
        observe_one(&app, &token).await["errors"][0]["code"],
        "too many requests"
    );
    app.c1fapp.verify().await;
    app.c1fapp.reset().await;
    c1fapp_finds(&app, FAULTY, json!([c1fapp_record(json!({}))]), 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = observe_one(&app, &token).await;
    assert!(response.get("errors").is_none(), "{response}");
}
