//! The CyberScan provider: token handling, lookups, refer, health, errors.

use std::time::Duration;

use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    CYBERSCAN_KEY, CYBERSCAN_TOKEN, SECRET_KEY, TestApp, closed_port, cyberscan_answers,
    cyberscan_issues_tokens, cyberscan_never_called, hs256_token, observable, one_error, spawn_app,
    spawn_app_with, vulnerability,
};

async fn observe(app: &TestApp, observables: Value) -> Value {
    app.post_json_with("/observe/observables", &app.cyberscan_token(), &observables)
        .await
}

fn titles(response: &Value) -> Vec<String> {
    response["data"]["sightings"]["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sighting| sighting["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_ip_gets_a_sighting_per_vulnerability() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/vulnerabilities/ip/192.0.2.10",
        json!({"ip": "192.0.2.10", "vulnerabilities": [vulnerability("OpenSSH", "CVE-2020-15778"), vulnerability("Untrusted CA", "")]}),
        1,
    )
    .await;

    let response = observe(&app, json!([observable("ip", "192.0.2.10")])).await;
    assert!(response.get("errors").is_none(), "{response}");
    let data = &response["data"];
    assert_eq!(data["sightings"]["count"], 2);
    assert!(
        data.get("judgements").is_none(),
        "vulnerabilities are not judgements"
    );
    assert!(data.get("verdicts").is_none());
    let sighting = &data["sightings"]["docs"][0];
    assert!(
        sighting["id"]
            .as_str()
            .unwrap()
            .starts_with("transient:sighting-")
    );
    assert_eq!(sighting["type"], "sighting");
    assert_eq!(sighting["schema_version"], "1.3.28");
    assert_eq!(sighting["source"], "CyberScan");
    assert_eq!(sighting["confidence"], "High");
    assert_eq!(sighting["count"], 1);
    assert_eq!(sighting["internal"], true);
    assert_eq!(sighting["title"], "OpenSSH");
    assert_eq!(sighting["description"], "OpenSSH is vulnerable");
    assert_eq!(
        sighting["short_description"],
        "Vulnerability CVE-2020-15778 observed at CyberScan"
    );
    assert_eq!(
        sighting["observables"],
        json!([observable("ip", "192.0.2.10")])
    );
    let start = sighting["observed_time"]["start_time"].as_str().unwrap();
    let seen = chrono::DateTime::parse_from_rfc3339(start).unwrap();
    assert!(
        (chrono::Utc::now() - seen.to_utc()).num_seconds().abs() < 60,
        "{start}"
    );
    assert!(start.ends_with('Z') && !start.contains('.'), "{start}");
    assert_eq!(
        sighting["data"],
        json!({
            "columns": [
                {"name": "name", "type": "string"},
                {"name": "family", "type": "string"},
                {"name": "description", "type": "string"},
                {"name": "severity", "type": "string"},
                {"name": "port", "type": "string"},
                {"name": "protocol", "type": "string"},
                {"name": "cve", "type": "string"},
                {"name": "cvss", "type": "string"},
                {"name": "confidence", "type": "string"}
            ],
            "rows": [["OpenSSH", "General", "OpenSSH is vulnerable", "Medium", "22", "tcp", "CVE-2020-15778", "6.8", "30"]]
        })
    );
    assert_eq!(
        data["sightings"]["docs"][1]["short_description"],
        "Vulnerability observed at CyberScan"
    );
}

#[tokio::test]
async fn a_domain_is_resolved_to_its_ip_first() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/domain/j-p.link",
        json!({"domain": "j-p.link", "ip": "116.203.177.93", "vulns": {}, "cvss_total": 34.4, "open_ports": 5, "details_page": "https://www.cyberscan.io/x"}),
        1,
    )
    .await;
    cyberscan_answers(
        &app,
        "/vulnerabilities/ip/116.203.177.93",
        json!({"ip": "116.203.177.93", "vulnerabilities": [vulnerability("OpenSSH", "CVE-2020-15778")]}),
        1,
    )
    .await;
    let response = observe(&app, json!([observable("domain", "j-p.link")])).await;
    assert_eq!(
        response["data"]["sightings"]["docs"][0]["observables"],
        json!([observable("domain", "j-p.link")]),
        "the observable as requested"
    );
}

