//! HS256 authentication: every refusal of SPEC section 3 that applies to it.

use serde_json::{Value, json};

use crate::helpers::{
    C1FAPP_KEY, SECRET_KEY, c1fapp_finds, c1fapp_never_called, hs256_token, json_body, observable,
    one_error, raw_token, spawn_app, spawn_app_with,
};

const PROTECTED: [&str; 4] = [
    "/health",
    "/observe/observables",
    "/refer/observables",
    "/deliberate/observables",
];

/// HS256 tokens get messages about the shared secret, not the XDR region hint.
pub const WRONG_SECRET: &str = "Failed to decode JWT with the relay's SECRET_KEY. Make sure \
     the token was signed with the SECRET_KEY this relay runs with (ctr-relay jwt signs with it).";
pub const UNSUPPORTED_ALG: &str = "The token is signed with an algorithm this relay does not \
     accept: only HS256 (signed with the relay's SECRET_KEY) and RS256 (issued by XDR, keys from \
     jwks_host) are.";
pub const NO_SECRET_KEY: &str = "HS256 tokens are not accepted: this relay has no SECRET_KEY. \
     Set SECRET_KEY and sign the token with it, or use a token issued by XDR (RS256).";

fn body() -> Value {
    json!([observable("ip", "192.0.2.10")])
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Sends `authorization` (or none) to every protected route and expects the
/// same authorization error from each, without any upstream call.
async fn assert_refused(authorization: Option<String>, reason: &str) {
    let app = spawn_app().await;
    c1fapp_never_called(&app).await;
    for route in PROTECTED {
        let mut request = app.http.post(app.url(route)).json(&body());
        if let Some(value) = &authorization {
            request = request.header("Authorization", value);
        }
        let response = json_body(request.send().await.unwrap()).await;
        assert_eq!(
            response,
            one_error(
                "authorization error",
                &format!("Authorization failed: {reason}")
            ),
            "{route}"
        );
    }
}

#[tokio::test]
async fn a_missing_authorization_header_is_refused() {
    assert_refused(None, "Authorization header is missing").await;
}

#[tokio::test]
async fn a_scheme_other_than_bearer_is_refused() {
    assert_refused(
        Some("Basic dXNlcjpwYXNz".to_owned()),
        "Wrong authorization type",
    )
    .await;
}

#[tokio::test]
async fn a_bearer_value_that_is_not_a_jwt_is_refused() {
    assert_refused(Some("Bearer not-a-jwt".to_owned()), "Wrong JWT structure").await;
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused() {
    let token = hs256_token(&json!({"key": C1FAPP_KEY}), "some other key");
    assert_refused(Some(format!("Bearer {token}")), WRONG_SECRET).await;
}

#[tokio::test]
async fn a_token_with_a_tampered_payload_is_refused() {
    let token = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);
    let signature = token.rsplit('.').next().unwrap();
    let forged = raw_token(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"key": "attacker-key"}),
        signature,
    );
    assert_refused(Some(format!("Bearer {forged}")), WRONG_SECRET).await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(
            &json!({"alg": alg, "typ": "JWT"}),
            &json!({"key": C1FAPP_KEY}),
            "",
        );
        assert_refused(Some(format!("Bearer {token}")), UNSUPPORTED_ALG).await;
    }
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let token = hs256_token(&json!({"key": C1FAPP_KEY, "exp": now() - 3600}), SECRET_KEY);
    assert_refused(Some(format!("Bearer {token}")), "Expired token").await;
}

#[tokio::test]
async fn a_token_that_is_not_valid_yet_is_refused() {
    let token = hs256_token(&json!({"key": C1FAPP_KEY, "nbf": now() + 3600}), SECRET_KEY);
    assert_refused(Some(format!("Bearer {token}")), "Token not yet valid").await;
}

#[tokio::test]
async fn a_token_without_provider_credentials_is_refused() {
    for claims in [
        json!({"username": "someone"}),
        json!({"key": ""}),
        json!({"api_key": "only-half"}),
    ] {
        let token = hs256_token(&claims, SECRET_KEY);
        assert_refused(
            Some(format!("Bearer {token}")),
            "Wrong JWT payload structure",
        )
        .await;
    }
}

#[tokio::test]
async fn hs256_is_refused_when_no_secret_key_is_configured() {
    let app = spawn_app_with(|settings| settings.secret_key = None).await;
    c1fapp_never_called(&app).await;
    let token = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);
    let response = json_body(app.post("/observe/observables", &token, &body()).await).await;
    assert_eq!(
        response,
        one_error(
            "authorization error",
            &format!("Authorization failed: {NO_SECRET_KEY}")
        )
    );
}

#[tokio::test]
async fn a_token_within_its_validity_window_is_accepted() {
    let app = spawn_app().await;
    let token = hs256_token(
        &json!({"key": C1FAPP_KEY, "exp": now() + 3600, "nbf": now() - 60}),
        SECRET_KEY,
    );
    crate::helpers::c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    let response = json_body(app.post("/observe/observables", &token, &body()).await).await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    crate::helpers::c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    let token = crate::helpers::c1fapp_token();
    let response = app
        .http
        .post(app.url("/observe/observables"))
        .header("Authorization", format!("bearer {token}"))
        .json(&body())
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response).await, json!({"data": {}}));
}

#[tokio::test]
async fn an_oversized_authorization_header_is_refused() {
    let token = "a".repeat(17 * 1024);
    assert_refused(
        Some(format!("Bearer {token}")),
        "Authorization header is too large",
    )
    .await;
}

#[tokio::test]
async fn a_100_kib_token_is_refused_unread_and_the_relay_carries_on() {
    // A validly signed token of about 100 KiB (the payload is base64).
    let padding = "x".repeat(75 * 1024);
    let token = hs256_token(&json!({"key": C1FAPP_KEY, "padding": padding}), SECRET_KEY);
    assert!(
        (100 * 1024..110 * 1024).contains(&token.len()),
        "{}",
        token.len()
    );
    assert_refused(
        Some(format!("Bearer {token}")),
        "Authorization header is too large",
    )
    .await;

    // Many at once, then a normal request on the same relay.
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    let oversized = format!("Bearer {token}");
    let refusals = (0..32).map(|_| {
        app.http
            .post(app.url("/observe/observables"))
            .header("Authorization", &oversized)
            .json(&body())
            .send()
    });
    for response in futures_util::future::join_all(refusals).await {
        assert_eq!(
            json_body(response.unwrap()).await,
            one_error(
                "authorization error",
                "Authorization failed: Authorization header is too large"
            )
        );
    }
    let response = app.post_json("/observe/observables", &body()).await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn a_request_head_over_128_kib_is_refused_by_the_http_layer() {
    let app = spawn_app().await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    let huge = format!("Bearer {}", "a".repeat(200 * 1024));
    let response = app
        .http
        .post(app.url("/observe/observables"))
        .header("Authorization", &huge)
        .json(&body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let response = app.post_json("/observe/observables", &body()).await;
    assert_eq!(response, json!({"data": {}}));
}

#[tokio::test]
async fn unauthenticated_endpoints_need_no_token() {
    let app = spawn_app().await;
    for (route, expected) in [("/version", json!({"version": env!("CARGO_PKG_VERSION")}))] {
        let response = app.http.post(app.url(route)).send().await.unwrap();
        assert_eq!(json_body(response).await, expected, "{route}");
    }
}
