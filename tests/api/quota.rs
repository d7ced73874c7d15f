//! Quotas per upstream credential (`C1FAPP_QUOTA`, `CYBERSCAN_QUOTA`, the
//! token claims), in one relay: calls counted, refused at the limit with an
//! error naming the provider, the quota and its reset, other providers and
//! observables going on; `/health` answering the caller's quotas in XDR's
//! shape.

use chrono::{Datelike, Duration, NaiveTime, Utc};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    C1FAPP_KEY, CYBERSCAN_KEY, SECRET_KEY, TestApp, c1fapp_finds, c1fapp_record, cyberscan_answers,
    cyberscan_issues_tokens, hs256_token, json_body, observable, spawn_app_with, vulnerability,
};
use ctr_relay::domain::Quota;

const ROUTE: &str = "/observe/observables";

async fn app_with_quota(c1fapp: &str) -> TestApp {
    let quota = Quota::parse(c1fapp).unwrap();
    spawn_app_with(|settings| settings.upstream.fleet.c1fapp_quota = Some(quota)).await
}

fn tomorrow() -> String {
    let tomorrow = Utc::now().date_naive() + Duration::days(1);
    format!("{}T00:00:00Z", tomorrow.and_time(NaiveTime::MIN).date())
}

async fn health(app: &TestApp) -> Value {
    json_body(
        app.post("/health", &crate::helpers::c1fapp_token(), &json!({}))
            .await,
    )
    .await
}

fn sightings(answer: &Value) -> u64 {
    answer["data"]["sightings"]["count"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn calls_stop_at_the_quota_with_an_error_naming_it_and_its_reset() {
    let app = app_with_quota("2/day,100/month").await;
    for value in ["192.0.2.1", "192.0.2.2"] {
        c1fapp_finds(&app, value, json!([c1fapp_record(json!({}))]), 1).await;
    }
    // The third is never asked: the mock would fail the test on a call.
    c1fapp_finds(&app, "192.0.2.3", json!([c1fapp_record(json!({}))]), 0).await;
    let answer = app
        .post_json(
            ROUTE,
            &json!([
                observable("ip", "192.0.2.1"),
                observable("ip", "192.0.2.2"),
                observable("ip", "192.0.2.3")
            ]),
        )
        .await;
    assert_eq!(sightings(&answer), 2, "{answer}");
    assert_eq!(
        answer["errors"],
        json!([{
            "type": "fatal",
            "code": "too many requests",
            "message": format!(
                "C1fApp quota reached for this key: 2 a day. No C1fApp lookup is made until it resets at {}",
                tomorrow()
            )
        }])
    );
    assert!(
        app.metrics_text()
            .await
            .contains(r#"ctr_relay_quota_refusals_total{provider="C1fApp"} 1"#)
    );
}

#[tokio::test]
async fn a_tokens_quota_replaces_the_operators_and_other_providers_go_on() {
    let app = app_with_quota("100/day").await;
    c1fapp_finds(&app, "192.0.2.1", json!([c1fapp_record(json!({}))]), 1).await;
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
    let token = hs256_token(
        &json!({"key": C1FAPP_KEY, "c1fapp_quota": "1/minute",
                "api_key": CYBERSCAN_KEY, "host": app.cyberscan.uri()}),
        SECRET_KEY,
    );
    let answer = app
        .post_json_with(
            ROUTE,
            &token,
            &json!([observable("ip", "192.0.2.1"), observable("ip", "192.0.2.2")]),
        )
        .await;
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("1 a minute"), "{answer}");
    assert_eq!(answer["errors"].as_array().map(Vec::len), Some(1));
    let sources: Vec<&str> = answer["data"]["sightings"]["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|doc| doc["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains(&"C1fApp") && sources.contains(&"CyberScan"),
        "{sources:?}"
    );

    // A quota claim that does not parse is refused, not ignored.
    let bad = hs256_token(
        &json!({"key": C1FAPP_KEY, "c1fapp_quota": "many"}),
        SECRET_KEY,
    );
    let refused = json_body(app.post(ROUTE, &bad, &json!([])).await).await;
    assert_eq!(refused["errors"][0]["code"], "authorization error");
}

#[tokio::test]
async fn health_answers_the_callers_quotas_in_xdrs_shape() {
    let app = app_with_quota("2/day,1000/month").await;
    Mock::given(method("POST"))
        .and(path(crate::helpers::C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(2)
        .mount(&app.c1fapp)
        .await;
    let first = health(&app).await;
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap();
    assert_eq!(first["data"]["status"], "ok");
    assert_eq!(
        first["data"]["quotas"]["c1fapp_day"],
        json!({"description": "C1fApp lookups a day for this key", "values": {
            "bucket_unit": "day", "bucket_limit": 2, "current_bucket_consumption": 1,
            "current_bucket_start_time": format!("{today}T00:00:00Z"),
            "current_bucket_end_time": tomorrow(),
            "current_bucket_limit_reached": false
        }}),
        "the health check's own call counts: {first}"
    );
    assert_eq!(
        first["data"]["quotas"]["c1fapp_month"]["values"]["current_bucket_start_time"],
        format!("{month_start}T00:00:00Z")
    );
    assert!(first.get("errors").is_none());
    let second = health(&app).await;
    assert_eq!(
        second["data"]["quotas"]["c1fapp_day"]["values"]["current_bucket_limit_reached"],
        true
    );
    assert!(
        second["data"]["quotas"]["c1fapp_day"]["values"]["current_bucket_limit_reached_at"]
            .is_string()
    );
    // Reached: no call (the mock expects two), still `ok`, and a warning.
    let third = health(&app).await;
    assert_eq!(third["data"]["status"], "ok");
    assert_eq!(third["errors"][0]["type"], "warning");
    assert!(
        third["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Health check skipped: C1fApp quota reached for this key: 2 a day"),
        "{third}"
    );
}