#[tokio::test]
async fn a_domain_without_an_ip_has_nothing_to_report() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/domain/nowhere.example",
        json!({"domain": "nowhere.example", "ip": null}),
        1,
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/vulnerabilities/ip/"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&app.cyberscan)
        .await;
    let response = observe(&app, json!([observable("domain", "nowhere.example")])).await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn urls_and_invalid_ips_are_not_sent_to_cyberscan() {
    let app = spawn_app().await;
    cyberscan_never_called(&app).await;
    let response = observe(
        &app,
        json!([
            observable("url", "https://a.example/"),
            observable("ip", "not-an-ip"),
            observable("domain", "..")
        ]),
    )
    .await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn one_token_serves_many_lookups_and_requests() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        cyberscan_answers(
            &app,
            &format!("/vulnerabilities/ip/{ip}"),
            json!({"vulnerabilities": [vulnerability(ip, "")]}),
            2,
        )
        .await;
    }
    let observables = json!([
        observable("ip", "192.0.2.1"),
        observable("ip", "192.0.2.2"),
        observable("ip", "192.0.2.3")
    ]);
    for _ in 0..2 {
        let response = observe(&app, observables.clone()).await;
        assert_eq!(
            titles(&response),
            vec!["192.0.2.1", "192.0.2.2", "192.0.2.3"]
        );
    }
}

#[tokio::test]
async fn a_rejected_token_is_replaced_once() {
    let app = spawn_app().await;
    // The first token is handed out once and then expires.
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"access_token": "old-token"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    cyberscan_issues_tokens(&app, 1).await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer old-token"))
        .respond_with(ResponseTemplate::new(401).set_body_string("token expired"))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    cyberscan_answers(
        &app,
        "/vulnerabilities/ip/192.0.2.10",
        json!({"vulnerabilities": [vulnerability("OpenSSH", "")]}),
        1,
    )
    .await;

    let response = observe(&app, json!([observable("ip", "192.0.2.10")])).await;
    assert_eq!(titles(&response), vec!["OpenSSH"]);
}

#[tokio::test]
async fn a_token_rejected_twice_is_reported_not_retried_forever() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 2).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_string("nope"))
        .expect(2)
        .mount(&app.cyberscan)
        .await;
    let response = observe(&app, json!([observable("ip", "192.0.2.10")])).await;
    assert_eq!(
        response,
        one_error(
            "unauthorized",
            "Unexpected response from CyberScan: 401 nope"
        )
    );
}

#[tokio::test]
async fn a_wrong_api_key_is_an_authorization_error() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(ResponseTemplate::new(403).set_body_string("Forbidden"))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    let response = observe(&app, json!([observable("ip", "192.0.2.10")])).await;
    assert_eq!(
        response,
        one_error("authorization error", "Authorization failed: wrong api_key")
    );
}

#[tokio::test]
async fn a_failed_token_call_is_not_cached() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/vulnerabilities/ip/192.0.2.10",
        json!({"vulnerabilities": []}),
        1,
    )
    .await;
    let observables = json!([observable("ip", "192.0.2.10")]);
    assert_eq!(
        observe(&app, observables.clone()).await,
        one_error("unknown", "Unexpected response from CyberScan: 503 busy")
    );
    assert_eq!(observe(&app, observables).await, json!({"data": {}}));
}

#[tokio::test]
async fn each_unexpected_status_gets_its_code_and_the_status_and_body() {
    // (status, code, calls): a GET is tried twice on 502, 503 and 504.
    let cases = [
        (400, "invalid argument", 1),
        (404, "not found", 1),
        (429, "too many requests", 1),
        (500, "unknown", 1),
        (502, "unknown", 2),
        (503, "unknown", 2),
        (504, "unknown", 2),
        (302, "unknown", 1),
    ];
    for (status, code, calls) in cases {
        let app = spawn_app().await;
        cyberscan_issues_tokens(&app, 1).await;
        Mock::given(method("GET"))
            .and(path("/api/v1/vulnerabilities/ip/192.0.2.10"))
            .respond_with(ResponseTemplate::new(status).set_body_string("upstream says no"))
            .expect(calls)
            .mount(&app.cyberscan)
            .await;
        let response = observe(&app, json!([observable("ip", "192.0.2.10")])).await;
        assert_eq!(
            response,
            one_error(
                code,
                &format!("Unexpected response from CyberScan: {status} upstream says no")
            ),
            "HTTP {status}"
        );
    }
}

