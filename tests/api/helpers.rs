//! Spawning the relay against mock upstreams, and minting tokens.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use ctr_relay::config::Settings;
use ctr_relay::domain::{JwksHost, Secret};
use ctr_relay::http::Application;

pub const SECRET_KEY: &str = "test-secret-key-that-is-long-enough";
pub const C1FAPP_KEY: &str = "c1fapp-test-key";
pub const C1FAPP_PATH: &str = "/cifapp/api/";
pub const CYBERSCAN_KEY: &str = "cyberscan-test-key";
pub const CYBERSCAN_TOKEN: &str = "cyberscan-access-token-1";

/// The upstream timeout the tests run with: short, so timeouts are quick to prove.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(500);

pub struct TestApp {
    pub address: String,
    pub c1fapp: MockServer,
    pub cyberscan: MockServer,
    /// Serves `/.well-known/jwks`; allowlisted as `http://127.0.0.1:<port>`.
    pub jwks: MockServer,
    pub http: reqwest::Client,
}

/// The relay with the test defaults: HS256 with [`SECRET_KEY`]; C1fApp,
/// CyberScan and a JWKS host at wiremock servers on loopback (so private
/// CyberScan hosts are allowed); a short upstream timeout.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// As [`spawn_app`], with `configure` applied to the settings last.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let c1fapp = MockServer::start().await;
    let cyberscan = MockServer::start().await;
    let jwks = MockServer::start().await;
    let mut settings = Settings {
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        secret_key: Some(Secret::new(SECRET_KEY)),
        ..Settings::default()
    };
    settings.upstream.c1fapp_api_url =
        Url::parse(&format!("{}{C1FAPP_PATH}", c1fapp.uri())).unwrap();
    settings.upstream.timeout = UPSTREAM_TIMEOUT;
    settings.upstream.allow_private_hosts = true;
    settings.jwks.hosts = vec![JwksHost::parse(&jwks.uri()).unwrap()];
    configure(&mut settings);

    let application = Application::build(settings)
        .await
        .expect("the relay builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until(std::future::pending()));
    TestApp {
        address,
        c1fapp,
        cyberscan,
        jwks,
        http: test_client(),
    }
}

/// A plain-HTTP client for talking to the relay. TLS is configured explicitly
/// (no process-wide crypto provider), as in the relay itself.
pub fn test_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

impl TestApp {
    pub fn url(&self, route: &str) -> String {
        format!("{}{route}", self.address)
    }

    /// POSTs `body` as JSON with `Authorization: Bearer <token>`.
    pub async fn post(&self, route: &str, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(route))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("the relay answers")
    }

    /// The relay's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// `127.0.0.1:<port>`: the `jwks_host` naming the allowlisted JWKS server.
    pub fn jwks_host(&self) -> String {
        self.jwks.uri().trim_start_matches("http://").to_owned()
    }

    /// A token carrying the CyberScan key and this app's CyberScan server.
    pub fn cyberscan_token(&self) -> String {
        hs256_token(
            &json!({"api_key": CYBERSCAN_KEY, "host": self.cyberscan.uri()}),
            SECRET_KEY,
        )
    }

    /// A token carrying both providers' credentials.
    pub fn both_token(&self) -> String {
        hs256_token(
            &json!({"key": C1FAPP_KEY, "api_key": CYBERSCAN_KEY, "host": self.cyberscan.uri()}),
            SECRET_KEY,
        )
    }

    /// POSTs `body` with `token` and returns the JSON answer after checking
    /// HTTP 200 and a JSON content type.
    pub async fn post_json_with(&self, route: &str, token: &str, body: &Value) -> Value {
        json_body(self.post(route, token, body).await).await
    }

    /// POSTs `body` with a C1fApp token, and returns the JSON answer after
    /// checking that it came with HTTP 200 and a JSON content type.
    pub async fn post_json(&self, route: &str, body: &Value) -> Value {
        let response = self.post(route, &c1fapp_token(), body).await;
        json_body(response).await
    }
}

/// Asserts HTTP 200 with `application/json`, and returns the body, after
/// checking that an answer (`data`, `errors`) is valid CTIM.
pub async fn json_body(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "HTTP status");
    assert_json_content_type(&response);
    assert_ctim(response.json().await.expect("a JSON body"))
}

/// `body`, after asserting that it is a valid CTIM answer when it is one (it
/// carries `data` or `errors`; /watchdog's echo, a string, is not): ids
/// unique, references resolved, required fields, vocabularies, times and
/// links (`ctr_relay::ctim::check`).
pub fn assert_ctim(body: Value) -> Value {
    if body.get("data").is_some_and(|data| !data.is_string()) || body.get("errors").is_some() {
        let problems = ctr_relay::ctim::check::answer_problems(&body);
        assert!(
            problems.is_empty(),
            "not valid CTIM: {problems:#?}\n{body:#}"
        );
    }
    body
}

