//! RS256 tokens issued by XDR: the jwks_host allowlist, the key cache, the
//! audience, and every way to confuse one kind of token with another.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    C1FAPP_KEY, SECRET_KEY, TestApp, c1fapp_finds, c1fapp_never_called, hs256_token, json_body,
    jwk, jwks_serves, observable, one_error, raw_token, rs256_token, rsa_public_pem, spawn_app,
    spawn_app_with,
};

const WRONG_KEY: &str = "Failed to decode JWT with provided key. Make sure domain in \
     custom_jwks_host corresponds to your SecureX instance region.";
const WRONG_JWKS_HOST: &str = "Wrong jwks_host in JWT payload. Make sure domain follows the \
     visibility.<region>.cisco.com structure";
const KEY_SET_LATE: &str = "The key set of jwks_host did not arrive in time \
     (UPSTREAM_TIMEOUT_SECONDS). The host is allowed; try again.";
const KEY_SET_UNUSABLE: &str = "The key set of jwks_host could not be fetched: the host answered \
     an error, or no key set with an RS256 signing key. The host is allowed; try again.";

fn refused(reason: &str) -> Value {
    one_error(
        "authorization error",
        &format!("Authorization failed: {reason}"),
    )
}

fn body() -> Value {
    json!([observable("ip", "192.0.2.10")])
}

/// Claims of a valid XDR token for this app.
fn claims(app: &TestApp) -> Value {
    json!({
        "key": C1FAPP_KEY,
        "jwks_host": app.jwks_host(),
        "aud": app.address,
        "exp": chrono::Utc::now().timestamp() + 3600,
    })
}

fn token(app: &TestApp) -> String {
    rs256_token(&claims(app), "relay-test-key", Some("relay-test-key"))
}

fn with_claims(app: &TestApp, changes: Value) -> String {
    let mut claims = claims(app);
    if let (Some(target), Value::Object(changes)) = (claims.as_object_mut(), changes) {
        target.extend(changes);
    }
    rs256_token(&claims, "relay-test-key", Some("relay-test-key"))
}

async fn observe(app: &TestApp, token: &str) -> Value {
    json_body(app.post("/observe/observables", token, &body()).await).await
}

#[tokio::test]
async fn a_token_signed_by_an_allowlisted_host_is_accepted() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("other-test-key"), jwk("relay-test-key")], 1).await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    assert_eq!(observe(&app, &token(&app)).await, json!({"data": {}}));
}

#[tokio::test]
async fn the_key_set_is_fetched_once_and_cached() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 3).await;
    for _ in 0..3 {
        assert_eq!(observe(&app, &token(&app)).await, json!({"data": {}}));
    }
}

#[tokio::test]
async fn concurrent_requests_share_one_key_set_fetch() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"keys": [jwk("relay-test-key")]}))
                .set_delay(Duration::from_millis(200)),
        )
        .expect(1)
        .mount(&app.jwks)
        .await;
    // The five identical lookups share C1fApp calls too (one or a few,
    // as they arrive): what this test counts is the key set fetch.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1..=5)
        .mount(&app.c1fapp)
        .await;
    let token = token(&app);
    let requests = (0..5).map(|_| observe(&app, &token));
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response, json!({"data": {}}));
    }
}

#[tokio::test]
async fn a_jwks_host_outside_the_allowlist_is_never_contacted() {
    let app = spawn_app().await;
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk("relay-test-key")]})),
        )
        .expect(0)
        .mount(&elsewhere)
        .await;
    jwks_serves(&app, vec![], 0).await;
    c1fapp_never_called(&app).await;
    let outside = elsewhere.uri().trim_start_matches("http://").to_owned();
    let jwks_port = app.jwks_host().rsplit(':').next().unwrap().to_owned();
    for jwks_host in [
        outside.clone(),
        format!("http://{}", app.jwks_host()),
        format!("{}.evil.example", app.jwks_host()),
        format!("localhost:{jwks_port}"),
        "169.254.169.254".to_owned(),
        "visibility.amp.cisco.com".to_owned(),
    ] {
        let token = with_claims(&app, json!({"jwks_host": jwks_host}));
        assert_eq!(
            observe(&app, &token).await,
            refused(WRONG_JWKS_HOST),
            "{jwks_host}"
        );
    }
}

