//! What a security operator looks for: a start-up line that tells which
//! tokens can be accepted, request log lines that name the caller and the
//! token's issuer and audience (never the token), and refusals counted by
//! reason.

use serde_json::{Value, json};

use crate::helpers::{
    C1FAPP_KEY, C1FAPP_PATH, SECRET_KEY, c1fapp_finds, hs256_token, observable, spawn_app,
    test_client,
};
use crate::relay_process::Relay;

/// The JSON log lines of `output` whose message is `message`.
fn lines_with(output: &str, message: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

#[tokio::test]
async fn start_up_says_when_no_token_can_be_accepted_and_how_to_fix_it() {
    let relay = Relay::start(&[("JWKS_HOSTS", "none".to_owned())]).await;
    relay.signal("TERM");
    let (_, output) = relay.wait().await;
    let warning = output
        .lines()
        .find(|line| line.contains("no token can be accepted"))
        .unwrap_or_else(|| panic!("no start-up warning:\n{output}"));
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
    assert!(warning.contains("set SECRET_KEY"), "{warning}");

    let relay = Relay::start(&[]).await;
    relay.signal("TERM");
    let (_, output) = relay.wait().await;
    assert!(!output.contains("no token can be accepted"), "{output}");
    assert!(!output.contains("SECRET_KEY is shorter"), "{output}");
    assert!(
        output.contains("HS256 tokens are refused (SECRET_KEY is unset)"),
        "{output}"
    );
}

#[tokio::test]
async fn a_short_secret_key_is_warned_about_with_the_reason() {
    let relay = Relay::start(&[("SECRET_KEY", "only-sixteen-byt".to_owned())]).await;
    relay.signal("TERM");
    let (_, output) = relay.wait().await;
    let warning = output
        .lines()
        .find(|line| line.contains("SECRET_KEY is shorter than 32 bytes"))
        .unwrap_or_else(|| panic!("no warning:\n{output}"));
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
    assert!(warning.contains("\"bytes\":16"), "{warning}");
    assert!(
        !output.contains("only-sixteen-byt"),
        "the key reached the log"
    );
}

#[tokio::test]
async fn request_lines_name_the_caller_and_the_tokens_issuer_and_audience() {
    let c1fapp = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&c1fapp)
        .await;
    let relay = Relay::start(&[
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        ("C1FAPP_API_URL", format!("{}{C1FAPP_PATH}", c1fapp.uri())),
    ])
    .await;
    let accepted = hs256_token(
        &json!({"key": C1FAPP_KEY, "iss": "tenant-a.example", "aud": ["https://relay.example", "x"]}),
        SECRET_KEY,
    );
    let forged = hs256_token(
        &json!({"key": C1FAPP_KEY, "iss": "forger"}),
        "another-secret",
    );
    let client = test_client();
    for token in [&accepted, &forged] {
        let response = client
            .post(relay.url("/observe/observables"))
            .bearer_auth(token)
            .header("X-Forwarded-For", "203.0.113.9")
            .json(&json!([observable("ip", "192.0.2.10")]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    relay.signal("TERM");
    let (_, output) = relay.wait().await;
    let requests: Vec<Value> = lines_with(&output, "request")
        .into_iter()
        .filter(|line| line["route"] == "/observe/observables")
        .collect();
    assert_eq!(requests.len(), 2, "{output}");
    for line in &requests {
        assert_eq!(line["span"]["client"], "127.0.0.1", "{line}");
        assert_eq!(line["span"]["forwarded_for"], "203.0.113.9", "{line}");
    }
    assert_eq!(requests[0]["iss"], "tenant-a.example");
    assert_eq!(requests[0]["aud"], "https://relay.example,x");
    assert!(requests[0].get("auth_failure").is_none());
    assert_eq!(requests[1]["auth_failure"], "wrong_secret");
    assert!(
        requests[1].get("iss").is_none(),
        "an unverified issuer is not logged"
    );
    for token in [&accepted, &forged] {
        assert!(!output.contains(token.as_str()), "a token reached the log");
    }
}

#[tokio::test]
async fn refused_tokens_are_counted_by_reason() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    let body = json!([observable("ip", "192.0.2.10")]);
    let good = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);
    let forged = hs256_token(&json!({"key": C1FAPP_KEY}), "another-secret");
    app.post("/observe/observables", &good, &body).await;
    for _ in 0..2 {
        app.post("/observe/observables", &forged, &body).await;
    }
    let response = app
        .http
        .post(app.url("/observe/observables"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metrics = crate::metrics::scrape(&app).await;
    assert!(
        metrics.contains("ctr_relay_auth_failures_total{reason=\"wrong_secret\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ctr_relay_auth_failures_total{reason=\"missing_header\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        metrics.matches("ctr_relay_auth_failures_total{").count(),
        2,
        "the accepted token is not a failure"
    );
}

#[tokio::test]
async fn with_metrics_port_the_metrics_leave_the_api_port() {
    let metrics_port = crate::helpers::closed_port();
    let relay = Relay::start(&[("METRICS_PORT", metrics_port.to_string())]).await;
    let client = test_client();
    let on_api = client.get(relay.url("/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), 404);
    let on_own = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_own.status(), 200);
    let text = on_own.text().await.unwrap();
    assert!(
        text.contains("ctr_relay_http_requests_total{route=\"unmatched\",status=\"404\"} 1"),
        "the API's requests are counted there:\n{text}"
    );
    relay.signal("TERM");
    let (code, output) = relay.wait().await;
    assert_eq!(code, Some(0), "{output}");
}
