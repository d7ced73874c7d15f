//! The test's own Backbone client. It publishes requests the way a Backbone
//! client's traffic reaches the relay (through `soar-publish`, by topic, or
//! through `broadcast`) and collects what the relays send (outbox replies,
//! notify statuses), reconnecting across a broker restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const PUBLISH: &str = "soar-publish";

/// Waits for the broker to take a published message.
async fn confirmed(confirm: lapin::PublisherConfirm) -> Result<(), String> {
    match confirm.await.map_err(|error| error.to_string())? {
        Confirmation::Ack(_) => Ok(()),
        other => Err(format!("the broker did not take a request: {other:?}")),
    }
}
pub const BROADCAST: &str = "broadcast";
/// Where the inbox's dead-letter policy (set by the script) sends rejects.
pub const DEAD: &str = "ctr-relay-dead";

pub struct Bus {
    _connection: Connection,
    channel: Channel,
}

async fn open(url: &str, tls_ca_pem: Option<&str>) -> Result<(Connection, Channel), String> {
    let mut builder = lapin::DefaultConnectionBuilder::new()
        .map_err(|error| error.to_string())?
        .with_uri_str(url.to_owned());
    if let Some(pem) = tls_ca_pem {
        builder = builder.with_tls_config(lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: Some(pem.to_owned()),
        });
    }
    let connection = builder.connect().await.map_err(|error| error.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| error.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|error| error.to_string())?;
    Ok((connection, channel))
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

impl Bus {
    pub async fn connect(url: &str, tls_ca_pem: Option<&str>) -> Result<Bus, String> {
        let (connection, channel) = open(url, tls_ca_pem).await?;
        Ok(Bus {
            _connection: connection,
            channel,
        })
    }

    /// The exchanges the Backbone has, and the dead-letter exchange and queue
    /// the script's policy names.
    pub async fn declare(&self) -> Result<(), String> {
        let channel = &self.channel;
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (PUBLISH, ExchangeKind::Topic),
            (BROADCAST, ExchangeKind::Fanout),
            (DEAD, ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(name.into(), kind, options, FieldTable::default())
                .await
                .map_err(|error| error.to_string())?;
        }
        channel
            .queue_declare(DEAD.into(), durable(), FieldTable::default())
            .await
            .map_err(|error| error.to_string())?;
        channel
            .queue_bind(
                DEAD.into(),
                DEAD.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| error.to_string())?;
        Ok(())
    }

    /// Publishes every body (persistent) and waits for every confirmation.
    pub async fn publish_all(
        &self,
        exchange: &str,
        routing_key: &str,
        bodies: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<usize, String> {
        let mut confirms = Vec::new();
        for body in bodies {
            confirms.push(
                self.send(exchange, routing_key, &body, FieldTable::default())
                    .await?,
            );
        }
        let published = confirms.len();
        for confirm in confirms {
            confirmed(confirm).await?;
        }
        Ok(published)
    }

    /// Publishes one body with `headers` (AMQP message headers, as text) and
    /// waits for its confirmation.
    pub async fn publish_with_headers(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(), String> {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            table.insert(
                (*name).into(),
                lapin::types::AMQPValue::LongString(value.as_bytes().to_vec().into()),
            );
        }
        confirmed(self.send(exchange, routing_key, body, table).await?).await
    }

    /// One persistent JSON message; its confirmation to wait for.
    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
    ) -> Result<lapin::PublisherConfirm, String> {
        self.channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .map_err(|error| error.to_string())
    }

    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
    ) -> Result<(), String> {
        self.publish_all(exchange, routing_key, [body])
            .await
            .map(|_| ())
    }

    /// Messages ready in `queue` (declared durable if it is not there yet).
    pub async fn ready(&self, queue: &str) -> Result<u32, String> {
        self.channel
            .queue_declare(queue.into(), durable(), FieldTable::default())
            .await
            .map(|queue| queue.message_count())
            .map_err(|error| error.to_string())
    }

    /// Empties `queue`.
    pub async fn purge(&self, queue: &str) -> Result<u32, String> {
        self.channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .map_err(|error| error.to_string())
    }

    /// [`Bus::ready`], once it has stopped changing for `quiet`.
    pub async fn settled(
        &self,
        queue: &str,
        quiet: Duration,
        timeout: Duration,
    ) -> Result<u32, String> {
        let deadline = Instant::now() + timeout;
        let mut last = self.ready(queue).await?;
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.ready(queue).await?;
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        Ok(last)
    }
}