#[tokio::test]
async fn a_token_without_jwks_host_is_refused() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![], 0).await;
    let mut claims = claims(&app);
    claims.as_object_mut().unwrap().remove("jwks_host");
    let token = rs256_token(&claims, "relay-test-key", Some("relay-test-key"));
    assert_eq!(
        observe(&app, &token).await,
        refused(
            "jwks_host is missing in JWT payload. Make sure custom_jwks_host field is present \
             in module_type"
        )
    );
}

#[tokio::test]
async fn a_kid_missing_from_the_key_set_is_refused_without_refetching_for_a_minute() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("other-test-key")], 1).await;
    for _ in 0..3 {
        assert_eq!(
            observe(&app, &token(&app)).await,
            refused("kid from JWT header not found in API response")
        );
    }
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_key_set_once_the_interval_has_passed() {
    let app = spawn_app_with(|settings| {
        settings.jwks.refetch_interval = Duration::from_millis(300);
    })
    .await;
    // First the set holds only the other key; after a rotation, both.
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk("other-test-key")]})),
        )
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&app.jwks)
        .await;
    jwks_serves(&app, vec![jwk("other-test-key"), jwk("relay-test-key")], 1).await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;

    let kid_not_found = refused("kid from JWT header not found in API response");
    assert_eq!(observe(&app, &token(&app)).await, kid_not_found);
    assert_eq!(
        observe(&app, &token(&app)).await,
        kid_not_found,
        "too soon to refetch"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(observe(&app, &token(&app)).await, json!({"data": {}}));
}

#[tokio::test]
async fn a_token_without_kid_is_refused() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 0).await;
    let token = rs256_token(&claims(&app), "relay-test-key", None);
    assert_eq!(
        observe(&app, &token).await,
        refused("kid from JWT header not found in API response")
    );
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_is_refused() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    c1fapp_never_called(&app).await;
    let forged = rs256_token(&claims(&app), "other-test-key", Some("relay-test-key"));
    assert_eq!(observe(&app, &forged).await, refused(WRONG_KEY));
}

#[tokio::test]
async fn a_tampered_rs256_token_is_refused() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    c1fapp_never_called(&app).await;
    let token = token(&app);
    let signature = token.rsplit('.').next().unwrap();
    let mut claims = claims(&app);
    claims["key"] = json!("attacker-key");
    let forged = raw_token(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "relay-test-key"}),
        &claims,
        signature,
    );
    assert_eq!(observe(&app, &forged).await, refused(WRONG_KEY));
}

#[tokio::test]
async fn the_audience_must_be_this_relay() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    c1fapp_never_called(&app).await;
    let wrong = with_claims(&app, json!({"aud": "https://another-relay.example"}));
    assert_eq!(
        observe(&app, &wrong).await,
        refused("Wrong configuration-token-audience")
    );
    let mut claims = claims(&app);
    claims.as_object_mut().unwrap().remove("aud");
    let missing = rs256_token(&claims, "relay-test-key", Some("relay-test-key"));
    assert_eq!(
        observe(&app, &missing).await,
        refused("Wrong configuration-token-audience")
    );
}

#[tokio::test]
async fn relay_audience_replaces_the_request_origin() {
    let app = spawn_app_with(|settings| {
        settings.relay_audience = Some("https://relay.example.com".to_owned());
    })
    .await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    let configured = with_claims(&app, json!({"aud": "https://relay.example.com/"}));
    assert_eq!(observe(&app, &configured).await, json!({"data": {}}));
    let origin = with_claims(&app, json!({"aud": app.address}));
    assert_eq!(
        observe(&app, &origin).await,
        refused("Wrong configuration-token-audience")
    );
}

