//! The relay as a process: command line, configuration errors, graceful
//! shutdown, health check, and what it writes to its logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    C1FAPP_KEY, C1FAPP_PATH, CYBERSCAN_KEY, CYBERSCAN_TOKEN, SECRET_KEY, assert_ctim,
    c1fapp_record, closed_port, hs256_token, jwk, observable, rs256_token, test_client,
    vulnerability,
};

use crate::relay_process::{Relay, run};

#[test]
fn a_bad_setting_stops_the_relay_with_the_variable_named() {
    let (code, _, stderr) = run(&[], &[("PORT", "ninety")]);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim(),
        "ctr-relay: invalid configuration: PORT: \"ninety\" is not a port number (0-65535)"
    );
    let (code, _, stderr) = run(&["serve"], &[("JWKS_HOSTS", "ftp://nope")]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("JWKS_HOSTS"), "{stderr}");
}

#[test]
fn a_setting_beyond_its_bound_is_an_error_naming_it_not_a_panic() {
    for variable in [
        "UPSTREAM_MAX_IN_FLIGHT",
        "WORKERS",
        "LOOKUP_CONCURRENCY",
        "RESULT_CACHE_MAX_ENTRIES",
        "MAX_UPSTREAM_RESPONSE_BYTES",
    ] {
        for command in ["serve", "threatbus"] {
            let (code, _, stderr) = run(
                &[command],
                &[
                    (variable, "18446744073709551615"),
                    ("C1FAPP_KEY", "key"),
                    ("RESULT_CACHE_TTL_SECONDS", "5"),
                ],
            );
            assert_eq!(code, Some(1), "{command} {variable}: {stderr}");
            assert!(
                stderr.starts_with(&format!("ctr-relay: invalid configuration: {variable}: ")),
                "{command} {variable}: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn the_relay_serves_with_every_setting_at_its_largest_accepted_value() {
    let c1fapp = slow_c1fapp(Duration::ZERO).await;
    let mut envs = c1fapp_env(&c1fapp);
    for (variable, value) in [
        ("UPSTREAM_MAX_IN_FLIGHT", "1000000"),
        ("WORKERS", "512"),
        ("LOOKUP_CONCURRENCY", "10000"),
        ("RESULT_CACHE_TTL_SECONDS", "3600"),
        ("RESULT_CACHE_MAX_ENTRIES", "10000000"),
        ("MAX_UPSTREAM_RESPONSE_BYTES", "1073741824"),
        ("REQUEST_MAX_UPSTREAM_BYTES", "1073741824"),
        ("MAX_HELD_BYTES", "68719476736"),
        ("MAX_HELD_BYTES_PER_TENANT", "68719476736"),
        ("MAX_REQUEST_BYTES", "1073741824"),
        ("MAX_OBSERVABLES", "100000"),
        ("UPSTREAM_TIMEOUT_SECONDS", "3600"),
        ("SHUTDOWN_GRACE_SECONDS", "3600"),
        ("CTR_ENTITIES_LIMIT", "99999999999999999999"),
    ] {
        envs.push((variable, value.to_owned()));
    }
    let relay = Relay::start(&envs).await;
    let response = test_client()
        .post(relay.url("/observe/observables"))
        .bearer_auth(hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY))
        .json(&json!([observable("ip", "192.0.2.10")]))
        .send()
        .await
        .unwrap();
    let body = assert_ctim(response.json().await.unwrap());
    assert_eq!(body["data"]["sightings"]["count"], 1, "{body}");
    relay.signal("TERM");
    let (code, output) = relay.wait().await;
    assert_eq!(code, Some(0), "{output}");
}

#[test]
fn threatbus_mode_needs_provider_credentials_and_a_tcp_endpoint() {
    for (args, envs, named) in [
        (vec!["threatbus"], vec![], "C1FAPP_KEY"),
        (
            vec!["threatbus"],
            vec![("CYBERSCAN_API_KEY", "key")],
            "CYBERSCAN_HOST",
        ),
        (vec!["threatbus"], vec![("C1FAPP_KEY", "")], "C1FAPP_KEY"),
        (
            vec!["threatbus", "--manage", "ipc:///tmp/bus"],
            vec![("C1FAPP_KEY", "key")],
            "THREATBUS_MANAGE",
        ),
        (
            vec!["threatbus"],
            vec![("C1FAPP_KEY", "key"), ("UPSTREAM_TIMEOUT_SECONDS", "soon")],
            "UPSTREAM_TIMEOUT_SECONDS",
        ),
    ] {
        let (code, _, stderr) = run(&args, &envs);
        assert_eq!(code, Some(1), "{args:?} {envs:?}");
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
}

#[test]
fn version_and_help_work() {
    let (code, stdout, _) = run(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        format!("ctr-relay {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, stdout, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for command in ["serve", "jwt", "healthcheck", "threatbus"] {
        assert!(stdout.contains(command), "{stdout}");
    }
}

#[test]
fn jwt_makes_a_key_and_a_token_or_signs_with_the_given_key() {
    let (code, stdout, _) = run(&["jwt", "--c1fapp-key", "k1", "--entities-limit", "5"], &[]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let secret = lines[0].strip_prefix("SECRET_KEY=").unwrap();
    let token = lines[1].strip_prefix("JWT=").unwrap();
    let claims = decode(token, secret);
    assert_eq!(claims, json!({"key": "k1", "CTR_ENTITIES_LIMIT": 5}));

    let (code, stdout, _) = run(
        &[
            "jwt",
            "--cyberscan-api-key",
            "cs",
            "--cyberscan-host",
            "api.cyberscan.io",
        ],
        &[("SECRET_KEY", "operator-key")],
    );
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("SECRET_KEY"), "{stdout}");
    let token = stdout.trim().strip_prefix("JWT=").unwrap();
    assert_eq!(
        decode(token, "operator-key"),
        json!({"api_key": "cs", "host": "api.cyberscan.io"})
    );

    let (code, _, stderr) = run(&["jwt"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--c1fapp-key"), "{stderr}");
}

#[test]
fn jwt_refuses_what_cannot_work_with_exit_code_2_and_nothing_on_stdout() {
    for args in [
        &["jwt", "--c1fapp-key", ""][..],
        &["jwt", "--c1fapp-key", "   "],
        &["jwt", "--cyberscan-api-key", "cs"],
        &["jwt", "--cyberscan-host", "api.cyberscan.io"],
        &[
            "jwt",
            "--cyberscan-api-key",
            "cs",
            "--cyberscan-host",
            "not a host",
        ],
        &["jwt", "--c1fapp-key", "k", "--expires-in-days", "0"],
        &["jwt", "--c1fapp-key", "k", "--entities-limit", "0"],
    ] {
        let (code, stdout, stderr) = run(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(!stderr.trim().is_empty(), "{args:?}");
    }
}

fn decode(token: &str, secret: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims
}

#[tokio::test]
async fn healthcheck_exits_0_when_the_relay_answers_and_1_otherwise() {
    let relay = Relay::start(&[]).await;
    let port = relay.port.to_string();
    let (code, _, stderr) = run(&["healthcheck"], &[("PORT", &port), ("HOST", "0.0.0.0")]);
    assert_eq!(code, Some(0), "{stderr}");
    let closed = closed_port().to_string();
    let (code, _, stderr) = run(&["healthcheck", "--timeout", "1"], &[("PORT", &closed)]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("unhealthy"), "{stderr}");
}

async fn slow_c1fapp(delay: Duration) -> MockServer {
    let c1fapp = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([c1fapp_record(json!({}))]))
                .set_delay(delay),
        )
        .mount(&c1fapp)
        .await;
    c1fapp
}

fn c1fapp_env(c1fapp: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        ("C1FAPP_API_URL", format!("{}{C1FAPP_PATH}", c1fapp.uri())),
    ]
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_completes_with_its_data() {
    for signal in ["TERM", "INT"] {
        let c1fapp = slow_c1fapp(Duration::from_millis(1500)).await;
        let relay = Relay::start(&c1fapp_env(&c1fapp)).await;
        let client = test_client();
        let token = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);
        let in_flight = tokio::spawn(
            client
                .post(relay.url("/observe/observables"))
                .bearer_auth(&token)
                .json(&json!([observable("ip", "192.0.2.10")]))
                .send(),
        );
        // Wait until the lookup has reached the upstream, then signal.
        for _ in 0..100 {
            if !c1fapp
                .received_requests()
                .await
                .unwrap_or_default()
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay.signal(signal);
        tokio::time::sleep(Duration::from_millis(300)).await;

        let refused = test_client()
            .get(relay.url("/watchdog"))
            .header("Health-Check", "x")
            .send()
            .await;
        assert!(
            refused.is_err(),
            "SIG{signal}: new connections are refused while stopping"
        );

        let response = in_flight
            .await
            .unwrap()
            .expect("the request in flight is answered");
        assert_eq!(response.status(), 200);
        let body = assert_ctim(response.json().await.unwrap());
        assert_eq!(body["data"]["sightings"]["count"], 1, "SIG{signal}: {body}");

        let (code, output) = relay.wait().await;
        assert_eq!(code, Some(0), "SIG{signal}:\n{output}");
        assert!(output.contains("signal received"), "{output}");
    }
}

/// With `SHUTDOWN_DELAY_SECONDS`, SIGTERM turns `/readyz` to 503 at once
/// while the listener stays open: new connections are still served (with
/// `Connection: close`), a request in flight completes, and only after the
/// delay are connections refused.
#[tokio::test]
async fn with_a_shutdown_delay_readyz_turns_503_and_connections_are_served_until_it_ends() {
    let c1fapp = slow_c1fapp(Duration::from_millis(300)).await;
    let mut env = c1fapp_env(&c1fapp);
    env.push(("SHUTDOWN_DELAY_SECONDS", "2".to_owned()));
    let relay = Relay::start(&env).await;
    let ready = test_client()
        .get(relay.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"data": "ready"})
    );

    relay.signal("TERM");
    let signalled = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let draining = test_client().get(relay.url("/readyz")).send().await;
    let draining = draining.expect("the listener stays open during the delay");
    assert_eq!(draining.status(), 503);
    assert_eq!(
        draining.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "answers close their connections while draining"
    );
    let body = assert_ctim(draining.json().await.unwrap());
    assert_eq!(body["errors"][0]["code"], "service unavailable", "{body}");

    // A new connection during the delay still gets its data.
    let token = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);
    let served = test_client()
        .post(relay.url("/observe/observables"))
        .bearer_auth(&token)
        .json(&json!([observable("ip", "192.0.2.10")]))
        .send()
        .await
        .expect("served during the delay");
    let body = assert_ctim(served.json().await.unwrap());
    assert_eq!(body["data"]["sightings"]["count"], 1, "{body}");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the test was too slow"
    );

    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(signalled.elapsed())).await;
    let refused = test_client().get(relay.url("/readyz")).send().await;
    assert!(refused.is_err(), "after the delay, connections are refused");
    let (code, output) = relay.wait().await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("/readyz answers 503"), "{output}");
}

