//! One tenant cannot harm another, and one request's memory is bounded:
//! places in flight per host a caller chose and per credential, and a budget
//! per request (upstream bytes read, answer bytes kept) within a process-wide
//! one.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    C1FAPP_PATH, CYBERSCAN_KEY, CYBERSCAN_TOKEN, SECRET_KEY, c1fapp_record, c1fapp_token,
    cyberscan_answers, cyberscan_issues_tokens, hs256_token, json_body, observable, spawn_app_with,
    vulnerability,
};

fn ips(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| observable("ip", &format!("198.51.100.{}", i + 1)))
            .collect(),
    )
}

fn cyberscan_token_for(host: &str) -> String {
    hs256_token(&json!({"api_key": CYBERSCAN_KEY, "host": host}), SECRET_KEY)
}

#[tokio::test]
async fn a_stalling_host_chosen_by_one_tenant_does_not_slow_another() {
    let app = spawn_app_with(|settings| {
        settings.upstream.timeout = Duration::from_secs(2);
        settings.upstream.max_in_flight = 8;
        settings.upstream.max_in_flight_per_host = 4;
        settings.limits.lookup_concurrency = 8;
    })
    .await;
    // Tenant A's CyberScan hands out tokens, then never answers a lookup; it
    // is another machine than tenant B's (127.0.0.1).
    let stalling = MockServer::builder()
        .listener(std::net::TcpListener::bind("127.0.0.2:0").unwrap())
        .start()
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "a"})))
        .mount(&stalling)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&stalling)
        .await;
    let lookups = |requests: Vec<wiremock::Request>| {
        requests
            .iter()
            .filter(|request| request.method.as_str() == "GET")
            .count()
    };
    // Tenant B's answers at once.
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/vulnerabilities/ip/192.0.2.10",
        json!({"vulnerabilities": [vulnerability("OpenSSH", "")]}),
        1,
    )
    .await;

    let tenant_a = {
        let (http, url, token) = (
            app.http.clone(),
            app.url("/observe/observables"),
            cyberscan_token_for(&stalling.uri()),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&ips(20))
                .send()
                .await
        })
    };
    // Tenant A's lookups hold every place its host has.
    for _ in 0..200 {
        if lookups(stalling.received_requests().await.unwrap()) >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lookups(stalling.received_requests().await.unwrap()), 4);

    let answer = app
        .post_json_with(
            "/observe/observables",
            &cyberscan_token_for(&app.cyberscan.uri()),
            &json!([observable("ip", "192.0.2.10")]),
        )
        .await;
    assert_eq!(answer["data"]["sightings"]["count"], 1, "{answer}");
    assert!(answer.get("errors").is_none(), "{answer}");
    tenant_a.abort();
}

#[tokio::test]
async fn one_tenant_cannot_take_every_place_of_a_provider() {
    let app = spawn_app_with(|settings| {
        settings.upstream.timeout = Duration::from_secs(2);
        settings.upstream.max_in_flight = 8;
        settings.upstream.max_in_flight_per_credential = 4;
        settings.limits.lookup_concurrency = 8;
    })
    .await;
    // C1fApp stalls for tenant A's key only.
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(wiremock::matchers::body_partial_json(
            json!({"key": "tenant-a-key"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&app.c1fapp)
        .await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([c1fapp_record(json!({}))])))
        .mount(&app.c1fapp)
        .await;
    let tenant_a = {
        let (http, url) = (app.http.clone(), app.url("/observe/observables"));
        let token = hs256_token(&json!({"key": "tenant-a-key"}), SECRET_KEY);
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&ips(20))
                .send()
                .await
        })
    };
    for _ in 0..200 {
        if app.c1fapp.received_requests().await.unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = app
        .post_json_with(
            "/observe/observables",
            &c1fapp_token(),
            &json!([observable("ip", "192.0.2.10")]),
        )
        .await;
    assert_eq!(answer["data"]["sightings"]["count"], 1, "{answer}");
    tenant_a.abort();
}

