//! Upstreams that hang, refuse, break off, lie about TLS, redirect or flood.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    C1FAPP_PATH, c1fapp_finds, c1fapp_record, c1fapp_search, closed_port, observable, one_error,
    spawn_app, spawn_app_with,
};

const ROUTE: &str = "/observe/observables";

fn one_ip() -> Value {
    json!([observable("ip", "192.0.2.10")])
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_is_a_timeout() {
    let app = spawn_app().await;
    c1fapp_search("192.0.2.10")
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app.post_json(ROUTE, &one_ip()).await;
    assert_eq!(
        response,
        one_error("timeout", "C1fApp did not respond within 0.5 seconds")
    );
}

#[tokio::test]
async fn a_timeout_on_one_observable_keeps_the_others() {
    let app = spawn_app().await;
    c1fapp_search("192.0.2.1")
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    c1fapp_finds(&app, "192.0.2.2", json!([c1fapp_record(json!({}))]), 1).await;
    let response = app
        .post_json(
            ROUTE,
            &json!([observable("ip", "192.0.2.1"), observable("ip", "192.0.2.2")]),
        )
        .await;
    assert_eq!(response["data"]["sightings"]["count"], 1);
    assert_eq!(response["errors"][0]["code"], "timeout");
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_a_connection_error() {
    let url = format!("http://127.0.0.1:{}/cifapp/api/", closed_port());
    let configured = url.clone();
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url = Url::parse(&configured).unwrap();
    })
    .await;
    let response = app.post_json(ROUTE, &one_ip()).await;
    assert_eq!(
        response,
        one_error(
            "connection error",
            &format!("Unable to connect to C1fApp, validate the configured API endpoint: {url}")
        )
    );
}

/// A TLS server with a self-signed certificate, which the relay must not trust.
async fn self_signed_tls_server() -> u16 {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![certified.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let port = self_signed_tls_server().await;
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url =
            Url::parse(&format!("https://127.0.0.1:{port}/cifapp/api/")).unwrap();
    })
    .await;
    let response = app.post_json(ROUTE, &one_ip()).await;
    assert_eq!(response["errors"][0]["code"], "unknown", "{response}");
    let message = response["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Unable to verify SSL certificate: invalid peer certificate"),
        "{message}"
    );
}

/// A server that promises a body and hangs up half way through it.
async fn server_that_breaks_off() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 8192];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n[{\"feed_")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_connection_cut_mid_body_is_a_connection_error() {
    let port = server_that_breaks_off().await;
    let app = spawn_app_with(move |settings| {
        settings.upstream.c1fapp_api_url =
            Url::parse(&format!("http://127.0.0.1:{port}/cifapp/api/")).unwrap();
    })
    .await;
    let response = app.post_json(ROUTE, &one_ip()).await;
    assert_eq!(
        response,
        one_error(
            "connection error",
            "The connection to C1fApp was interrupted before the response was complete"
        )
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_without_reading_it_all() {
    let app = spawn_app_with(|settings| settings.upstream.max_response_bytes = 4096).await;
    c1fapp_search("192.0.2.10")
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(100_000)))
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app.post_json(ROUTE, &one_ip()).await;
    assert_eq!(
        response,
        one_error(
            "unknown",
            "The response from C1fApp is larger than 4096 bytes"
        )
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let app = spawn_app().await;
    c1fapp_search("192.0.2.10")
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}{C1FAPP_PATH}", elsewhere.uri()))
                .set_body_string("moved"),
        )
        .expect(1)
        .mount(&app.c1fapp)
        .await;
    let response = app.post_json(ROUTE, &one_ip()).await;
    assert_eq!(
        response,
        one_error("unknown", "Unexpected response from C1fApp: moved")
    );
}
