//! The unauthenticated endpoints and routing errors.

use serde_json::json;

use crate::helpers::{assert_json_content_type, json_body, one_error, spawn_app};

#[tokio::test]
async fn version_reports_the_crate_version() {
    let app = spawn_app().await;
    let response = app.http.post(app.url("/version")).send().await.unwrap();
    assert_eq!(
        json_body(response).await,
        json!({"version": env!("CARGO_PKG_VERSION")})
    );
}

#[tokio::test]
async fn watchdog_echoes_the_health_check_header() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/watchdog"))
        .header("Health-Check", "probe-42")
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response).await, json!({"data": "probe-42"}));
}

#[tokio::test]
async fn watchdog_without_the_header_fails() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/watchdog")).send().await.unwrap();
    assert_eq!(
        json_body(response).await,
        one_error("health check failed", "Invalid Health Check")
    );
}

#[tokio::test]
async fn readyz_answers_ready_without_a_token_or_a_header() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await, json!({"data": "ready"}));
}

#[tokio::test]
async fn respond_is_not_served() {
    let app = spawn_app().await;
    for route in ["/respond/observables", "/respond/trigger"] {
        let response = app
            .http
            .post(app.url(route))
            .json(&json!([]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{route}");
        assert_json_content_type(&response);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap(),
            one_error("not found", "Not Found"),
            "{route}"
        );
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_with_the_envelope() {
    let app = spawn_app().await;
    for (method, route) in [
        ("GET", "/"),
        ("POST", "/observe"),
        ("POST", "/enrich/observables"),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(route))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method} {route}");
        assert_json_content_type(&response);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap(),
            one_error("not found", "Not Found")
        );
    }
}

#[tokio::test]
async fn a_wrong_method_is_405_with_the_envelope() {
    let app = spawn_app().await;
    for (method, route, allow) in [
        ("GET", "/health", "POST"),
        ("GET", "/observe/observables", "POST"),
        ("PUT", "/refer/observables", "POST"),
        ("DELETE", "/deliberate/observables", "POST"),
        ("GET", "/version", "POST"),
        ("POST", "/watchdog", "GET"),
        ("POST", "/readyz", "GET"),
        ("POST", "/metrics", "GET"),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(route))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {route}");
        assert_eq!(response.headers()["allow"], allow, "{method} {route}");
        assert_json_content_type(&response);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap(),
            one_error("method not allowed", "Method Not Allowed")
        );
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app.http.post(app.url("/version")).send().await.unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}