#[tokio::test]
async fn an_expired_rs256_token_is_refused() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    let expired = with_claims(&app, json!({"exp": chrono::Utc::now().timestamp() - 3600}));
    assert_eq!(observe(&app, &expired).await, refused("Expired token"));
    let early = with_claims(&app, json!({"nbf": chrono::Utc::now().timestamp() + 3600}));
    assert_eq!(observe(&app, &early).await, refused("Token not yet valid"));
}

#[tokio::test]
async fn an_rs256_token_without_provider_credentials_is_refused() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    let mut claims = claims(&app);
    claims.as_object_mut().unwrap().remove("key");
    let token = rs256_token(&claims, "relay-test-key", Some("relay-test-key"));
    assert_eq!(
        observe(&app, &token).await,
        refused("Wrong JWT payload structure")
    );
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_public_key_is_refused() {
    for secret_key in [Some(SECRET_KEY), None] {
        let app = spawn_app_with(|settings| {
            settings.secret_key = secret_key.map(ctr_relay::domain::Secret::new);
        })
        .await;
        jwks_serves(&app, vec![jwk("relay-test-key")], 0).await;
        c1fapp_never_called(&app).await;
        let confused = hs256_token(&claims(&app), &rsa_public_pem("relay-test-key"));
        let expected = match secret_key {
            Some(_) => crate::auth::WRONG_SECRET,
            None => crate::auth::NO_SECRET_KEY,
        };
        assert_eq!(
            observe(&app, &confused).await,
            refused(expected),
            "SECRET_KEY {secret_key:?}"
        );
    }
}

