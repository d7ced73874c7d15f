//! Lookups of one request run concurrently, and no more than the configured
//! number at once. Proven with an upstream that counts requests in flight,
//! not with timings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use url::Url;

use crate::helpers::{observable, spawn_app_with};

/// An upstream that holds every request until `release_at` requests are in
/// flight together (or `hold` has passed), then answers an empty result in the
/// shape of the endpoint asked (C1fApp, CyberScan token, CyberScan
/// vulnerabilities). It records the most requests it ever saw in flight at once.
struct CountingUpstream {
    port: u16,
    most_in_flight: Arc<AtomicUsize>,
}

impl CountingUpstream {
    async fn start(release_at: usize, hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let most_in_flight = Arc::new(AtomicUsize::new(0));
        let (count, _) = watch::channel(0usize);
        let count = Arc::new(count);
        let most = most_in_flight.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                let most = most.clone();
                tokio::spawn(serve(stream, count, most, release_at, hold));
            }
        });
        Self {
            port,
            most_in_flight,
        }
    }

    fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    count: Arc<watch::Sender<usize>>,
    most: Arc<AtomicUsize>,
    release_at: usize,
    hold: Duration,
) {
    while let Some(path) = read_request(&mut stream).await {
        count.send_modify(|n| *n += 1);
        most.fetch_max(*count.borrow(), Ordering::SeqCst);
        let mut seen = count.subscribe();
        let _ = tokio::time::timeout(hold, seen.wait_for(|n| *n >= release_at)).await;
        let body = if path.ends_with("/token") {
            r#"{"access_token": "t"}"#
        } else if path.contains("/vulnerabilities/") {
            r#"{"vulnerabilities": []}"#
        } else {
            "[]"
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let written = stream.write_all(answer.as_bytes()).await;
        count.send_modify(|n| *n -= 1);
        if written.is_err() {
            return;
        }
    }
}

/// Reads one request (head and `content-length` body) and returns its path;
/// `None` at end of stream.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return head.split_whitespace().nth(1).map(str::to_owned);
            }
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buffer[..n]),
        }
    }
}

fn ips(n: usize) -> Value {
    Value::Array(
        (1..=n)
            .map(|i| observable("ip", &format!("192.0.2.{i}")))
            .collect(),
    )
}

#[tokio::test]
async fn the_observables_of_a_request_are_looked_up_at_the_same_time() {
    let upstream = CountingUpstream::start(5, Duration::from_secs(2)).await;
    let port = upstream.port;
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url =
            Url::parse(&format!("http://127.0.0.1:{port}/cifapp/api/")).unwrap();
        settings.upstream.timeout = Duration::from_secs(10);
        settings.limits.lookup_concurrency = 8;
    })
    .await;
    let response = app.post_json("/observe/observables", &ips(5)).await;
    assert_eq!(response, json!({"data": {}}));
    assert_eq!(
        upstream.most_in_flight(),
        5,
        "all five lookups were in flight together"
    );
}

#[tokio::test]
async fn no_more_lookups_than_the_limit_are_in_flight() {
    let upstream = CountingUpstream::start(3, Duration::from_millis(100)).await;
    let port = upstream.port;
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url =
            Url::parse(&format!("http://127.0.0.1:{port}/cifapp/api/")).unwrap();
        settings.upstream.timeout = Duration::from_secs(10);
        settings.limits.lookup_concurrency = 2;
    })
    .await;
    let response = app.post_json("/observe/observables", &ips(6)).await;
    assert_eq!(response, json!({"data": {}}));
    assert_eq!(upstream.most_in_flight(), 2);
}

#[tokio::test]
async fn both_providers_are_asked_at_the_same_time() {
    let upstream = CountingUpstream::start(2, Duration::from_millis(300)).await;
    let port = upstream.port;
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url =
            Url::parse(&format!("http://127.0.0.1:{port}/cifapp/api/")).unwrap();
        settings.upstream.timeout = Duration::from_secs(10);
    })
    .await;
    let token = crate::helpers::hs256_token(
        &json!({
            "key": crate::helpers::C1FAPP_KEY,
            "api_key": crate::helpers::CYBERSCAN_KEY,
            "host": format!("http://127.0.0.1:{port}")
        }),
        crate::helpers::SECRET_KEY,
    );
    let response = app
        .post_json_with(
            "/observe/observables",
            &token,
            &json!([observable("ip", "192.0.2.1")]),
        )
        .await;
    assert_eq!(response, json!({"data": {}}));
    assert_eq!(
        upstream.most_in_flight(),
        2,
        "C1fApp and CyberScan were asked together"
    );
}

#[tokio::test]
async fn calls_in_flight_to_one_provider_are_bounded_across_requests() {
    let upstream = CountingUpstream::start(3, Duration::from_millis(100)).await;
    let port = upstream.port;
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url =
            Url::parse(&format!("http://127.0.0.1:{port}/cifapp/api/")).unwrap();
        settings.upstream.timeout = Duration::from_secs(10);
        settings.upstream.max_in_flight = 2;
    })
    .await;
    let body = ips(2);
    let requests = (0..3).map(|_| app.post_json("/observe/observables", &body));
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response, json!({"data": {}}));
    }
    assert_eq!(upstream.most_in_flight(), 2);
}

#[tokio::test]
async fn waiting_for_a_place_counts_against_the_timeout() {
    let app = spawn_app_with(|settings| settings.upstream.max_in_flight = 1).await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app.post_json("/observe/observables", &ips(2)).await;
    assert_eq!(
        response,
        crate::helpers::one_error("timeout", "C1fApp did not respond within 0.5 seconds"),
        "one call timed out at the upstream, the other waiting for its place"
    );
}
