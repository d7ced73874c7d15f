//! GET /metrics: Prometheus text with requests, upstream calls and key set fetches.

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::helpers::{
    c1fapp_finds, c1fapp_search, jwk, jwks_serves, observable, rs256_token, spawn_app,
};

/// `GET /metrics`, checked to be Prometheus text.
pub async fn scrape(app: &crate::helpers::TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

fn assert_has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
}

#[tokio::test]
async fn requests_upstream_calls_and_key_set_fetches_are_counted() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.1", json!([]), 2).await;
    c1fapp_search("192.0.2.2")
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;

    let body = json!([observable("ip", "192.0.2.1"), observable("ip", "192.0.2.2")]);
    app.post_json("/observe/observables", &body).await;
    let rs256 = rs256_token(
        &json!({"key": crate::helpers::C1FAPP_KEY, "jwks_host": app.jwks_host(), "aud": app.address}),
        "relay-test-key",
        Some("relay-test-key"),
    );
    app.post_json_with(
        "/observe/observables",
        &rs256,
        &json!([observable("ip", "192.0.2.1")]),
    )
    .await;
    app.http.get(app.url("/nowhere")).send().await.unwrap();

    let text = scrape(&app).await;
    assert_has(
        &text,
        r#"ctr_relay_http_requests_total{route="/observe/observables",status="200"} 2"#,
    );
    assert_has(
        &text,
        r#"ctr_relay_http_requests_total{route="unmatched",status="404"} 1"#,
    );
    assert_has(
        &text,
        r#"ctr_relay_http_request_duration_seconds_count{route="/observe/observables"} 2"#,
    );
    assert_has(
        &text,
        r#"ctr_relay_upstream_calls_total{operation="search",outcome="2xx",provider="C1fApp"} 2"#,
    );
    assert_has(
        &text,
        r#"ctr_relay_upstream_calls_total{operation="search",outcome="5xx",provider="C1fApp"} 1"#,
    );
    assert_has(
        &text,
        r#"ctr_relay_upstream_call_duration_seconds_count{operation="search",provider="C1fApp"} 3"#,
    );
    assert_has(
        &text,
        &format!(
            r#"ctr_relay_jwks_fetches_total{{jwks_host="{}",outcome="ok"}} 1"#,
            app.jwks_host()
        ),
    );
    assert!(
        text.contains("ctr_relay_process_resident_memory_bytes"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_need_no_token_and_count_themselves() {
    let app = spawn_app().await;
    scrape(&app).await;
    let text = scrape(&app).await;
    assert_has(
        &text,
        r#"ctr_relay_http_requests_total{route="/metrics",status="200"} 1"#,
    );
}
