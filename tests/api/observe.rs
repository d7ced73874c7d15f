//! POST /observe/observables with C1fApp.

use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    C1FAPP_KEY, C1FAPP_PATH, SECRET_KEY, c1fapp_finds, c1fapp_never_called, c1fapp_record,
    c1fapp_search, hs256_token, json_body, observable, one_error, spawn_app, spawn_app_with,
};

const ROUTE: &str = "/observe/observables";

fn ids(docs: &Value, field: &str) -> Vec<String> {
    docs["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|doc| doc[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn c1fapp_is_asked_with_the_documented_request() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(header("content-type", "application/json"))
        .and(header(
            "user-agent",
            concat!("ctr-relay/", env!("CARGO_PKG_VERSION")),
        ))
        .and(body_json(json!({
            "key": C1FAPP_KEY,
            "format": "json",
            "backend": "es",
            "request": "login.example.net"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&app.c1fapp)
        .await;

    let response = app
        .post_json(ROUTE, &json!([observable("domain", "login.example.net")]))
        .await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn a_listed_domain_gets_every_entity_type() {
    let app = spawn_app().await;
    c1fapp_finds(
        &app,
        "login.example.net",
        json!([c1fapp_record(json!({}))]),
        1,
    )
    .await;

    let response = app
        .post_json(ROUTE, &json!([observable("domain", "login.example.net")]))
        .await;
    let data = &response["data"];
    assert!(response.get("errors").is_none(), "{response}");
    for (kind, count) in [
        ("sightings", 1),
        ("indicators", 1),
        ("relationships", 1),
        ("judgements", 1),
        ("verdicts", 1),
    ] {
        assert_eq!(data[kind]["count"], count, "{kind}");
        assert_eq!(
            data[kind]["docs"].as_array().unwrap().len(),
            count,
            "{kind}"
        );
    }

    let sighting = &data["sightings"]["docs"][0];
    assert!(
        sighting["id"]
            .as_str()
            .unwrap()
            .starts_with("transient:sighting-")
    );
    assert_eq!(sighting["type"], "sighting");
    assert_eq!(sighting["schema_version"], "1.3.28");
    assert_eq!(sighting["source"], "C1fApp");
    assert_eq!(
        sighting["source_uri"],
        "http://www.phishtank.com/phish_detail.php?phish_id=1234"
    );
    assert_eq!(sighting["confidence"], "High");
    assert_eq!(sighting["count"], 1);
    assert_eq!(sighting["description"], "Seen on C1fApp feed");
    assert_eq!(
        sighting["observables"],
        json!([observable("domain", "login.example.net")])
    );
    assert_eq!(
        sighting["observed_time"],
        json!({"start_time": "2020-04-12T00:00:00Z", "end_time": "2020-04-12T00:00:00Z"})
    );
    assert_eq!(
        sighting["relations"],
        json!([
            {
                "origin": "C1fApp Enrichment Module",
                "relation": "Contains",
                "source": observable("url", "https://login.example.net/?session=abc"),
                "related": observable("domain", "login.example.net")
            },
            {
                "origin": "C1fApp Enrichment Module",
                "relation": "Resolved_To",
                "source": observable("domain", "login.example.net"),
                "related": observable("ip", "192.0.2.10")
            }
        ])
    );

    let indicator = &data["indicators"]["docs"][0];
    assert!(
        indicator["id"]
            .as_str()
            .unwrap()
            .starts_with("transient:indicator-")
    );
    assert_eq!(indicator["title"], "Feed: Phishtank");
    assert_eq!(indicator["short_description"], "Phishtank");
    assert_eq!(indicator["producer"], "C1fApp");
    assert_eq!(indicator["tags"], json!(["phishing"]));
    assert_eq!(indicator["tlp"], "white");
    assert_eq!(indicator["valid_time"], json!({}));

    let relationship = &data["relationships"]["docs"][0];
    assert!(
        relationship["id"]
            .as_str()
            .unwrap()
            .starts_with("transient:relationship-")
    );
    assert_eq!(relationship["relationship_type"], "member-of");
    assert_eq!(relationship["source_ref"], sighting["id"]);
    assert_eq!(relationship["target_ref"], indicator["id"]);

    let judgement = &data["judgements"]["docs"][0];
    assert_eq!(judgement["disposition"], 2);
    assert_eq!(judgement["disposition_name"], "Malicious");
    assert_eq!(judgement["priority"], 85);
    assert_eq!(
        judgement["observable"],
        observable("domain", "login.example.net")
    );
    let verdict = &data["verdicts"]["docs"][0];
    assert_eq!(verdict["judgement_id"], judgement["id"]);
    assert_eq!(verdict["disposition_name"], "Malicious");
    assert_eq!(
        verdict["valid_time"],
        json!({"start_time": "2020-04-12T00:00:00Z", "end_time": "2020-05-12T00:00:00Z"})
    );
    assert!(verdict.get("schema_version").is_none());
}

#[tokio::test]
async fn every_relationship_points_at_entities_of_the_same_response() {
    let app = spawn_app().await;
    let records = json!([
        c1fapp_record(json!({"feed_label": ["A"], "reportime": ["2020-03-01"]})),
        c1fapp_record(json!({"feed_label": ["B"], "reportime": ["2020-02-01"]})),
        c1fapp_record(json!({"feed_label": ["A"], "reportime": ["2020-01-01"]})),
    ]);
    c1fapp_finds(&app, "192.0.2.10", records.clone(), 1).await;
    c1fapp_finds(&app, "login.example.net", records, 1).await;

    let response = app
        .post_json(
            ROUTE,
            &json!([
                observable("ip", "192.0.2.10"),
                observable("domain", "login.example.net")
            ]),
        )
        .await;
    let data = &response["data"];
    assert_eq!(data["sightings"]["count"], 6);
    assert_eq!(
        data["indicators"]["count"], 2,
        "one per feed in the answer, whatever the observables"
    );
    let sightings = ids(&data["sightings"], "id");
    let indicators = ids(&data["indicators"], "id");
    for relationship in data["relationships"]["docs"].as_array().unwrap() {
        assert!(sightings.contains(&relationship["source_ref"].as_str().unwrap().to_owned()));
        assert!(indicators.contains(&relationship["target_ref"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn a_feed_keeps_one_indicator_id_across_observables_and_requests() {
    let app = spawn_app().await;
    let records = json!([
        c1fapp_record(json!({"feed_label": ["A"], "reportime": ["2020-03-01"]})),
        c1fapp_record(json!({"feed_label": ["B"], "reportime": ["2020-02-01"]})),
    ]);
    c1fapp_finds(&app, "192.0.2.10", records.clone(), 2).await;
    c1fapp_finds(&app, "login.example.net", records, 1).await;
    let indicator_ids = |data: &Value| ids(&data["indicators"], "id");

    let both = app
        .post_json(
            ROUTE,
            &json!([
                observable("ip", "192.0.2.10"),
                observable("domain", "login.example.net")
            ]),
        )
        .await;
    let ids_of_both = indicator_ids(&both["data"]);
    assert_eq!(
        ids_of_both.len(),
        2,
        "one indicator per feed in an answer: {both}"
    );
    assert_ne!(ids_of_both[0], ids_of_both[1], "two feeds");
    // Each feed's indicator is the target of one member-of per sighting.
    let targets = ids(&both["data"]["relationships"], "target_ref");
    assert_eq!(targets.len(), 4);
    for id in &ids_of_both {
        assert_eq!(targets.iter().filter(|target| *target == id).count(), 2);
    }

    let again = app
        .post_json(ROUTE, &json!([observable("ip", "192.0.2.10")]))
        .await;
    assert_eq!(
        indicator_ids(&again["data"]),
        ids_of_both[..2],
        "another request"
    );
    // Sightings and relationships stay per request.
    let sighting_ids = |data: &Value| ids(&data["sightings"], "id");
    assert!(
        sighting_ids(&again["data"])
            .iter()
            .all(|id| !sighting_ids(&both["data"]).contains(id))
    );
}

#[tokio::test]
async fn the_nothing_found_texts_are_not_errors() {
    let app = spawn_app().await;
    for (value, text) in [
        ("192.0.2.1", "Unsupported request ? IPv4/Domain only"),
        (
            "192.0.2.2",
            "Empty Search! Available search: IPv4/URL/Domain",
        ),
        (
            "192.0.2.3",
            "Empty Search! Availiable search: IPv4/URL/Domain",
        ),
    ] {
        c1fapp_search(value)
            .respond_with(ResponseTemplate::new(200).set_body_string(text))
            .expect(1)
            .mount(&app.c1fapp)
            .await;
    }
    let response = app
        .post_json(
            ROUTE,
            &json!([
                observable("ip", "192.0.2.1"),
                observable("ip", "192.0.2.2"),
                observable("ip", "192.0.2.3")
            ]),
        )
        .await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn unsupported_types_are_skipped_without_a_call() {
    let app = spawn_app().await;
    c1fapp_never_called(&app).await;
    let response = app
        .post_json(
            ROUTE,
            &json!([
                observable("sha256", "ab".repeat(32).as_str()),
                observable("email", "a@b.c")
            ]),
        )
        .await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn a_repeated_observable_is_looked_up_once() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", json!([c1fapp_record(json!({}))]), 1).await;
    let response = app
        .post_json(
            ROUTE,
            &json!([
                observable("ip", "192.0.2.10"),
                observable("ip", "192.0.2.10")
            ]),
        )
        .await;
    assert_eq!(response["data"]["sightings"]["count"], 1);
}

#[tokio::test]
async fn results_keep_the_order_of_the_request() {
    let app = spawn_app().await;
    // The first observable is answered last.
    for (value, delay_ms) in [("a.example", 300), ("b.example", 150), ("c.example", 0)] {
        c1fapp_search(value)
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!([c1fapp_record(json!({"domain": [value]}))]))
                    .set_delay(std::time::Duration::from_millis(delay_ms)),
            )
            .expect(1)
            .mount(&app.c1fapp)
            .await;
    }
    let response = app
        .post_json(
            ROUTE,
            &json!([
                observable("domain", "a.example"),
                observable("domain", "b.example"),
                observable("domain", "c.example")
            ]),
        )
        .await;
    let order: Vec<Value> = response["data"]["sightings"]["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sighting| sighting["observables"][0]["value"].clone())
        .collect();
    assert_eq!(
        order,
        vec![json!("a.example"), json!("b.example"), json!("c.example")]
    );
    let verdicts: Vec<Value> = response["data"]["verdicts"]["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|verdict| verdict["observable"]["value"].clone())
        .collect();
    assert_eq!(verdicts, order);
}

#[tokio::test]
async fn one_failing_observable_keeps_the_others_data() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "good.example", json!([c1fapp_record(json!({}))]), 1).await;
    c1fapp_search("bad.example")
        .respond_with(ResponseTemplate::new(500).set_body_string("Internal Server Error"))
        .expect(1)
        .mount(&app.c1fapp)
        .await;

    let response = app
        .post_json(
            ROUTE,
            &json!([
                observable("domain", "bad.example"),
                observable("domain", "good.example")
            ]),
        )
        .await;
    assert_eq!(response["data"]["sightings"]["count"], 1);
    assert_eq!(
        response["data"]["sightings"]["docs"][0]["observables"][0]["value"],
        "good.example"
    );
    assert_eq!(
        response["errors"],
        one_error(
            "unknown",
            "Unexpected response from C1fApp: Internal Server Error"
        )["errors"]
    );
}

#[tokio::test]
async fn the_same_error_is_reported_once() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(429).set_body_string("Slow down"))
        .expect(3)
        .mount(&app.c1fapp)
        .await;
    let response = app
        .post_json(
            ROUTE,
            &json!([
                observable("ip", "192.0.2.1"),
                observable("ip", "192.0.2.2"),
                observable("ip", "192.0.2.3")
            ]),
        )
        .await;
    assert_eq!(
        response,
        one_error(
            "too many requests",
            "Unexpected response from C1fApp: Slow down"
        )
    );
}

fn records(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| c1fapp_record(json!({"feed_label": [format!("Feed {}", i % 3)]})))
            .collect(),
    )
}

async fn sightings_with(token: &str, app: &crate::helpers::TestApp) -> u64 {
    let response = json_body(
        app.post(ROUTE, token, &json!([observable("ip", "192.0.2.10")]))
            .await,
    )
    .await;
    response["data"]["sightings"]["count"].as_u64().unwrap()
}

#[tokio::test]
async fn the_entity_limit_defaults_to_100() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", records(150), 1).await;
    assert_eq!(
        sightings_with(&crate::helpers::c1fapp_token(), &app).await,
        100
    );
}

#[tokio::test]
async fn the_entity_limit_of_the_token_wins_over_the_environment() {
    let app = spawn_app_with(|settings| {
        settings.entities_limit = ctr_relay::domain::EntitiesLimit::parse("3").unwrap();
    })
    .await;
    c1fapp_finds(&app, "192.0.2.10", records(10), 3).await;
    let token = |limit: Value| {
        hs256_token(
            &json!({"key": C1FAPP_KEY, "CTR_ENTITIES_LIMIT": limit}),
            SECRET_KEY,
        )
    };
    assert_eq!(sightings_with(&token(json!(2)), &app).await, 2);
    assert_eq!(sightings_with(&token(json!("5")), &app).await, 5);
    // Not a positive integer: falls through to the configured limit.
    assert_eq!(sightings_with(&token(json!("lots")), &app).await, 3);
}

#[tokio::test]
async fn the_entity_limit_bounds_every_entity_type() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", records(6), 1).await;
    let token = hs256_token(
        &json!({"key": C1FAPP_KEY, "CTR_ENTITIES_LIMIT": 2}),
        SECRET_KEY,
    );
    let response = json_body(
        app.post(ROUTE, &token, &json!([observable("ip", "192.0.2.10")]))
            .await,
    )
    .await;
    assert_eq!(response["data"]["sightings"]["count"], 2);
    assert_eq!(response["data"]["indicators"]["count"], 2);
    assert_eq!(response["data"]["relationships"]["count"], 2);
}

#[tokio::test]
async fn an_entity_limit_above_1000_is_clamped() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", records(1001), 1).await;
    let token = hs256_token(
        &json!({"key": C1FAPP_KEY, "CTR_ENTITIES_LIMIT": 5000}),
        SECRET_KEY,
    );
    assert_eq!(sightings_with(&token, &app).await, 1000);
}

#[tokio::test]
async fn records_are_taken_newest_first() {
    let app = spawn_app().await;
    let records = json!([
        c1fapp_record(json!({"reportime": ["2019-01-01"], "feed_label": ["Oldest"]})),
        c1fapp_record(json!({"reportime": ["2021-01-01"], "feed_label": ["Newest"]})),
        c1fapp_record(json!({"reportime": ["2020-01-01"], "feed_label": ["Middle"]})),
    ]);
    c1fapp_finds(&app, "192.0.2.10", records, 1).await;
    let token = hs256_token(
        &json!({"key": C1FAPP_KEY, "CTR_ENTITIES_LIMIT": 2}),
        SECRET_KEY,
    );
    let response = json_body(
        app.post(ROUTE, &token, &json!([observable("ip", "192.0.2.10")]))
            .await,
    )
    .await;
    assert_eq!(
        ids(&response["data"]["indicators"], "short_description"),
        vec!["Newest", "Middle"]
    );
}
