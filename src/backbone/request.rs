//! One delivery, answered: read, credentials, the lookups, the reply
//! published and confirmed, then the delivery settled (ack after the reply,
//! reject for what cannot be served).
//!
//! A reply that cannot be delivered never makes a loop (`failed.rs`): one
//! larger than `BACKBONE_MAX_MESSAGE_BYTES` becomes an error reply naming the
//! limit; one the broker refuses (nack) has its request requeued once, to get
//! an error reply saying so; one lost with its channel or connection is
//! answered once more, then gets an error reply saying what happened. An
//! error reply refused, or lost twice, and the request is rejected without
//! requeue (dead-lettered) and counted.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};

use super::Shared;
use super::broker::{self, BrokerError};
use super::failed::{self, Next};
use super::wire::{self, Incoming, Reply};
use crate::ctim::CtimError;
use crate::enrich::{self, RequestError};
use crate::metrics::Metrics;
use crate::providers::scope::Scope;

/// Counts a request in work for as long as it lives.
struct InWork<'a>(&'a Metrics);

impl<'a> InWork<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.backbone_in_flight(1);
        Self(metrics)
    }
}

impl Drop for InWork<'_> {
    fn drop(&mut self) {
        self.0.backbone_in_flight(-1);
    }
}

/// The span of one delivery (when traces are on), continuing the
/// `traceparent` of its AMQP headers.
pub(super) fn message_span(delivery: &Delivery) -> tracing::Span {
    if !crate::telemetry::trace::on() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: crate::telemetry::trace::TARGET,
        parent: None,
        "backbone message",
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.message.body.size = delivery.data.len(),
        redelivered = delivery.redelivered,
    );
    let header = |name: &str| {
        let headers = delivery.properties.headers().as_ref()?;
        match headers.inner().get(name)? {
            lapin::types::AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
            lapin::types::AMQPValue::ShortString(text) => Some(text.as_str()),
            _ => None,
        }
    };
    crate::telemetry::trace::continue_trace(&span, header("traceparent"), header("tracestate"));
    span
}