#[tokio::test]
async fn an_unsigned_token_naming_a_jwks_host_is_refused_without_a_fetch() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 0).await;
    c1fapp_never_called(&app).await;
    for alg in ["none", "RS512", "PS256", "ES256", "HS512"] {
        let token = raw_token(
            &json!({"alg": alg, "typ": "JWT", "kid": "relay-test-key"}),
            &claims(&app),
            "",
        );
        assert_eq!(
            observe(&app, &token).await,
            refused(crate::auth::UNSUPPORTED_ALG),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_broken_or_late_key_set_says_so() {
    let unusable = [
        ResponseTemplate::new(500).set_body_string("oops"),
        ResponseTemplate::new(200).set_body_string("<html>not a key set</html>"),
        ResponseTemplate::new(200).set_body_json(json!({"keys": []})),
        ResponseTemplate::new(200)
            .set_body_json(json!({"keys": [{"kty": "RSA", "kid": "relay-test-key"}]})),
        ResponseTemplate::new(404),
    ];
    let late = ResponseTemplate::new(200)
        .set_body_json(json!({"keys": [jwk("relay-test-key")]}))
        .set_delay(Duration::from_secs(3));
    let answers = unusable
        .into_iter()
        .map(|answer| (answer, KEY_SET_UNUSABLE))
        .chain([(late, KEY_SET_LATE)]);
    for (answer, message) in answers {
        let app = spawn_app().await;
        Mock::given(method("GET"))
            .and(path("/.well-known/jwks"))
            .respond_with(answer)
            .expect(1)
            .mount(&app.jwks)
            .await;
        c1fapp_never_called(&app).await;
        assert_eq!(observe(&app, &token(&app)).await, refused(message));
    }
}

#[tokio::test]
async fn a_failed_fetch_backs_off_and_never_poisons_the_cache() {
    let app = spawn_app_with(|settings| {
        settings.jwks.failure_backoff = Duration::from_millis(300);
    })
    .await;
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&app.jwks)
        .await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;

    assert_eq!(observe(&app, &token(&app)).await, refused(KEY_SET_UNUSABLE));
    assert_eq!(
        observe(&app, &token(&app)).await,
        refused(KEY_SET_UNUSABLE),
        "within the backoff, no new fetch"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(observe(&app, &token(&app)).await, json!({"data": {}}));
}

#[tokio::test]
async fn rs256_protects_every_endpoint() {
    let app = spawn_app().await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    c1fapp_never_called(&app).await;
    let wrong = with_claims(&app, json!({"aud": "https://another-relay.example"}));
    for route in [
        "/health",
        "/observe/observables",
        "/refer/observables",
        "/deliberate/observables",
    ] {
        let response = json_body(app.post(route, &wrong, &body()).await).await;
        assert_eq!(
            response,
            refused("Wrong configuration-token-audience"),
            "{route}"
        );
    }
}

#[tokio::test]
async fn the_configured_user_agent_reaches_every_upstream() {
    const AGENT: &str = "Acme SOC relay (soc@example.com)";
    let app = spawn_app_with(|settings| settings.upstream.user_agent = AGENT.to_owned()).await;
    jwks_serves(&app, vec![jwk("relay-test-key")], 1).await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 1).await;
    crate::helpers::cyberscan_issues_tokens(&app, 1).await;
    crate::helpers::cyberscan_answers(
        &app,
        "/vulnerabilities/ip/192.0.2.10",
        json!({"vulnerabilities": []}),
        1,
    )
    .await;
    let token = with_claims(
        &app,
        json!({"api_key": crate::helpers::CYBERSCAN_KEY, "host": app.cyberscan.uri()}),
    );
    assert_eq!(observe(&app, &token).await, json!({"data": {}}));

    for (upstream, server) in [
        ("JWKS", &app.jwks),
        ("C1fApp", &app.c1fapp),
        ("CyberScan", &app.cyberscan),
    ] {
        let requests = server.received_requests().await.unwrap();
        assert!(!requests.is_empty(), "{upstream} was called");
        for request in requests {
            assert_eq!(
                request.headers.get("user-agent").unwrap(),
                AGENT,
                "{upstream} {}",
                request.url
            );
        }
    }
}

/// The key set holds `first` for one fetch, then `then` for every later one.
async fn key_set_changes(app: &TestApp, first: ResponseTemplate, then: Vec<Value>) {
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks"))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.jwks)
        .await;
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": then})))
        .mount(&app.jwks)
        .await;
}

#[tokio::test]
async fn a_key_the_host_withdrew_is_refused_once_the_key_set_is_past_its_age() {
    let app = spawn_app_with(|settings| {
        settings.jwks.refetch_interval = Duration::from_millis(100);
        settings.jwks.max_age = Duration::from_millis(300);
    })
    .await;
    let both = json!({"keys": [jwk("relay-test-key"), jwk("other-test-key")]});
    key_set_changes(
        &app,
        ResponseTemplate::new(200).set_body_json(both),
        vec![jwk("other-test-key")],
    )
    .await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 2).await;
    assert_eq!(observe(&app, &token(&app)).await, json!({"data": {}}));
    assert_eq!(
        observe(&app, &token(&app)).await,
        json!({"data": {}}),
        "the set is fresh: no fetch"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        observe(&app, &token(&app)).await,
        refused("kid from JWT header not found in API response")
    );
    assert_eq!(app.jwks.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_shorter_cache_control_max_age_wins_and_a_failed_refetch_keeps_the_keys() {
    let app = spawn_app_with(|settings| {
        settings.jwks.refetch_interval = Duration::from_millis(100);
        settings.jwks.max_age = Duration::from_secs(3600);
    })
    .await;
    let keys = json!({"keys": [jwk("relay-test-key")]});
    // max-age=0: refetch at the next token past the refetch interval, which
    // finds the host down; the keys held stay in use.
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("cache-control", "public, max-age=0")
                .set_body_json(keys),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.jwks)
        .await;
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.jwks)
        .await;
    c1fapp_finds(&app, "192.0.2.10", json!([]), 2).await;
    assert_eq!(observe(&app, &token(&app)).await, json!({"data": {}}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(observe(&app, &token(&app)).await, json!({"data": {}}));
    assert_eq!(
        app.jwks.received_requests().await.unwrap().len(),
        2,
        "refetched, as max-age said"
    );
}
