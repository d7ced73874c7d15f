//! Traces over OTLP/HTTP: the relay process exports to a receiver that
//! decodes what it gets (the OTLP protobuf types), and the span tree of one
//! request is checked — and that no observable's value, key or token is in
//! it. A collector that never answers costs requests nothing.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    C1FAPP_KEY, C1FAPP_PATH, SECRET_KEY, assert_ctim, c1fapp_record, hs256_token, observable,
    test_client,
};
use crate::relay_process::Relay;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A span as received, its attributes as text.
#[derive(Debug, Clone)]
struct Received {
    span: Span,
    attributes: HashMap<String, String>,
}

impl Received {
    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(text)) => text.clone(),
                Some(Any::IntValue(n)) => n.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// Every span the receiver got, with the resource of the first batch, and
/// the raw bodies.
async fn received(receiver: &MockServer) -> (Vec<Received>, HashMap<String, String>, Vec<u8>) {
    let mut spans = Vec::new();
    let mut resource = HashMap::new();
    let mut raw = Vec::new();
    for request in receiver.received_requests().await.unwrap_or_default() {
        assert_eq!(
            request
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/x-protobuf")
        );
        raw.extend_from_slice(&request.body);
        let export = ExportTraceServiceRequest::decode(request.body.as_slice())
            .expect("an OTLP protobuf export");
        for resource_spans in export.resource_spans {
            if let Some(r) = &resource_spans.resource {
                resource = text(&r.attributes);
            }
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let attributes = text(&span.attributes);
                    spans.push(Received { span, attributes });
                }
            }
        }
    }
    (spans, resource, raw)
}

async fn receiver() -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    receiver
}

/// A C1fApp that finds one record for every value.
async fn c1fapp_answering() -> MockServer {
    let c1fapp = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([c1fapp_record(json!({}))])))
        .mount(&c1fapp)
        .await;
    c1fapp
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_request_is_one_trace_with_a_span_per_provider_call_and_no_value_or_key() {
    let receiver = receiver().await;
    let c1fapp = c1fapp_answering().await;
    let relay = Relay::start(&[
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        ("C1FAPP_API_URL", format!("{}{C1FAPP_PATH}", c1fapp.uri())),
        ("RESULT_CACHE_TTL_SECONDS", "60".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri()),
        ("OTEL_SERVICE_NAME", "relay-under-test".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=test,team=soc%20tools".to_owned(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ])
    .await;
    let token = hs256_token(&json!({"key": C1FAPP_KEY, "iss": "tenant-a"}), SECRET_KEY);
    let values = ["192.0.2.77", "secret-domain.example"];
    let ask = |traceparent: Option<String>| {
        let mut request = test_client()
            .post(relay.url("/observe/observables"))
            .bearer_auth(&token)
            .json(&json!([
                observable("ip", values[0]),
                observable("domain", values[1])
            ]));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        request.send()
    };
    let first = ask(Some(format!("00-{TRACE_ID}-{PARENT_ID}-01")))
        .await
        .unwrap();
    let body = assert_ctim(first.json().await.unwrap());
    assert_eq!(body["data"]["sightings"]["count"], 2, "{body}");
    // Asked again: both answers come from the result cache.
    let again = ask(None).await.unwrap();
    assert_eq!(again.status(), 200);

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = received(&receiver).await.0;
        if spans.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, resource, raw) = received(&receiver).await;
    let requests: Vec<&Received> = spans
        .iter()
        .filter(|s| s.span.name == "POST /observe/observables")
        .collect();
    assert_eq!(requests.len(), 2, "{spans:#?}");

    // The first request continues the caller's trace.
    let request = requests
        .iter()
        .find(|s| hex(&s.span.trace_id) == TRACE_ID)
        .expect("the request span continues the traceparent");
    assert_eq!(hex(&request.span.parent_span_id), PARENT_ID);
    assert_eq!(request.span.kind, SpanKind::Server as i32);
    assert_eq!(request.attribute("http.route"), "/observe/observables");
    assert_eq!(request.attribute("request_id").len(), 36);
    assert_eq!(request.attribute("http.response.status_code"), "200");
    assert_eq!(request.attribute("client"), "127.0.0.1");
    assert_eq!(request.attribute("token.issuer"), "tenant-a");

    // One span per provider call, children of the request's.
    let calls: Vec<&Received> = spans
        .iter()
        .filter(|s| s.span.parent_span_id == request.span.span_id)
        .collect();
    assert_eq!(calls.len(), 2, "{spans:#?}");
    let mut types: Vec<&str> = calls
        .iter()
        .map(|c| c.attribute("observable.type"))
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["domain", "ip"]);
    for call in &calls {
        assert_eq!(call.span.name, "C1fApp observe");
        assert_eq!(call.span.kind, SpanKind::Client as i32);
        assert_eq!(call.span.trace_id, request.span.trace_id);
        assert_eq!(call.attribute("provider"), "C1fApp");
        assert_eq!(call.attribute("server.address"), "127.0.0.1");
        assert_eq!(call.attribute("outcome"), "answered");
        assert!(
            call.attribute("bytes_read").parse::<u64>().unwrap() > 0,
            "{call:?}"
        );
    }

    // The second request's calls came from the cache.
    let second = requests
        .iter()
        .find(|s| hex(&s.span.trace_id) != TRACE_ID)
        .expect("the second request");
    assert!(second.span.parent_span_id.is_empty(), "a trace of its own");
    let cached: Vec<&str> = spans
        .iter()
        .filter(|s| s.span.parent_span_id == second.span.span_id)
        .map(|s| s.attribute("outcome"))
        .collect();
    assert_eq!(cached, ["cached", "cached"], "{spans:#?}");

    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("relay-under-test")
    );
    assert_eq!(
        resource.get("deployment.environment").map(String::as_str),
        Some("test")
    );
    assert_eq!(resource.get("team").map(String::as_str), Some("soc tools"));

    // The providers are third parties: no traceparent reaches them unless asked.
    for call in c1fapp.received_requests().await.unwrap() {
        assert!(call.headers.get("traceparent").is_none());
    }

    // Nothing secret or asked about is in what was exported.
    let raw = String::from_utf8_lossy(&raw);
    for secret in [values[0], values[1], C1FAPP_KEY, SECRET_KEY, &token] {
        assert!(!raw.contains(secret), "{secret} was exported");
    }
}

