//! POST /refer/observables with C1fApp only: C1fApp has no page to refer to.

use serde_json::json;

use crate::helpers::{c1fapp_never_called, observable, spawn_app};

#[tokio::test]
async fn c1fapp_alone_gives_no_links_and_makes_no_call() {
    let app = spawn_app().await;
    c1fapp_never_called(&app).await;
    let response = app
        .post_json(
            "/refer/observables",
            &json!([observable("ip", "192.0.2.10")]),
        )
        .await;
    assert_eq!(response, json!({"data": []}));
}
