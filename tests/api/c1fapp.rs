//! C1fApp's error table (SPEC 4.2): every status, and bodies of the wrong shape.

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::helpers::{c1fapp_record, c1fapp_search, observable, one_error, spawn_app};

async fn observe_with_c1fapp_answering(answer: ResponseTemplate) -> serde_json::Value {
    let app = spawn_app().await;
    c1fapp_search("192.0.2.10")
        .respond_with(answer)
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    app.post_json(
        "/observe/observables",
        &json!([observable("ip", "192.0.2.10")]),
    )
    .await
}

#[tokio::test]
async fn each_unexpected_status_gets_its_code_and_the_body_text() {
    let cases = [
        (400, "invalid argument"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not found"),
        (429, "too many requests"),
        (500, "unknown"),
        (502, "unknown"),
        (503, "unknown"),
        (504, "unknown"),
        (418, "unknown"),
        (302, "unknown"),
    ];
    for (status, code) in cases {
        let response = observe_with_c1fapp_answering(
            ResponseTemplate::new(status).set_body_string(format!("status {status} text")),
        )
        .await;
        assert_eq!(
            response,
            one_error(
                code,
                &format!("Unexpected response from C1fApp: status {status} text")
            ),
            "HTTP {status}"
        );
    }
}

#[tokio::test]
async fn the_callers_key_is_never_echoed_back() {
    let response = observe_with_c1fapp_answering(
        ResponseTemplate::new(403)
            .set_body_string(format!("Invalid API key {}", crate::helpers::C1FAPP_KEY)),
    )
    .await;
    assert_eq!(
        response,
        one_error(
            "forbidden",
            "Unexpected response from C1fApp: Invalid API key ***"
        )
    );
}

#[tokio::test]
async fn a_body_of_the_wrong_shape_is_a_key_error() {
    let mut missing_field = c1fapp_record(json!({}));
    missing_field.as_object_mut().unwrap().remove("confidence");
    let bodies = [
        ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"),
        ResponseTemplate::new(200).set_body_json(json!({"records": []})),
        ResponseTemplate::new(200).set_body_json(json!([missing_field])),
        ResponseTemplate::new(200).set_body_json(json!([c1fapp_record(json!({"reportime": []}))])),
        ResponseTemplate::new(200)
            .set_body_json(json!([c1fapp_record(json!({"feed_label": "Phishtank"}))])),
        ResponseTemplate::new(200),
    ];
    for body in bodies {
        let response = observe_with_c1fapp_answering(body).await;
        assert_eq!(
            response,
            one_error(
                "key error",
                "The data structure of C1fApp API has changed. The module is broken."
            )
        );
    }
}