/// Consumes `queue` for as long as the handle lives, reconnecting when the
/// connection breaks; each message (JSON) is passed on, then acknowledged.
pub fn collect(url: String, tls_ca_pem: Option<String>, queue: String) -> Collector {
    let (sender, receiver) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            if let Err(error) = consume(&url, tls_ca_pem.as_deref(), &queue, &sender).await {
                if sender.is_closed() {
                    return;
                }
                tracing_line(&queue, &error);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Collector {
        receiver,
        task,
        seen: HashMap::new(),
        replies: 0,
        count_only: None,
        checked: 0,
        invalid: Vec::new(),
    }
}

/// [`collect`], counting the messages whose `request_id` starts with
/// `prefix` only (a benchmark's thousands of replies are not kept, and those
/// of an earlier run are not counted).
pub fn count(url: String, queue: String, prefix: String) -> Collector {
    let mut collector = collect(url, None, queue);
    collector.count_only = Some(prefix);
    collector
}

#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    message: HeadMessage<'a>,
}

#[derive(serde::Deserialize)]
struct HeadMessage<'a> {
    #[serde(borrow)]
    request_id: Option<&'a str>,
}

fn tracing_line(queue: &str, error: &str) {
    if std::env::var_os("E2E_VERBOSE").is_some() {
        eprintln!("   (collector of {queue}: {error}; reconnecting)");
    }
}

async fn consume(
    url: &str,
    tls_ca_pem: Option<&str>,
    queue: &str,
    sender: &mpsc::UnboundedSender<Vec<u8>>,
) -> Result<(), String> {
    let (_connection, channel) = open(url, tls_ca_pem).await?;
    channel
        .queue_declare(queue.into(), durable(), FieldTable::default())
        .await
        .map_err(|error| error.to_string())?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            format!("e2e-{}", uuid::Uuid::new_v4()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|error| error.to_string())?;
    while let Some(delivery) = consumer.next().await {
        let mut delivery = delivery.map_err(|error| error.to_string())?;
        if sender.send(std::mem::take(&mut delivery.data)).is_err() {
            return Ok(());
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(|error| error.to_string())?;
    }
    Err("the consumer ended".to_owned())
}

/// What one queue has delivered: the messages by `request_id` (first one
/// kept, count of all).
pub struct Collector {
    receiver: mpsc::UnboundedReceiver<Vec<u8>>,
    task: JoinHandle<()>,
    pub seen: HashMap<String, (usize, Value)>,
    /// Every message received (or, counting only, those counted).
    pub replies: usize,
    count_only: Option<String>,
    /// Replies checked as CTIM answers (`ctr_relay::ctim::check`), and what
    /// was wrong with those that were not valid.
    pub checked: usize,
    pub invalid: Vec<String>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `message.request_id` of a wire message (or of a status: `status`).
fn key(value: &Value) -> String {
    let message = &value["message"];
    message["request_id"]
        .as_str()
        .or_else(|| message["status"].as_str())
        .unwrap_or("(none)")
        .to_owned()
}

impl Collector {
    fn take(&mut self, body: Vec<u8>) {
        if let Some(prefix) = &self.count_only {
            let head = serde_json::from_slice::<Head<'_>>(&body).ok();
            if head
                .and_then(|head| head.message.request_id)
                .is_some_and(|id| id.starts_with(prefix.as_str()))
            {
                self.replies += 1;
            }
            return;
        }
        self.replies += 1;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String("(not JSON)".to_owned()));
        self.check(&value);
        let entry = self.seen.entry(key(&value)).or_insert((0, value));
        entry.0 += 1;
    }

    /// A reply's `data` and `errors` (left out when empty, as over HTTP)
    /// checked as a CTIM answer.
    fn check(&mut self, value: &Value) {
        let message = &value["message"];
        let Some(data) = message.get("data") else {
            return;
        };
        let mut answer = serde_json::json!({"data": data});
        if message["errors"]
            .as_array()
            .is_some_and(|errors| !errors.is_empty())
        {
            answer["errors"] = message["errors"].clone();
        }
        self.checked += 1;
        for problem in ctr_relay::ctim::check::answer_problems(&answer) {
            self.invalid.push(format!("{}: {problem}", key(value)));
        }
    }

    /// Reads messages until `done` holds or `timeout` passes; whether it held.
    pub async fn until(&mut self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(body)) => self.take(body),
                Ok(None) | Err(_) => return done(self),
            }
        }
        true
    }

    /// Reads whatever arrives within `period`.
    pub async fn drain(&mut self, period: Duration) {
        self.until(period, |_| false).await;
    }

    /// The first message with this `request_id`, waiting up to `timeout`.
    pub async fn reply(&mut self, request_id: &str, timeout: Duration) -> Option<Value> {
        self.until(timeout, |this| this.seen.contains_key(request_id))
            .await;
        self.seen.get(request_id).map(|(_, value)| value.clone())
    }

    /// How many of `ids` have a reply, and how many replies beyond the first.
    pub fn tally(&self, ids: &[String]) -> (usize, usize) {
        ids.iter()
            .filter_map(|id| self.seen.get(id))
            .fold((0, 0), |(answered, duplicates), (count, _)| {
                (answered + 1, duplicates + count - 1)
            })
    }
}