/// With several workers whose connection pools are warm, a request in flight at
/// SIGTERM still completes: the workers that stop first (idle ones) must not
/// take with them the upstream connection a busy worker is using.
#[tokio::test]
async fn with_four_warm_workers_a_request_in_flight_at_sigterm_completes() {
    const SLOW: [&str; 2] = ["192.0.2.201", "192.0.2.202"];
    // Each round has a 1 in 4 chance of passing even when upstream connections
    // are shared between workers (both slow lookups reusing connections of busy
    // workers), so several rounds make a false pass unlikely.
    for round in 0..3 {
        let c1fapp = MockServer::start().await;
        for value in SLOW {
            c1fapp_search_answers(&c1fapp, value, Duration::from_secs(1)).await;
        }
        Mock::given(method("POST"))
            .and(path(C1FAPP_PATH))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!([c1fapp_record(json!({}))])),
            )
            .mount(&c1fapp)
            .await;
        let mut envs = c1fapp_env(&c1fapp);
        envs.push(("WORKERS", "4".to_owned()));
        let relay = Relay::start(&envs).await;
        let token = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);

        // Warm every worker's pool: many connections at once, spread by the
        // relay over its workers, each making upstream calls.
        let warm = test_client();
        let mut warming = tokio::task::JoinSet::new();
        for n in 0..256 {
            let request = warm
                .post(relay.url("/observe/observables"))
                .bearer_auth(&token)
                .json(&json!([observable(
                    "ip",
                    &format!("198.51.100.{}", n % 200)
                )]))
                .send();
            warming.spawn(async move { request.await.map(|response| response.status()) });
        }
        while let Some(result) = warming.join_next().await {
            assert_eq!(result.unwrap().unwrap(), 200, "round {round}: warming up");
        }

        // Two slow lookups, each on a connection of its own (so on two
        // workers); the other two workers are idle and stop at once.
        let in_flight: Vec<_> = SLOW
            .iter()
            .map(|value| {
                tokio::spawn(
                    test_client()
                        .post(relay.url("/observe/observables"))
                        .bearer_auth(&token)
                        .json(&json!([observable("ip", value)]))
                        .send(),
                )
            })
            .collect();
        wait_for_requests_to(&c1fapp, &SLOW).await;
        relay.signal("TERM");

        for (value, request) in SLOW.iter().zip(in_flight) {
            let response = request
                .await
                .unwrap()
                .unwrap_or_else(|error| panic!("round {round}: {value} was not answered: {error}"));
            assert_eq!(response.status(), 200);
            let body = assert_ctim(response.json().await.unwrap());
            assert_eq!(
                body["data"]["sightings"]["count"], 1,
                "round {round}: {value}: {body}"
            );
            assert!(
                body.get("errors").is_none(),
                "round {round}: {value}: {body}"
            );
        }
        let (code, output) = relay.wait().await;
        assert_eq!(code, Some(0), "round {round}:\n{output}");
    }
}

