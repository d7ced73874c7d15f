//! One token carrying both providers' credentials.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    C1FAPP_PATH, c1fapp_finds, c1fapp_record, c1fapp_search, cyberscan_answers,
    cyberscan_issues_tokens, cyberscan_never_called, observable, one_error, spawn_app,
    vulnerability,
};

fn sources(response: &Value) -> Vec<(String, String)> {
    response["data"]["sightings"]["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sighting| {
            (
                sighting["source"].as_str().unwrap().to_owned(),
                sighting["observables"][0]["value"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn both_providers_answer_in_one_response_in_request_order() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.1", json!([c1fapp_record(json!({}))]), 1).await;
    c1fapp_finds(&app, "192.0.2.2", json!([c1fapp_record(json!({}))]), 1).await;
    cyberscan_issues_tokens(&app, 1).await;
    for ip in ["192.0.2.1", "192.0.2.2"] {
        cyberscan_answers(
            &app,
            &format!("/vulnerabilities/ip/{ip}"),
            json!({"vulnerabilities": [vulnerability("OpenSSH", "")]}),
            1,
        )
        .await;
    }
    let response = app
        .post_json_with(
            "/observe/observables",
            &app.both_token(),
            &json!([observable("ip", "192.0.2.1"), observable("ip", "192.0.2.2")]),
        )
        .await;
    assert!(response.get("errors").is_none(), "{response}");
    assert_eq!(
        sources(&response),
        vec![
            ("C1fApp".to_owned(), "192.0.2.1".to_owned()),
            ("CyberScan".to_owned(), "192.0.2.1".to_owned()),
            ("C1fApp".to_owned(), "192.0.2.2".to_owned()),
            ("CyberScan".to_owned(), "192.0.2.2".to_owned()),
        ]
    );
    assert_eq!(
        response["data"]["verdicts"]["count"], 2,
        "C1fApp verdicts only"
    );
}

#[tokio::test]
async fn a_failing_cyberscan_keeps_c1fapp_data() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.1", json!([c1fapp_record(json!({}))]), 1).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(ResponseTemplate::new(500).set_body_string("down"))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    let response = app
        .post_json_with(
            "/observe/observables",
            &app.both_token(),
            &json!([observable("ip", "192.0.2.1")]),
        )
        .await;
    assert_eq!(
        sources(&response),
        vec![("C1fApp".to_owned(), "192.0.2.1".to_owned())]
    );
    assert_eq!(
        response["errors"],
        one_error("unknown", "Unexpected response from CyberScan: 500 down")["errors"]
    );
}

#[tokio::test]
async fn a_failing_c1fapp_keeps_cyberscan_data() {
    let app = spawn_app().await;
    c1fapp_search("192.0.2.1")
        .respond_with(ResponseTemplate::new(200).set_body_string("garbage"))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/vulnerabilities/ip/192.0.2.1",
        json!({"vulnerabilities": [vulnerability("OpenSSH", "")]}),
        1,
    )
    .await;
    let response = app
        .post_json_with(
            "/observe/observables",
            &app.both_token(),
            &json!([observable("ip", "192.0.2.1")]),
        )
        .await;
    assert_eq!(
        sources(&response),
        vec![("CyberScan".to_owned(), "192.0.2.1".to_owned())]
    );
    assert_eq!(
        response["errors"],
        one_error(
            "key error",
            "The data structure of C1fApp API has changed. The module is broken."
        )["errors"]
    );
}

#[tokio::test]
async fn urls_go_to_c1fapp_alone() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "https://a.example/", json!([]), 1).await;
    cyberscan_never_called(&app).await;
    let response = app
        .post_json_with(
            "/observe/observables",
            &app.both_token(),
            &json!([observable("url", "https://a.example/")]),
        )
        .await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn health_checks_both_providers() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    cyberscan_issues_tokens(&app, 1).await;
    let response = app
        .post_json_with("/health", &app.both_token(), &json!({}))
        .await;
    assert_eq!(response, json!({"data": {"status": "ok"}}));
}

#[tokio::test]
async fn health_fails_when_either_provider_fails() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .respond_with(ResponseTemplate::new(403))
        .expect(1)
        .mount(&app.cyberscan)
        .await;
    let response = app
        .post_json_with("/health", &app.both_token(), &json!({}))
        .await;
    assert_eq!(
        response,
        one_error("authorization error", "Authorization failed: wrong api_key")
    );
}

#[tokio::test]
async fn refer_asks_cyberscan_only() {
    let app = spawn_app().await;
    crate::helpers::c1fapp_never_called(&app).await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/ip/192.0.2.1",
        json!({"details_page": "https://www.cyberscan.io/ip/192.0.2.1"}),
        1,
    )
    .await;
    let response = app
        .post_json_with(
            "/refer/observables",
            &app.both_token(),
            &json!([observable("ip", "192.0.2.1")]),
        )
        .await;
    assert_eq!(response["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn deliberate_asks_c1fapp_only() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.1", json!([c1fapp_record(json!({}))]), 1).await;
    cyberscan_never_called(&app).await;
    let response = app
        .post_json_with(
            "/deliberate/observables",
            &app.both_token(),
            &json!([observable("ip", "192.0.2.1")]),
        )
        .await;
    assert_eq!(response["data"]["verdicts"]["count"], 1);
}