#[tokio::test]
async fn malformed_answers_are_key_errors() {
    let key_error = one_error(
        "key error",
        "The data structure of CyberScan API has changed. The module is broken.",
    );
    // A token answer without a token.
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "x"})))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    assert_eq!(
        observe(&app, json!([observable("ip", "192.0.2.10")])).await,
        key_error
    );

    // Vulnerability answers of the wrong shape.
    for body in [
        json!({"ip": "192.0.2.10"}),
        json!({"vulnerabilities": "none"}),
        json!({"vulnerabilities": [{"family": "no name"}]}),
        json!([1, 2]),
    ] {
        let app = spawn_app().await;
        cyberscan_issues_tokens(&app, 1).await;
        cyberscan_answers(&app, "/vulnerabilities/ip/192.0.2.10", body.clone(), 1).await;
        assert_eq!(
            observe(&app, json!([observable("ip", "192.0.2.10")])).await,
            key_error,
            "{body}"
        );
    }

    // A body that is not JSON at all.
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    assert_eq!(
        observe(&app, json!([observable("domain", "a.example")])).await,
        key_error
    );
}

#[tokio::test]
async fn a_slow_cyberscan_is_a_timeout() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    let response = observe(&app, json!([observable("ip", "192.0.2.10")])).await;
    assert_eq!(
        response,
        one_error("timeout", "CyberScan did not respond within 0.5 seconds")
    );
}

#[tokio::test]
async fn an_unreachable_cyberscan_is_a_connection_error() {
    let app = spawn_app().await;
    let host = format!("http://127.0.0.1:{}", closed_port());
    let token = hs256_token(&json!({"api_key": CYBERSCAN_KEY, "host": host}), SECRET_KEY);
    let response = app
        .post_json_with(
            "/observe/observables",
            &token,
            &json!([observable("ip", "192.0.2.10")]),
        )
        .await;
    assert_eq!(
        response,
        one_error(
            "connection error",
            &format!(
                "Unable to connect to CyberScan, validate the configured API endpoint: {host}/api/v1"
            )
        )
    );
}

#[tokio::test]
async fn a_token_cannot_aim_cyberscan_at_internal_addresses() {
    let app = spawn_app_with(|settings| settings.upstream.allow_private_hosts = false).await;
    cyberscan_never_called(&app).await;
    let port = Url::parse(&app.cyberscan.uri()).unwrap().port().unwrap();
    for (host, named) in [
        (format!("http://127.0.0.1:{port}"), "127.0.0.1"),
        (format!("http://localhost:{port}"), "localhost"),
        (format!("http://[::1]:{port}"), "[::1]"),
    ] {
        let refusal = one_error(
            "connection error",
            &format!(
                "Unable to connect to CyberScan: {named} is a private or local address, and the \
                 relay connects CyberScan only to public addresses (the relay's operator can allow \
                 private ones with CYBERSCAN_ALLOW_PRIVATE_HOSTS=true)"
            ),
        );
        let token = hs256_token(&json!({"api_key": CYBERSCAN_KEY, "host": host}), SECRET_KEY);
        for route in ["/observe/observables", "/refer/observables"] {
            let response = app
                .post_json_with(route, &token, &json!([observable("ip", "192.0.2.10")]))
                .await;
            assert_eq!(response, refusal, "{host} {route}");
        }
        let health = app.post_json_with("/health", &token, &json!({})).await;
        assert_eq!(health, refusal, "{host}");
    }
}

#[tokio::test]
async fn the_entity_limit_bounds_the_sightings() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    let findings: Vec<Value> = (0..5)
        .map(|i| vulnerability(&format!("v{i}"), ""))
        .collect();
    cyberscan_answers(
        &app,
        "/vulnerabilities/ip/192.0.2.10",
        json!({"vulnerabilities": findings}),
        1,
    )
    .await;
    let token = hs256_token(
        &json!({"api_key": CYBERSCAN_KEY, "host": app.cyberscan.uri(), "CTR_ENTITIES_LIMIT": "2"}),
        SECRET_KEY,
    );
    let response = app
        .post_json_with(
            "/observe/observables",
            &token,
            &json!([observable("ip", "192.0.2.10")]),
        )
        .await;
    assert_eq!(titles(&response), vec!["v0", "v1"]);
}

