//! `ctr-relay demo` is no open relay: loopback unless HOST is given, its own
//! HS256 token only, and no private address but its own demo services.

use serde_json::{Value, json};

use ctr_relay::config::Settings;
use ctr_relay::demo::{self, DemoUpstream};
use ctr_relay::http::Application;

use crate::helpers::{observable, test_client};

async fn start_demo() -> (String, String, ctr_relay::domain::Secret, DemoUpstream) {
    let upstream = DemoUpstream::start().unwrap();
    let base = Settings {
        port: 0,
        ..Settings::default()
    };
    let (settings, secret) = demo::settings(base, upstream.port, false).unwrap();
    assert_eq!(settings.host.to_string(), "127.0.0.1");
    let token = demo::token(&secret, upstream.port).unwrap();
    let application = Application::build(settings).await.unwrap();
    let relay = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until(std::future::pending()));
    (relay, token, secret, upstream)
}

async fn observe(relay: &str, token: &str) -> Value {
    test_client()
        .post(format!("{relay}/observe/observables"))
        .bearer_auth(token)
        .json(&json!([observable("ip", "198.51.100.7")]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[actix_web::test]
async fn the_demo_reaches_its_own_services_and_no_other_private_address() {
    let (relay, token, secret, upstream) = start_demo().await;
    let answer = observe(&relay, &token).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert!(answer["data"]["sightings"]["count"].as_u64().unwrap() > 0);

    // Even with the demo's own key, CyberScan is not aimed elsewhere inside.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    for host in [
        format!("http://127.0.0.1:{port}"),
        "http://10.0.0.1".to_owned(),
        "http://169.254.169.254".to_owned(),
        format!("http://localhost:{}", upstream.port),
    ] {
        let inside =
            ctr_relay::auth::sign::hs256(&json!({"api_key": "k", "host": host}), &secret).unwrap();
        let answer = observe(&relay, &inside).await;
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("private or local address"),
            "{host}: {answer}"
        );
    }
}

#[actix_web::test]
async fn the_demo_accepts_no_xdr_token() {
    let (relay, _, _, _upstream) = start_demo().await;
    // An RS256 token naming Cisco's key-set host: refused before any fetch.
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k"});
    let claims = json!({"jwks_host": "visibility.amp.cisco.com", "key": "k", "aud": relay});
    let token = crate::helpers::raw_token(&header, &claims, "c2ln");
    let answer = observe(&relay, &token).await;
    assert_eq!(
        answer["errors"][0]["code"], "authorization error",
        "{answer}"
    );
}
