//! POST /deliberate/observables: C1fApp verdicts alone.

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::helpers::{
    c1fapp_finds, c1fapp_record, c1fapp_search, observable, one_error, spawn_app,
};

const ROUTE: &str = "/deliberate/observables";

#[tokio::test]
async fn a_listed_observable_gets_a_verdict_and_nothing_else() {
    let app = spawn_app().await;
    c1fapp_finds(
        &app,
        "192.0.2.10",
        json!([
            c1fapp_record(json!({"reportime": ["2020-04-12"], "confidence": [50]})),
            c1fapp_record(json!({"reportime": ["2020-01-01"], "confidence": [10]})),
        ]),
        1,
    )
    .await;
    let response = app
        .post_json(ROUTE, &json!([observable("ip", "192.0.2.10")]))
        .await;
    assert_eq!(
        response,
        json!({"data": {"verdicts": {"count": 1, "docs": [{
            "type": "verdict",
            "disposition": 3,
            "disposition_name": "Suspicious",
            "observable": {"type": "ip", "value": "192.0.2.10"},
            "valid_time": {"start_time": "2020-04-12T00:00:00Z", "end_time": "2020-05-12T00:00:00Z"}
        }]}}})
    );
}

#[tokio::test]
async fn nothing_found_is_empty_data() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    let response = app
        .post_json(ROUTE, &json!([observable("ip", "192.0.2.10")]))
        .await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn a_failing_observable_keeps_the_other_verdicts() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "a.example", json!([c1fapp_record(json!({}))]), 1).await;
    c1fapp_search("b.example")
        .respond_with(ResponseTemplate::new(503).set_body_string("Service Unavailable"))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app
        .post_json(
            ROUTE,
            &json!([
                observable("domain", "a.example"),
                observable("domain", "b.example")
            ]),
        )
        .await;
    assert_eq!(response["data"]["verdicts"]["count"], 1);
    assert_eq!(
        response["data"]["verdicts"]["docs"][0]["disposition_name"],
        "Malicious"
    );
    assert_eq!(
        response["errors"],
        one_error(
            "unknown",
            "Unexpected response from C1fApp: Service Unavailable"
        )["errors"]
    );
}
