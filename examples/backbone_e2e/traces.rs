//! Traces in Backbone mode: a relay exporting to an OTLP receiver (wiremock,
//! the export decoded with the OTLP protobuf types) answers a request whose
//! AMQP headers carry a `traceparent`; its `backbone message` span continues
//! that trace, its provider call is a child of it, and neither the
//! observable's value nor a key is in what was exported.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::bus::PUBLISH;
use crate::fleet::ENV_C1FAPP_KEY;
use crate::scenarios::{Run, TOPIC, request};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";
const WAIT: Duration = Duration::from_secs(30);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn spans(receiver: &MockServer) -> (Vec<Span>, Vec<u8>) {
    let mut spans = Vec::new();
    let mut raw = Vec::new();
    for request in receiver.received_requests().await.unwrap_or_default() {
        raw.extend_from_slice(&request.body);
        if let Ok(export) = ExportTraceServiceRequest::decode(request.body.as_slice()) {
            for resource in export.resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
        }
    }
    (spans, raw)
}

pub async fn traces(run: &mut Run) -> Result<(), String> {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let extra = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let relay = run.start_relay_with("relay-traced", &extra).await?;
    run.relays.push(relay);
    let value = "203.0.113.77";
    let id = "traced-1";
    let body = request(id, &json!([{"type": "ip", "value": value}]), &json!({}));
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    run.bus
        .publish_with_headers(PUBLISH, TOPIC, &body, &[("traceparent", &traceparent)])
        .await?;
    run.totals.published += 1;
    let ids = [id.to_owned()];
    if !run
        .replies
        .until(WAIT, |replies| replies.tally(&ids).0 == 1)
        .await
    {
        return Err("the traced request got no reply".to_owned());
    }
    run.totals.answered += 1;

    let deadline = Instant::now() + WAIT;
    let (message, call, raw) = loop {
        let (spans, raw) = spans(&receiver).await;
        let message = spans
            .iter()
            .find(|s| s.name == "backbone message" && hex(&s.trace_id) == TRACE_ID)
            .cloned();
        let call = message.as_ref().and_then(|m| {
            spans
                .iter()
                .find(|s| s.parent_span_id == m.span_id && s.name == "C1fApp observe")
                .cloned()
        });
        if let (Some(message), Some(call)) = (message, call) {
            break (message, call, raw);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no backbone message span with its provider call: {spans:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if hex(&message.parent_span_id) != PARENT_ID {
        return Err(format!(
            "the message span does not continue the traceparent: {message:?}"
        ));
    }
    let raw = String::from_utf8_lossy(&raw);
    if raw.contains(value) || raw.contains(ENV_C1FAPP_KEY) {
        return Err("an observable's value or a key was exported".to_owned());
    }
    println!(
        "   trace {TRACE_ID}: `backbone message` (parent {PARENT_ID}, from the AMQP headers) \
         with `{}` beneath it; no value or key exported",
        call.name
    );
    let mut relay = run.relays.remove(0);
    relay.proc.signal("TERM")?;
    match relay.proc.exited(WAIT).await {
        Some(status) if status.success() => Ok(()),
        _ => Err("the traced relay did not exit 0 after SIGTERM".to_owned()),
    }
}