/// C1fApp answers one record for `value`, after `delay`.
async fn c1fapp_search_answers(c1fapp: &MockServer, value: &str, delay: Duration) {
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(wiremock::matchers::body_partial_json(
            json!({"request": value}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([c1fapp_record(json!({}))]))
                .set_delay(delay),
        )
        .with_priority(1)
        .mount(c1fapp)
        .await;
}

/// Waits until the upstream has received a search for each of `values`.
async fn wait_for_requests_to(upstream: &MockServer, values: &[&str]) {
    for _ in 0..250 {
        let received = upstream.received_requests().await.unwrap_or_default();
        let seen = |value: &&str| {
            received.iter().any(|request| {
                serde_json::from_slice::<Value>(&request.body)
                    .is_ok_and(|body| body["request"] == **value)
            })
        };
        if values.iter().all(seen) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream never received {values:?}");
}

/// A stand-in for an HTTP proxy: counts the connections made to it and what
/// they sent, and answers 502.
struct RecordingProxy {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RecordingProxy {
    async fn start() -> RecordingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = vec![0u8; 8192];
                let n = stream.read(&mut buffer).await.unwrap_or(0);
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                let _ = stream
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        RecordingProxy { url, seen }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ]
        .into_iter()
        .map(|name| (name, self.url.clone()))
        .collect()
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn caller_chosen_hosts_never_go_through_an_environment_proxy() {
    let proxy = RecordingProxy::start().await;
    let mut envs = vec![("SECRET_KEY", SECRET_KEY.to_owned())];
    envs.extend(proxy.env());
    let relay = Relay::start(&envs).await;
    for host in [
        "http://localhost:8500",
        "localhost:8500",
        "http://internal.invalid:8500",
    ] {
        let token = hs256_token(&json!({"api_key": CYBERSCAN_KEY, "host": host}), SECRET_KEY);
        let response = test_client()
            .post(relay.url("/observe/observables"))
            .bearer_auth(&token)
            .json(&json!([observable("ip", "192.0.2.10")]))
            .send()
            .await
            .unwrap();
        let body = assert_ctim(response.json().await.unwrap());
        assert_eq!(
            body["errors"][0]["code"], "connection error",
            "{host}: {body}"
        );
    }
    assert_eq!(
        proxy.requests(),
        Vec::<String>::new(),
        "the proxy saw calls to caller-chosen hosts"
    );
}

#[tokio::test]
async fn with_the_opt_in_cyberscan_calls_use_the_proxy() {
    let proxy = RecordingProxy::start().await;
    let mut envs = vec![
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        ("CYBERSCAN_USE_PROXY", "true".to_owned()),
    ];
    envs.extend(proxy.env());
    let relay = Relay::start(&envs).await;
    let token = hs256_token(
        &json!({"api_key": CYBERSCAN_KEY, "host": "http://cyberscan.example:8500"}),
        SECRET_KEY,
    );
    let response = test_client()
        .post(relay.url("/observe/observables"))
        .bearer_auth(&token)
        .json(&json!([observable("ip", "192.0.2.10")]))
        .send()
        .await
        .unwrap();
    let body = assert_ctim(response.json().await.unwrap());
    assert!(body["errors"].is_array(), "{body}");
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.starts_with("POST http://cyberscan.example:8500/api/v1/token")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn operator_chosen_endpoints_still_use_the_environment_proxy() {
    let proxy = RecordingProxy::start().await;
    let mut envs = vec![
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        (
            "C1FAPP_API_URL",
            "http://c1fapp.example/cifapp/api/".to_owned(),
        ),
    ];
    envs.extend(proxy.env());
    let relay = Relay::start(&envs).await;
    let response = test_client()
        .post(relay.url("/observe/observables"))
        .bearer_auth(hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY))
        .json(&json!([observable("ip", "192.0.2.10")]))
        .send()
        .await
        .unwrap();
    let body = assert_ctim(response.json().await.unwrap());
    assert!(body["errors"].is_array(), "{body}");
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.starts_with("POST http://c1fapp.example/cifapp/api/")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn healthcheck_ignores_proxies() {
    let relay = Relay::start(&[]).await;
    let port = relay.port.to_string();
    let mut envs = vec![("PORT", port.as_str()), ("HOST", "0.0.0.0")];
    let dead = format!("http://127.0.0.1:{}", closed_port());
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "all_proxy",
    ] {
        envs.push((name, dead.as_str()));
    }
    let (code, _, stderr) = run(&["healthcheck"], &envs);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn the_grace_period_bounds_how_long_shutdown_waits() {
    let c1fapp = slow_c1fapp(Duration::from_secs(30)).await;
    let mut envs = c1fapp_env(&c1fapp);
    envs.push(("SHUTDOWN_GRACE_SECONDS", "1".to_owned()));
    envs.push(("UPSTREAM_TIMEOUT_SECONDS", "60".to_owned()));
    let relay = Relay::start(&envs).await;
    let token = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);
    let in_flight = tokio::spawn(
        test_client()
            .post(relay.url("/observe/observables"))
            .bearer_auth(&token)
            .json(&json!([observable("ip", "192.0.2.10")]))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.signal("TERM");
    let (code, output) = relay.wait().await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        in_flight.await.unwrap().is_err(),
        "the request outlasting the grace period was cut, not awaited for 30 s"
    );
}

/// Runs a session with every kind of secret through a relay at `RUST_LOG`
/// `level`, and returns what it logged.
async fn logged_session(level: &str) -> (String, Vec<String>) {
    let c1fapp = MockServer::start().await;
    // Answers that hold the key where a parser would quote it: a list of the
    // key instead of records, and a record whose report date is the key.
    for (value, answer) in [
        ("192.0.2.11", json!([C1FAPP_KEY])),
        (
            "192.0.2.12",
            json!([c1fapp_record(json!({"reportime": [C1FAPP_KEY]}))]),
        ),
    ] {
        Mock::given(method("POST"))
            .and(wiremock::matchers::body_partial_json(
                json!({"request": value}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .with_priority(1)
            .mount(&c1fapp)
            .await;
    }
    // C1fApp echoing the key back must not put it into the logs either.
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(403).set_body_string(format!("Invalid API key {C1FAPP_KEY}")),
        )
        .mount(&c1fapp)
        .await;
    let cyberscan = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"access_token": CYBERSCAN_TOKEN})),
        )
        .mount(&cyberscan)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"vulnerabilities": [vulnerability("OpenSSH", "")]})),
        )
        .mount(&cyberscan)
        .await;
    // A CyberScan whose token answer is a bare string: the API key.
    let hostile_cyberscan = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(CYBERSCAN_KEY)))
        .mount(&hostile_cyberscan)
        .await;
    let jwks = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk("relay-test-key")]})),
        )
        .mount(&jwks)
        .await;

    let relay = Relay::start(&[
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        ("C1FAPP_API_URL", format!("{}{C1FAPP_PATH}", c1fapp.uri())),
        ("JWKS_HOSTS", jwks.uri()),
        ("CYBERSCAN_ALLOW_PRIVATE_HOSTS", "true".to_owned()),
        ("RUST_LOG", level.to_owned()),
    ])
    .await;
    let hs256 = hs256_token(
        &json!({"key": C1FAPP_KEY, "api_key": CYBERSCAN_KEY, "host": cyberscan.uri()}),
        SECRET_KEY,
    );
    let rs256 = rs256_token(
        &json!({
            "key": C1FAPP_KEY,
            "jwks_host": jwks.uri().trim_start_matches("http://"),
            "aud": format!("http://127.0.0.1:{}", relay.port),
        }),
        "relay-test-key",
        Some("relay-test-key"),
    );
    let forged = hs256_token(&json!({"key": "forged-key-value"}), "not-the-secret-key");
    let client = test_client();
    for token in [&hs256, &rs256, &forged] {
        for route in ["/observe/observables", "/refer/observables", "/health"] {
            let response = client
                .post(relay.url(route))
                .bearer_auth(token)
                .json(&json!([observable("ip", "192.0.2.10")]))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    let hostile = hs256_token(
        &json!({"api_key": CYBERSCAN_KEY, "host": hostile_cyberscan.uri()}),
        SECRET_KEY,
    );
    for (token, observables) in [
        (
            &hs256,
            json!([
                observable("ip", "192.0.2.11"),
                observable("ip", "192.0.2.12")
            ]),
        ),
        (&hostile, json!([observable("ip", "192.0.2.10")])),
    ] {
        let response = client
            .post(relay.url("/observe/observables"))
            .bearer_auth(token)
            .json(&observables)
            .send()
            .await
            .unwrap();
        let body = assert_ctim(response.json().await.unwrap());
        assert_eq!(body["errors"][0]["code"], "key error", "{body}");
    }
    relay.signal("TERM");
    let (_, output) = relay.wait().await;
    let secrets = vec![
        hs256.clone(),
        rs256.clone(),
        forged.clone(),
        SECRET_KEY.to_owned(),
        C1FAPP_KEY.to_owned(),
        CYBERSCAN_KEY.to_owned(),
        CYBERSCAN_TOKEN.to_owned(),
        "forged-key-value".to_owned(),
        // Each token's signature alone, in case a token is logged in parts.
        hs256.rsplit('.').next().unwrap().to_owned(),
        rs256.rsplit('.').next().unwrap().to_owned(),
    ];
    (output, secrets)
}

#[tokio::test]
async fn no_token_key_or_access_token_ever_reaches_the_logs() {
    for level in ["info", "trace"] {
        let (output, secrets) = logged_session(level).await;
        assert!(
            output.lines().count() > 10,
            "{level}: the session was logged:\n{output}"
        );
        for secret in &secrets {
            assert!(
                !output.contains(secret.as_str()),
                "{level}: {secret} leaked into:\n{output}"
            );
        }
    }
}

fn json_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| line["message"] == message)
        .collect()
}