/// CyberScan answering one huge vulnerability for every IP.
async fn cyberscan_answers_huge_findings(app: &crate::helpers::TestApp, description: usize) {
    cyberscan_issues_tokens(app, 1).await;
    let mut finding = vulnerability("Huge", "CVE-2026-0001");
    finding["description"] = json!("d".repeat(description));
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/vulnerabilities/ip/.*$"))
        .and(wiremock::matchers::header(
            "authorization",
            format!("Bearer {CYBERSCAN_TOKEN}").as_str(),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"vulnerabilities": [finding]})),
        )
        .named("vulnerabilities")
        .mount(&app.cyberscan)
        .await;
}

fn vulnerability_calls(requests: &[wiremock::Request]) -> usize {
    requests
        .iter()
        .filter(|request| request.url.path().starts_with("/api/v1/vulnerabilities/"))
        .count()
}

#[tokio::test]
async fn a_request_reads_no_more_upstream_bytes_than_its_budget() {
    let app = spawn_app_with(|settings| {
        settings.limits.lookup_concurrency = 1;
        settings.limits.max_upstream_bytes = 5 * 1024 * 1024;
    })
    .await;
    cyberscan_answers_huge_findings(&app, 2 * 1024 * 1024).await;
    let response = app
        .post("/observe/observables", &app.cyberscan_token(), &ips(10))
        .await;
    let text = response.text().await.unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["data"]["sightings"]["count"], 2, "two findings fit");
    assert_eq!(
        answer["errors"],
        json!([{
            "type": "fatal",
            "code": "unknown",
            "message": "The request reached its limit of 5242880 bytes of upstream answers \
                        (REQUEST_MAX_UPSTREAM_BYTES); its remaining lookups were not made"
        }])
    );
    let calls = vulnerability_calls(&app.cyberscan.received_requests().await.unwrap());
    assert_eq!(
        calls, 3,
        "the third answer was refused unread; no fourth was asked"
    );
    let description = answer["data"]["sightings"]["docs"][0]["description"]
        .as_str()
        .unwrap();
    assert!(description.chars().count() <= 4097, "the text is clipped");
    assert!(
        text.len() < 64 * 1024,
        "the answer stays small: {} bytes",
        text.len()
    );
}

#[tokio::test]
async fn an_answer_grows_no_larger_than_its_budget() {
    let app = spawn_app_with(|settings| {
        settings.limits.lookup_concurrency = 1;
        settings.limits.max_response_bytes = 40 * 1024;
    })
    .await;
    let records: Vec<Value> = (0..10)
        .map(|n| c1fapp_record(json!({"feed_label": [format!("Feed {n}")]})))
        .collect();
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(Value::Array(records)))
        .mount(&app.c1fapp)
        .await;
    let response = app
        .post("/observe/observables", &c1fapp_token(), &ips(10))
        .await;
    let text = response.text().await.unwrap();
    assert!(text.len() <= 40 * 1024, "{} bytes", text.len());
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["errors"][0]["message"],
        "The answer reached its limit of 40960 bytes (REQUEST_MAX_RESPONSE_BYTES); its \
         remaining lookups were not made"
    );
    assert!(
        answer["data"]["sightings"]["count"].as_u64().unwrap() > 0,
        "{answer}"
    );
    let calls = app.c1fapp.received_requests().await.unwrap().len();
    assert!(
        calls < 10,
        "the lookups after the limit were not made: {calls}"
    );
}

#[tokio::test]
async fn all_requests_together_hold_no_more_than_the_process_budget() {
    let app = spawn_app_with(|settings| {
        settings.limits.lookup_concurrency = 1;
        settings.limits.max_held_bytes = 3 * 1024 * 1024;
    })
    .await;
    cyberscan_answers_huge_findings(&app, 2 * 1024 * 1024).await;
    let answer = json_body(
        app.post("/observe/observables", &app.cyberscan_token(), &ips(5))
            .await,
    )
    .await;
    assert_eq!(answer["data"]["sightings"]["count"], 1);
    assert_eq!(
        answer["errors"],
        json!([{
            "type": "fatal",
            "code": "too many requests",
            "message": "The relay holds its limit of 3145728 bytes for the requests in flight \
                        (MAX_HELD_BYTES); try again shortly"
        }])
    );
    // What the request held was given back: the next one gets as far.
    let again = json_body(
        app.post("/observe/observables", &app.cyberscan_token(), &ips(1))
            .await,
    )
    .await;
    assert_eq!(again["data"]["sightings"]["count"], 1, "{again}");
}