#[tokio::test]
async fn with_upstream_traceparent_the_providers_get_the_calls_trace_context() {
    let receiver = receiver().await;
    let c1fapp = c1fapp_answering().await;
    let relay = Relay::start(&[
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        ("C1FAPP_API_URL", format!("{}{C1FAPP_PATH}", c1fapp.uri())),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri()),
        ("UPSTREAM_TRACEPARENT", "true".to_owned()),
    ])
    .await;
    let token = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);
    let response = test_client()
        .post(relay.url("/observe/observables"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(&json!([observable("ip", "192.0.2.5")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let calls = c1fapp.received_requests().await.unwrap();
    let sent = calls[0]
        .headers
        .get("traceparent")
        .map(|v| v.to_str().unwrap());
    let sent = sent.expect("a traceparent reached the provider");
    assert!(sent.starts_with(&format!("00-{TRACE_ID}-")), "{sent}");
    assert!(
        !sent.contains(PARENT_ID),
        "the provider call's own span is the parent"
    );
}

/// A collector that accepts connections and never answers: the queue fills,
/// spans are dropped and counted, and every request is answered as before.
#[tokio::test]
async fn a_collector_that_never_answers_costs_requests_nothing() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        for stream in silent.incoming().take(8) {
            connections.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
        drop(connections);
    });
    let c1fapp = c1fapp_answering().await;
    let relay = Relay::start(&[
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        ("C1FAPP_API_URL", format!("{}{C1FAPP_PATH}", c1fapp.uri())),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("http://{address}/v1/traces"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000".to_owned()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16".to_owned()),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "10".to_owned()),
    ])
    .await;
    let token = hs256_token(&json!({"key": C1FAPP_KEY}), SECRET_KEY);
    let client = test_client();
    for n in 0..200 {
        let response = client
            .post(relay.url("/observe/observables"))
            .bearer_auth(&token)
            .json(&json!([observable("ip", &format!("192.0.2.{}", n % 250))]))
            .send()
            .await
            .unwrap();
        let body = assert_ctim(response.json().await.unwrap());
        assert_eq!(body["data"]["sightings"]["count"], 1, "request {n}: {body}");
    }
    let metrics = client.get(relay.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ctr_relay_trace_spans_total{result=\"dropped\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // 400 spans (a request's and its call's, 200 times) into a queue of 16
    // that no one empties: nearly all are dropped.
    assert!(dropped > 300, "dropped {dropped}\n{metrics}");

    // Exit is not held up by the collector: at most the final flush's 2 s.
    let stopping = std::time::Instant::now();
    relay.signal("TERM");
    let (code, output) = relay.wait().await;
    assert_eq!(code, Some(0), "{output}");
    assert!(stopping.elapsed() < Duration::from_secs(10), "{output}");
    drop(held);
}