#[tokio::test]
async fn refer_links_to_the_details_page_of_each_observable() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(&app, "/ip/116.203.177.93", json!({"ip": "116.203.177.93", "details_page": "https://www.cyberscan.io/vulnerabilities/ip/116.203.177.93"}), 1).await;
    cyberscan_answers(&app, "/domain/j-p.link", json!({"domain": "j-p.link", "ip": "116.203.177.93", "details_page": "https://www.cyberscan.io/vulnerabilities/j-p.link/116.203.177.93"}), 1).await;
    let response = app
        .post_json_with(
            "/refer/observables",
            &app.cyberscan_token(),
            &json!([
                observable("ip", "116.203.177.93"),
                observable("url", "https://j-p.link/"),
                observable("domain", "j-p.link")
            ]),
        )
        .await;
    assert_eq!(
        response,
        json!({"data": [
            {
                "id": "ref-cyberscan-search-ip-116.203.177.93",
                "title": "Details for this ip",
                "description": "Details for this ip in the CyberScan",
                "url": "https://www.cyberscan.io/vulnerabilities/ip/116.203.177.93",
                "categories": ["CyberScan"]
            },
            {
                "id": "ref-cyberscan-search-domain-j-p.link",
                "title": "Details for this domain",
                "description": "Details for this domain in the CyberScan",
                "url": "https://www.cyberscan.io/vulnerabilities/j-p.link/116.203.177.93",
                "categories": ["CyberScan"]
            }
        ]})
    );
}

#[tokio::test]
async fn refer_reports_errors_next_to_the_links_found() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/ip/192.0.2.1",
        json!({"details_page": "https://www.cyberscan.io/ip/192.0.2.1"}),
        1,
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/ip/192.0.2.2"))
        .respond_with(ResponseTemplate::new(404).set_body_string("unknown ip"))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    let response = app
        .post_json_with(
            "/refer/observables",
            &app.cyberscan_token(),
            &json!([observable("ip", "192.0.2.2"), observable("ip", "192.0.2.1")]),
        )
        .await;
    assert_eq!(response["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        response["data"][0]["url"],
        "https://www.cyberscan.io/ip/192.0.2.1"
    );
    assert_eq!(
        response["errors"],
        one_error(
            "not found",
            "Unexpected response from CyberScan: 404 unknown ip"
        )["errors"]
    );
}

#[tokio::test]
async fn health_asks_for_a_token() {
    let app = spawn_app().await;
    cyberscan_issues_tokens(&app, 2).await;
    for _ in 0..2 {
        let response = app
            .post_json_with("/health", &app.cyberscan_token(), &json!({}))
            .await;
        assert_eq!(response, json!({"data": {"status": "ok"}}));
    }
}

#[tokio::test]
async fn health_reports_a_wrong_api_key() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(ResponseTemplate::new(403))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    let response = app
        .post_json_with("/health", &app.cyberscan_token(), &json!({}))
        .await;
    assert_eq!(
        response,
        one_error("authorization error", "Authorization failed: wrong api_key")
    );
}

#[tokio::test]
async fn the_token_call_sends_the_api_key_and_data_calls_the_token() {
    let app = spawn_app().await;
    // Both matchers are in the helpers; this test names the contract.
    cyberscan_issues_tokens(&app, 1).await;
    Mock::given(method("GET"))
        .and(path("/api/v1/vulnerabilities/ip/192.0.2.10"))
        .and(header(
            "authorization",
            format!("Bearer {CYBERSCAN_TOKEN}").as_str(),
        ))
        .and(header(
            "user-agent",
            concat!("ctr-relay/", env!("CARGO_PKG_VERSION")),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"vulnerabilities": []})))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    assert_eq!(
        observe(&app, json!([observable("ip", "192.0.2.10")])).await,
        json!({"data": {}})
    );
}
