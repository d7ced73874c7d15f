//! One deadline per request, and cancellation: when the caller goes away, no
//! further upstream call of its request is started and those in flight are
//! dropped; every call of a request shares its deadline.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    C1FAPP_PATH, CYBERSCAN_KEY, SECRET_KEY, c1fapp_record, c1fapp_token, hs256_token, observable,
    spawn_app_with,
};

fn ips(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| observable("ip", &format!("192.0.2.{}", i + 1)))
            .collect(),
    )
}

#[tokio::test]
async fn when_the_caller_goes_away_no_further_upstream_call_is_made() {
    let app = spawn_app_with(|settings| {
        settings.limits.lookup_concurrency = 4;
        settings.upstream.timeout = Duration::from_secs(10);
    })
    .await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([c1fapp_record(json!({}))]))
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&app.c1fapp)
        .await;
    // 20 lookups, 4 at a time, 800 ms each: 4 s of calls. The caller gives up
    // after 300 ms, during the first four.
    let gave_up = app
        .http
        .post(app.url("/observe/observables"))
        .bearer_auth(c1fapp_token())
        .timeout(Duration::from_millis(300))
        .json(&ips(20))
        .send()
        .await;
    assert!(gave_up.is_err(), "the caller timed out");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let calls = app.c1fapp.received_requests().await.unwrap().len();
    assert_eq!(
        calls, 4,
        "only the lookups in flight when the caller left were ever sent"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(
            r#"ctr_relay_http_requests_total{route="/observe/observables",status="499"} 1"#
        ),
        "the cancelled request is counted as 499 (client closed request):\n{metrics}"
    );
}

#[tokio::test]
async fn every_call_of_a_request_shares_one_deadline() {
    let app = spawn_app_with(|settings| {
        settings.upstream.timeout = Duration::from_secs(10);
        settings.limits.request_timeout = Duration::from_millis(700);
    })
    .await;
    // A CyberScan domain lookup chains three calls (token, domain, findings),
    // each of which answers after 400 ms: with a 10 s budget per call they
    // would all be made; within the request's 700 ms only two start.
    for (verb, route, body) in [
        ("POST", "/api/v1/token", json!({"access_token": "t"})),
        (
            "GET",
            "/api/v1/domain/a.example",
            json!({"ip": "192.0.2.1"}),
        ),
        (
            "GET",
            "/api/v1/vulnerabilities/ip/192.0.2.1",
            json!({"vulnerabilities": []}),
        ),
    ] {
        Mock::given(method(verb))
            .and(path(route))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(body)
                    .set_delay(Duration::from_millis(400)),
            )
            .mount(&app.cyberscan)
            .await;
    }
    let token = hs256_token(
        &json!({"api_key": CYBERSCAN_KEY, "host": app.cyberscan.uri()}),
        SECRET_KEY,
    );
    let answer: Value = app
        .post_json_with(
            "/observe/observables",
            &token,
            &json!([observable("domain", "a.example")]),
        )
        .await;
    assert_eq!(
        answer,
        json!({"errors": [{
            "type": "fatal",
            "code": "timeout",
            "message": "CyberScan did not answer within the request's time limit of 0.7 seconds"
        }]})
    );
    let paths: Vec<String> = app
        .cyberscan
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| request.url.path().to_owned())
        .collect();
    assert_eq!(paths, vec!["/api/v1/token", "/api/v1/domain/a.example"]);
}
