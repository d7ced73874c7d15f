//! The optional result cache: off by default, per credential, never for
//! failures or health checks, expiring after its TTL.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::ResponseTemplate;
use wiremock::matchers::{method, path};

use crate::helpers::{
    C1FAPP_PATH, SECRET_KEY, TestApp, c1fapp_finds, c1fapp_record, c1fapp_search, c1fapp_token,
    cyberscan_answers, cyberscan_issues_tokens, hs256_token, observable, spawn_app, spawn_app_with,
    vulnerability,
};

async fn cached_app(ttl: Duration) -> TestApp {
    spawn_app_with(move |settings| settings.upstream.cache.ttl = Some(ttl)).await
}

fn one_ip() -> Value {
    json!([observable("ip", "192.0.2.10")])
}

fn sighting_id(response: &Value) -> String {
    response["data"]["sightings"]["docs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn without_a_ttl_every_request_asks_the_upstream() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", json!([c1fapp_record(json!({}))]), 2).await;
    for _ in 0..2 {
        app.post_json("/observe/observables", &one_ip()).await;
    }
}

#[tokio::test]
async fn a_repeated_lookup_is_answered_from_the_cache_with_fresh_ids() {
    let app = cached_app(Duration::from_secs(60)).await;
    c1fapp_finds(&app, "192.0.2.10", json!([c1fapp_record(json!({}))]), 1).await;
    let first = app.post_json("/observe/observables", &one_ip()).await;
    let second = app.post_json("/observe/observables", &one_ip()).await;
    assert_eq!(second["data"]["sightings"]["count"], 1);
    assert_ne!(
        sighting_id(&first),
        sighting_id(&second),
        "mapped afresh, new transient ids"
    );
    let verdicts = app.post_json("/deliberate/observables", &one_ip()).await;
    assert_eq!(
        verdicts["data"]["verdicts"]["count"], 1,
        "deliberate shares the cached records"
    );

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"ctr_relay_cache_lookups_total{provider="C1fApp",result="hit"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ctr_relay_cache_lookups_total{provider="C1fApp",result="miss"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn answers_are_kept_per_credential() {
    let app = cached_app(Duration::from_secs(60)).await;
    c1fapp_search("192.0.2.10")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([c1fapp_record(json!({}))])))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    wiremock::Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(wiremock::matchers::body_partial_json(
            json!({"key": "another-tenant"}),
        ))
        .respond_with(ResponseTemplate::new(403).set_body_string("Invalid API key"))
        .expect(2)
        .mount(&app.c1fapp)
        .await;
    app.post_json("/observe/observables", &one_ip()).await;
    let other = hs256_token(&json!({"key": "another-tenant"}), SECRET_KEY);
    for _ in 0..2 {
        let response = app
            .post_json_with("/observe/observables", &other, &one_ip())
            .await;
        assert_eq!(
            response["errors"][0]["code"], "forbidden",
            "never another caller's data: {response}"
        );
    }
}

#[tokio::test]
async fn failures_are_not_kept() {
    let app = cached_app(Duration::from_secs(60)).await;
    c1fapp_search("192.0.2.10")
        .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    c1fapp_finds(&app, "192.0.2.10", json!([c1fapp_record(json!({}))]), 1).await;
    let failed = app.post_json("/observe/observables", &one_ip()).await;
    assert_eq!(failed["errors"][0]["code"], "unknown");
    for _ in 0..2 {
        let response = app.post_json("/observe/observables", &one_ip()).await;
        assert_eq!(response["data"]["sightings"]["count"], 1);
    }
}

#[tokio::test]
async fn answers_expire_after_the_ttl() {
    let app = cached_app(Duration::from_millis(200)).await;
    c1fapp_finds(&app, "192.0.2.10", json!([c1fapp_record(json!({}))]), 2).await;
    app.post_json("/observe/observables", &one_ip()).await;
    app.post_json("/observe/observables", &one_ip()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.post_json("/observe/observables", &one_ip()).await;
}

#[tokio::test]
async fn health_checks_always_reach_the_upstream() {
    let app = cached_app(Duration::from_secs(60)).await;
    wiremock::Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(2)
        .mount(&app.c1fapp)
        .await;
    for _ in 0..2 {
        let response = app
            .post_json_with("/health", &c1fapp_token(), &json!({}))
            .await;
        assert_eq!(response, json!({"data": {"status": "ok"}}));
    }
}

#[tokio::test]
async fn cyberscan_answers_are_cached_too() {
    let app = cached_app(Duration::from_secs(60)).await;
    cyberscan_issues_tokens(&app, 1).await;
    cyberscan_answers(
        &app,
        "/domain/j-p.link",
        json!({"ip": "192.0.2.10", "details_page": "https://www.cyberscan.io/d"}),
        1,
    )
    .await;
    cyberscan_answers(
        &app,
        "/vulnerabilities/ip/192.0.2.10",
        json!({"vulnerabilities": [vulnerability("OpenSSH", "")]}),
        1,
    )
    .await;
    for _ in 0..2 {
        let response = app
            .post_json_with(
                "/observe/observables",
                &app.cyberscan_token(),
                &json!([observable("domain", "j-p.link")]),
            )
            .await;
        assert_eq!(response["data"]["sightings"]["count"], 1);
    }
    let refer = app
        .post_json_with(
            "/refer/observables",
            &app.cyberscan_token(),
            &json!([observable("domain", "j-p.link")]),
        )
        .await;
    assert_eq!(
        refer["data"][0]["url"], "https://www.cyberscan.io/d",
        "refer reuses the cached domain answer"
    );
}

#[tokio::test]
async fn a_malformed_cyberscan_answer_is_not_cached() {
    let app = cached_app(Duration::from_secs(60)).await;
    cyberscan_issues_tokens(&app, 1).await;
    wiremock::Mock::given(method("GET"))
        .and(path("/api/v1/vulnerabilities/ip/192.0.2.10"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .up_to_n_times(1)
        .with_priority(1)
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
    let first = app
        .post_json_with("/observe/observables", &app.cyberscan_token(), &one_ip())
        .await;
    assert!(first["errors"][0]["message"].is_string(), "{first}");
    let second = app
        .post_json_with("/observe/observables", &app.cyberscan_token(), &one_ip())
        .await;
    assert_eq!(
        second["data"]["sightings"]["count"], 1,
        "asked again: {second}"
    );
}
