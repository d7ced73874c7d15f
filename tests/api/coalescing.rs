//! One upstream call per distinct lookup in flight: identical concurrent
//! requests share it; other credentials never do.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{C1FAPP_PATH, SECRET_KEY, c1fapp_record, hs256_token, observable, spawn_app};

#[tokio::test]
async fn fifty_identical_requests_make_one_upstream_call_and_other_keys_their_own() {
    let app = spawn_app().await;
    for key in ["key-a", "key-b"] {
        let feed = format!("Feed of {key}");
        Mock::given(method("POST"))
            .and(path(C1FAPP_PATH))
            .and(body_partial_json(json!({"key": key})))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!([c1fapp_record(json!({"feed_label": [feed]}))]))
                    .set_delay(Duration::from_millis(200)),
            )
            .mount(&app.c1fapp)
            .await;
    }
    let body = json!([observable("ip", "192.0.2.10")]);
    let token_a = hs256_token(&json!({"key": "key-a"}), SECRET_KEY);
    let token_b = hs256_token(&json!({"key": "key-b"}), SECRET_KEY);
    let requests = (0..50).map(|n| {
        let token = if n < 45 { &token_a } else { &token_b };
        app.post_json_with("/observe/observables", token, &body)
    });
    let answers = futures_util::future::join_all(requests).await;

    for (n, answer) in answers.iter().enumerate() {
        let feed = if n < 45 {
            "Feed of key-a"
        } else {
            "Feed of key-b"
        };
        assert_eq!(answer["data"]["sightings"]["count"], 1, "{n}: {answer}");
        assert_eq!(
            answer["data"]["indicators"]["docs"][0]["short_description"], feed,
            "{n}: each caller sees its own credential's answer"
        );
    }
    let calls = app.c1fapp.received_requests().await.unwrap();
    let with = |key: &str| {
        calls
            .iter()
            .filter(|call| call.body_json::<serde_json::Value>().unwrap()["key"] == key)
            .count()
    };
    assert_eq!(with("key-a"), 1, "45 identical lookups, one call");
    assert_eq!(with("key-b"), 1, "another credential, its own call");

    let metrics = crate::metrics::scrape(&app).await;
    assert!(
        metrics.contains("ctr_relay_upstream_coalesced_total{provider=\"C1fApp\"} 48"),
        "{metrics}"
    );
}
