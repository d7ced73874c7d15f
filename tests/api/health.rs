//! POST /health with C1fApp.

use serde_json::json;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{C1FAPP_KEY, C1FAPP_PATH, c1fapp_token, json_body, one_error, spawn_app};

#[tokio::test]
async fn health_is_ok_when_c1fapp_answers_a_lookup_of_test_com() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(body_json(
            json!({"key": C1FAPP_KEY, "format": "json", "backend": "es", "request": "test.com"}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("Unsupported request ? IPv4/Domain only"),
        )
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app.post("/health", &c1fapp_token(), &json!({})).await;
    assert_eq!(json_body(response).await, json!({"data": {"status": "ok"}}));
}

#[tokio::test]
async fn health_reports_a_rejected_key() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(403).set_body_string("Invalid API key"))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app.post("/health", &c1fapp_token(), &json!({})).await;
    assert_eq!(
        json_body(response).await,
        one_error(
            "forbidden",
            "Unexpected response from C1fApp: Invalid API key"
        )
    );
}

#[tokio::test]
async fn health_reports_a_broken_answer() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"unexpected\": true}"))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app.post("/health", &c1fapp_token(), &json!({})).await;
    assert_eq!(
        json_body(response).await,
        one_error(
            "key error",
            "The data structure of C1fApp API has changed. The module is broken."
        )
    );
}

#[tokio::test]
async fn health_needs_no_body() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app
        .http
        .post(app.url("/health"))
        .bearer_auth(c1fapp_token())
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response).await, json!({"data": {"status": "ok"}}));
}