#[tokio::test]
async fn logs_are_json_lines_with_one_line_per_request_and_unsuccessful_upstream_calls() {
    let (output, _) = logged_session("info").await;
    let lines = json_lines(&output);
    let requests = with_message(&lines, "request");
    assert_eq!(
        requests.len(),
        12,
        "eleven requests and the readiness probe"
    );
    for line in &requests {
        assert!(
            line["span"]["request_id"]
                .as_str()
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
            "{line}"
        );
        assert!(
            line["route"].is_string() && line["status"].is_u64() && line["latency_ms"].is_f64(),
            "{line}"
        );
        assert!(line["method"].is_string(), "{line}");
    }
    // At `info`, an answered upstream call is logged only when its status
    // is not a success (the session's C1fApp answers 403 to most lookups).
    let upstream = with_message(&lines, "upstream call");
    assert!(!upstream.is_empty());
    for line in &upstream {
        assert!(
            line["provider"].is_string() && line["latency_ms"].is_f64(),
            "{line}"
        );
        assert!(
            line["status"].as_u64().is_some_and(|status| status >= 300),
            "a successful call is not logged at info: {line}"
        );
        assert!(
            line["span"]["request_id"].is_string(),
            "an upstream call is logged within its request: {line}"
        );
    }
}

#[tokio::test]
async fn every_upstream_call_is_logged_when_the_upstream_module_logs_at_debug() {
    let (output, _) = logged_session("info,ctr_relay::providers::upstream=debug").await;
    let lines = json_lines(&output);
    let upstream = with_message(&lines, "upstream call");
    for line in &upstream {
        assert!(
            line["provider"].is_string() && line["status"].is_u64() && line["latency_ms"].is_f64(),
            "{line}"
        );
        assert!(
            line["span"]["request_id"].is_string(),
            "an upstream call is logged within its request: {line}"
        );
    }
    assert!(
        upstream
            .iter()
            .any(|line| line["status"].as_u64().is_some_and(|status| status < 300)),
        "successful calls are logged at debug"
    );
    let providers: std::collections::HashSet<&str> = upstream
        .iter()
        .filter_map(|line| line["provider"].as_str())
        .collect();
    assert!(
        providers.contains("C1fApp") && providers.contains("CyberScan"),
        "{providers:?}"
    );
    assert_eq!(with_message(&lines, "request").len(), 12);
}

#[tokio::test]
async fn text_logs_are_available_for_humans() {
    let relay = Relay::start(&[("LOG_FORMAT", "text".to_owned())]).await;
    relay.signal("TERM");
    let (code, output) = relay.wait().await;
    assert_eq!(code, Some(0));
    let first = output
        .lines()
        .find(|line| line.contains("listening"))
        .unwrap();
    assert!(serde_json::from_str::<Value>(first).is_err(), "{first}");
    assert!(first.contains("INFO"), "{first}");
}
