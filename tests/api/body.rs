//! Request bodies the relay must refuse with a clear message, never a crash.

use serde_json::json;

use crate::helpers::{
    assert_json_content_type, c1fapp_never_called, c1fapp_token, json_body, one_error, spawn_app,
    spawn_app_with,
};

const ROUTES: [&str; 3] = [
    "/observe/observables",
    "/refer/observables",
    "/deliberate/observables",
];

async fn send_raw(
    app: &crate::helpers::TestApp,
    route: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(route))
        .bearer_auth(c1fapp_token())
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

fn invalid(detail: &str) -> serde_json::Value {
    one_error(
        "invalid argument",
        &format!("Invalid JSON payload received. {detail}"),
    )
}

#[tokio::test]
async fn each_malformed_body_says_what_is_wrong_and_where() {
    let app = spawn_app().await;
    c1fapp_never_called(&app).await;
    let cases = [
        (r#"[{"type": "ip"}]"#, "0.value: missing field."),
        (r#"[{"value": "192.0.2.1"}]"#, "0.type: missing field."),
        (
            r#"[{"type": "", "value": "192.0.2.1"}]"#,
            "0.type: must not be empty.",
        ),
        (
            r#"[{"type": "ip", "value": ""}]"#,
            "0.value: must not be empty.",
        ),
        (
            r#"[{"type": "ip", "value": 42}]"#,
            "0.value: must be a string, got a number.",
        ),
        (
            r#"[{"type": ["ip"], "value": "x"}]"#,
            "0.type: must be a string, got an array.",
        ),
        (
            r#"[{"type": "ip", "value": "192.0.2.1"}, 7]"#,
            "1: expected an object with \"type\" and \"value\", got a number.",
        ),
        (
            r#"{"type": "ip", "value": "192.0.2.1"}"#,
            "Expected a JSON array of observables, got an object.",
        ),
        (
            r#""ip""#,
            "Expected a JSON array of observables, got a string.",
        ),
        (
            "",
            "The body is empty: expected a JSON array of observables.",
        ),
    ];
    for route in ROUTES {
        for (body, detail) in cases {
            let response = send_raw(&app, route, Some("application/json"), body).await;
            assert_eq!(json_body(response).await, invalid(detail), "{route} {body}");
        }
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_invalid() {
    let app = spawn_app().await;
    c1fapp_never_called(&app).await;
    for body in [
        &b"not json"[..],
        b"[{\"type\": \"ip\", \"value\": \"\xff\xfe\"}]",
        b"[{\"type\": \"ip\",",
    ] {
        let response = json_body(
            send_raw(
                &app,
                "/observe/observables",
                Some("application/json"),
                body.to_vec(),
            )
            .await,
        )
        .await;
        assert_eq!(response["errors"][0]["code"], "invalid argument");
        let message = response["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Invalid JSON payload received. Not valid JSON: "),
            "{message}"
        );
    }
}

#[tokio::test]
async fn deeply_nested_json_is_invalid_and_harmless() {
    let app = spawn_app().await;
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let response = json_body(send_raw(&app, "/observe/observables", None, body).await).await;
    assert_eq!(response["errors"][0]["code"], "invalid argument");
    // And the relay still answers.
    let version = app.http.post(app.url("/version")).send().await.unwrap();
    assert_eq!(version.status(), 200);
}

#[tokio::test]
async fn a_missing_content_type_is_accepted_as_json() {
    let app = spawn_app().await;
    c1fapp_never_called(&app).await;
    let response = send_raw(&app, "/observe/observables", None, "[]").await;
    assert_eq!(json_body(response).await, json!({"data": {}}));
}

#[tokio::test]
async fn a_non_json_content_type_is_unsupported_media() {
    let app = spawn_app().await;
    c1fapp_never_called(&app).await;
    let response = send_raw(
        &app,
        "/observe/observables",
        Some("application/x-www-form-urlencoded"),
        "[]",
    )
    .await;
    assert_eq!(response.status(), 415);
    assert_json_content_type(&response);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        one_error(
            "unsupported media type",
            "Unsupported Content-Type \"application/x-www-form-urlencoded\": expected application/json"
        )
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_with_the_envelope() {
    let app = spawn_app_with(|settings| settings.limits.max_body_bytes = 1024).await;
    c1fapp_never_called(&app).await;
    let body = serde_json::to_vec(&vec![json!({"type": "ip", "value": "192.0.2.1"}); 100]).unwrap();
    let response = send_raw(&app, "/observe/observables", Some("application/json"), body).await;
    assert_eq!(response.status(), 413);
    assert_json_content_type(&response);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        one_error(
            "payload too large",
            "Request body is larger than 1024 bytes"
        )
    );
}

#[tokio::test]
async fn an_oversized_chunked_body_is_413_too() {
    let app = spawn_app_with(|settings| settings.limits.max_body_bytes = 1024).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 500])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = send_raw(&app, "/observe/observables", Some("application/json"), body).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn too_many_observables_are_refused() {
    let app = spawn_app_with(|settings| settings.limits.max_observables = 2).await;
    c1fapp_never_called(&app).await;
    let body = json!([
        {"type": "ip", "value": "192.0.2.1"},
        {"type": "ip", "value": "192.0.2.2"},
        {"type": "ip", "value": "192.0.2.3"}
    ]);
    let response = json_body(
        app.post("/observe/observables", &c1fapp_token(), &body)
            .await,
    )
    .await;
    assert_eq!(
        response,
        invalid("Too many observables: 3 (at most 2 per request).")
    );
}

#[tokio::test]
async fn the_token_is_checked_before_the_body() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/observe/observables"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(response).await,
        one_error(
            "authorization error",
            "Authorization failed: Authorization header is missing"
        )
    );
}