/// Answers one delivery; `Err` only when the broker connection failed (then
/// the delivery is not settled and comes back).
pub(super) async fn handle(
    shared: &Shared,
    channel: &lapin::Channel,
    delivery: Delivery,
) -> Result<(), BrokerError> {
    let metrics = &shared.metrics;
    let _in_work = InWork::new(metrics);
    metrics.backbone_event("received");
    if delivery.redelivered {
        metrics.backbone_event("redelivered");
    }
    if delivery.exchange.as_str() == broker::BROADCAST_EXCHANGE {
        tracing::debug!("broadcast message ignored");
        metrics.backbone_event("ignored");
        delivery.ack(BasicAckOptions::default()).await?;
        return Ok(());
    }
    let limits = &shared.settings.limits;
    let next = |request_id: &str| match delivery.redelivered {
        true => shared.failed.next(request_id),
        false => Next::Answer,
    };
    match wire::read(
        &delivery.data,
        limits.max_body_bytes,
        limits.max_observables,
    ) {
        Incoming::NotARequest => {
            tracing::debug!("message without request_id ignored");
            metrics.backbone_event("ignored");
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Incoming::Unreadable(reason) => {
            tracing::warn!(
                reason,
                bytes = delivery.data.len(),
                "unreadable message rejected"
            );
            metrics.backbone_event("rejected");
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await?;
        }
        Incoming::Refused {
            request_id,
            reply_topic,
            error,
        } => {
            refuse(
                shared,
                channel,
                &delivery,
                &request_id,
                reply_topic.as_deref(),
                error,
            )
            .await?;
        }
        Incoming::Request(request) if next(&request.request_id) != Next::Answer => {
            // Its answer could not be delivered before: not looked up again.
            metrics.backbone_event("redelivered_after_failure");
            let what = match next(&request.request_id) {
                Next::ErrorReply(what) | Next::DeadLetter(what) => what,
                Next::Answer => String::new(),
            };
            refuse(
                shared,
                channel,
                &delivery,
                &request.request_id,
                request.reply_topic.as_deref(),
                RequestError::AnswerUndeliverable { what }.to_ctim(),
            )
            .await?;
        }
        Incoming::Request(request) => {
            let credentials = match &request.token {
                Some(token) => shared
                    .authenticator
                    .verify(token, String::new)
                    .await
                    .map_err(|error| {
                        shared.metrics.auth_failure(error.reason());
                        RequestError::Auth(error)
                    }),
                None => shared
                    .settings
                    .credentials
                    .clone()
                    .ok_or(RequestError::NoCredentials),
            };
            let credentials = match credentials {
                Ok(credentials) => credentials,
                Err(error) => {
                    return refuse(
                        shared,
                        channel,
                        &delivery,
                        &request.request_id,
                        request.reply_topic.as_deref(),
                        error.to_ctim(),
                    )
                    .await;
                }
            };
            let providers = shared.providers.for_credentials(&credentials);
            let limit = credentials
                .entities_limit
                .unwrap_or(shared.settings.entities_limit);
            let scope = Scope::new(limits, shared.settings.pool.clone());
            let outcome = enrich::observe(
                &providers,
                &request.observables,
                limit,
                limits.lookup_concurrency,
                &scope,
            )
            .await;
            let reply = Reply {
                request_id: &request.request_id,
                data: &outcome.data,
                errors: &outcome.errors,
            };
            let topic = request
                .reply_topic
                .as_deref()
                .unwrap_or(&shared.settings.reply_topic);
            let body = wire::encode(topic, reply)?;
            drop(outcome);
            let limit = shared.settings.max_message_bytes;
            if body.len() > limit {
                let bytes = body.len();
                drop(body);
                return refuse(
                    shared,
                    channel,
                    &delivery,
                    &request.request_id,
                    request.reply_topic.as_deref(),
                    RequestError::AnswerTooLarge { bytes, limit }.to_ctim(),
                )
                .await;
            }
            let outbox = shared.settings.topology.outbox();
            shared
                .failed
                .sending(&request.request_id, failed::Reply::Answer);
            match broker::publish(channel, &outbox, topic, &body).await {
                Ok(()) => {
                    shared.failed.sent(&request.request_id);
                    delivery.ack(BasicAckOptions::default()).await?;
                    metrics.backbone_event("replied");
                    tracing::info!(request_id = %request.request_id, observables = request.observables.len(), "request answered");
                }
                Err(BrokerError::Refused) => {
                    // The broker could not take the reply (a full outbox):
                    // once more; delivered again, it gets an error reply.
                    shared.failed.failed(&request.request_id, REFUSED, true);
                    metrics.backbone_event("reply_refused");
                    tracing::warn!(request_id = %request.request_id, "the broker refused the reply (nack); the request is requeued once");
                    delivery
                        .nack(BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        })
                        .await?;
                }
                Err(error) => {
                    // The broker closed the channel (a reply over its
                    // max_message_size) or the connection broke.
                    shared
                        .failed
                        .failed(&request.request_id, &broken(&error), false);
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

const REFUSED: &str = "the broker refused it (nack)";

/// What a failed publish says happened: the broker's reason when it gave one
/// (e.g. `PRECONDITION_FAILED - message size … larger than configured max
/// size …`).
pub(super) fn broken(error: &BrokerError) -> String {
    format!("publishing it failed ({error})")
}

/// An error reply to a request that cannot be served, then the request is
/// rejected without requeue (an operator's dead-letter exchange keeps it).
/// When the error reply cannot be delivered either (refused, or failed
/// before), the request is rejected without it: dead-lettered, counted.
async fn refuse(
    shared: &Shared,
    channel: &lapin::Channel,
    delivery: &Delivery,
    request_id: &str,
    reply_topic: Option<&str>,
    error: CtimError,
) -> Result<(), BrokerError> {
    tracing::warn!(request_id, error_code = error.code.as_str(), error_message = %error.message, "request refused");
    let metrics = &shared.metrics;
    let dead_letter = |what: &str| {
        metrics.backbone_event("dead_lettered");
        tracing::warn!(
            request_id,
            what,
            "no reply can be delivered: the request is rejected without requeue (dead-lettered)"
        );
    };
    let reject = BasicRejectOptions { requeue: false };
    // Its error reply failed before too: no further try.
    if delivery.redelivered
        && let Next::DeadLetter(what) = shared.failed.next(request_id)
    {
        dead_letter(&what);
        delivery.reject(reject).await?;
        shared.failed.sent(request_id);
        return Ok(());
    }
    let topic = reply_topic.unwrap_or(&shared.settings.reply_topic);
    let data = crate::ctim::Entities::default();
    let body = wire::encode(
        topic,
        Reply {
            request_id,
            data: &data,
            errors: std::slice::from_ref(&error),
        },
    )?;
    let outbox = shared.settings.topology.outbox();
    shared.failed.sending(request_id, failed::Reply::Error);
    match broker::publish(channel, &outbox, topic, &body).await {
        Ok(()) => metrics.backbone_event("error_reply"),
        Err(BrokerError::Refused) => dead_letter(REFUSED),
        Err(error) => {
            shared.failed.failed(request_id, &broken(&error), false);
            return Err(error);
        }
    }
    delivery.reject(reject).await?;
    shared.failed.sent(request_id);
    Ok(())
}