pub fn assert_json_content_type(response: &reqwest::Response) {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?}"
    );
}

/// The error envelope with one error.
pub fn one_error(code: &str, message: &str) -> Value {
    json!({"errors": [{"type": "fatal", "code": code, "message": message}]})
}

/// An HS256 token over `claims`, signed with `secret`.
pub fn hs256_token(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A token carrying the C1fApp key, signed with the relay's key.
pub fn c1fapp_token() -> String {
    hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY)
}

/// A token with arbitrary header and payload and the given signature text.
pub fn raw_token(header: &Value, payload: &Value, signature: &str) -> String {
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());
    format!("{}.{}.{signature}", encode(header), encode(payload))
}

pub fn observable(kind: &str, value: &str) -> Value {
    json!({"type": kind, "value": value})
}

/// A C1fApp record in the documented shape; `overrides` replaces fields.
pub fn c1fapp_record(overrides: Value) -> Value {
    let mut record = json!({
        "feed_label": ["Phishtank"],
        "domain": ["login.example.net"],
        "description": ["Example"],
        "derived": "direct",
        "address": ["https://login.example.net/?session=abc"],
        "ip_address": ["192.0.2.10"],
        "asn": ["-"],
        "confidence": [95],
        "country": ["US"],
        "reportime": ["2020-04-12"],
        "source": ["http://www.phishtank.com/phish_detail.php?phish_id=1,http://www.phishtank.com/phish_detail.php?phish_id=1234"],
        "asn_desc": ["-"],
        "assessment": ["phishing"]
    });
    if let (Some(target), Value::Object(changes)) = (record.as_object_mut(), overrides) {
        target.extend(changes);
    }
    record
}

/// A C1fApp search for `value` (with the test key).
pub fn c1fapp_search(value: &str) -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(body_partial_json(
            json!({"key": C1FAPP_KEY, "request": value}),
        ))
}

/// C1fApp answers `records` for `value`, exactly `times` times.
pub async fn c1fapp_finds(app: &TestApp, value: &str, records: Value, times: u64) {
    c1fapp_search(value)
        .respond_with(ResponseTemplate::new(200).set_body_json(records))
        .expect(times)
        .mount(&app.c1fapp)
        .await;
}

/// Asserts that C1fApp is never called during the test.
pub async fn c1fapp_never_called(app: &TestApp) {
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&app.c1fapp)
        .await;
}

/// A local port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The RS256 signing key of a fixture (`relay-test-key` or `other-test-key`).
pub fn rsa_private_key(name: &str) -> EncodingKey {
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/{name}.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    EncodingKey::from_rsa_pem(&pem).unwrap()
}

/// The public key of a fixture as PEM text.
pub fn rsa_public_pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}.pub.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The public key of a fixture as a JWK (its `kid` is the fixture's name).
pub fn jwk(name: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}.jwk.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// An RS256 token over `claims`, signed with fixture `key` and naming `kid`.
pub fn rs256_token(claims: &Value, key: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &rsa_private_key(key)).unwrap()
}

/// The JWKS server answers `keys` at `/.well-known/jwks`, exactly `times` times.
pub async fn jwks_serves(app: &TestApp, keys: Vec<Value>, times: u64) {
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": keys})))
        .expect(times)
        .mount(&app.jwks)
        .await;
}

/// CyberScan hands out [`CYBERSCAN_TOKEN`] for [`CYBERSCAN_KEY`], exactly `times` times.
pub async fn cyberscan_issues_tokens(app: &TestApp, times: u64) {
    Mock::given(method("POST"))
        .and(path("/api/v1/token"))
        .and(wiremock::matchers::body_json(json!({"key": CYBERSCAN_KEY})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"access_token": CYBERSCAN_TOKEN})),
        )
        .expect(times)
        .mount(&app.cyberscan)
        .await;
}

/// CyberScan answers `body` to an authenticated GET of `route`, exactly `times` times.
pub async fn cyberscan_answers(app: &TestApp, route: &str, body: Value, times: u64) {
    Mock::given(method("GET"))
        .and(path(format!("/api/v1{route}")))
        .and(wiremock::matchers::header(
            "authorization",
            format!("Bearer {CYBERSCAN_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(times)
        .mount(&app.cyberscan)
        .await;
}

/// Asserts that CyberScan is never called during the test.
pub async fn cyberscan_never_called(app: &TestApp) {
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&app.cyberscan)
        .await;
}

/// A CyberScan finding in the documented shape.
pub fn vulnerability(name: &str, cve: &str) -> Value {
    json!({
        "name": name,
        "family": "General",
        "description": format!("{name} is vulnerable"),
        "severity": "Medium",
        "port": 22,
        "protocol": "tcp",
        "cve": cve,
        "cvss": 6.8,
        "confidence": 30
    })
}
