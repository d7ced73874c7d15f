//! The relay's side of RabbitMQ: one connection (through the guard) and one
//! channel (publisher confirms on), the Backbone's topology declared
//! idempotently, and publishing that waits for the broker's confirmation.

use lapin::options::{
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};

/// The topic exchange the Backbone's bus publishes outbox messages through.
pub const PUBLISH_EXCHANGE: &str = "soar-publish";
/// The fanout exchange of notify messages.
pub const BROADCAST_EXCHANGE: &str = "broadcast";

/// Where the relay is on the Backbone: its client id and what it listens to.
#[derive(Debug, Clone)]
pub struct Topology {
    pub client_id: String,
    /// Topic patterns its inbox is bound to on [`PUBLISH_EXCHANGE`].
    pub subscribe: Vec<String>,
}

impl Topology {
    /// A client id and its topic patterns, checked: AMQP names are at most
    /// 255 bytes, and the queue names add a suffix. The error names what is
    /// wrong, for the setting's message.
    pub fn new(client_id: &str, subscribe: &[String]) -> Result<Topology, String> {
        let client_id = client_id.trim();
        if client_id.is_empty()
            || client_id.len() > 240
            || !client_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(format!(
                "{client_id:?} is not a client id (1-240 of letters, digits, '-', '_', '.', ':')"
            ));
        }
        let subscribe: Vec<String> = subscribe
            .iter()
            .map(|pattern| pattern.trim().to_owned())
            .filter(|pattern| !pattern.is_empty())
            .collect();
        if subscribe.is_empty() {
            return Err("expected at least one topic pattern".to_owned());
        }
        for pattern in &subscribe {
            check_topic(pattern)?;
        }
        Ok(Topology {
            client_id: client_id.to_owned(),
            subscribe,
        })
    }

    pub fn inbox(&self) -> String {
        format!("{}-inbox", self.client_id)
    }

    pub fn outbox(&self) -> String {
        format!("{}-outbox", self.client_id)
    }

    pub fn notify(&self) -> String {
        format!("{}-notify", self.client_id)
    }
}

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Refused,
    #[error("the broker ended the consumer (the inbox was deleted, or the consumer cancelled)")]
    ConsumerEnded,
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
}

/// An open connection and its channel.
pub struct Broker {
    pub connection: Connection,
    pub channel: Channel,
}

impl Broker {
    /// Connects to `uri` (the guard, see [`super::guard`]), opens a channel
    /// with publisher confirms and `prefetch` deliveries at most.
    pub async fn connect(
        uri: AMQPUri,
        prefetch: u16,
        connection_name: &str,
    ) -> Result<Broker, BrokerError> {
        let properties =
            lapin::ConnectionProperties::default().with_connection_name(connection_name.into());
        let connection = lapin::DefaultConnectionBuilder::new()?
            .with_uri(uri)
            .with_properties(properties)
            .connect()
            .await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        Ok(Broker {
            connection,
            channel,
        })
    }

    /// Declares the queues, exchanges and bindings (again after every
    /// reconnect): queues durable, not exclusive, not auto-delete, without
    /// arguments, so the Backbone's own and other relays' are reused.
    pub async fn declare(&self, topology: &Topology) -> Result<(), BrokerError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        for queue in [topology.inbox(), topology.outbox(), topology.notify()] {
            self.channel
                .queue_declare(queue.into(), durable, FieldTable::default())
                .await?;
        }
        let exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        self.channel
            .exchange_declare(
                PUBLISH_EXCHANGE.into(),
                ExchangeKind::Topic,
                exchange,
                FieldTable::default(),
            )
            .await?;
        self.channel
            .exchange_declare(
                BROADCAST_EXCHANGE.into(),
                ExchangeKind::Fanout,
                exchange,
                FieldTable::default(),
            )
            .await?;
        for pattern in &topology.subscribe {
            self.channel
                .queue_bind(
                    topology.inbox().into(),
                    PUBLISH_EXCHANGE.into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        self.channel
            .queue_bind(
                topology.inbox().into(),
                BROADCAST_EXCHANGE.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Publishes `body` (wire form, topic `topic`) to `queue` through the
    /// default exchange, persistent, and waits until the broker confirms it.
    pub async fn publish(&self, queue: &str, topic: &str, body: &[u8]) -> Result<(), BrokerError> {
        publish(&self.channel, queue, topic, body).await
    }
}

/// [`Broker::publish`], on a channel.
pub async fn publish(
    channel: &Channel,
    queue: &str,
    topic: &str,
    body: &[u8],
) -> Result<(), BrokerError> {
    let mut headers = FieldTable::default();
    headers.insert(
        "topic".into(),
        AMQPValue::LongString(topic.as_bytes().to_vec().into()),
    );
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_headers(headers);
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?
        .await?;
    match confirmation {
        Confirmation::Ack(_) => Ok(()),
        Confirmation::Nack(_) | Confirmation::NotRequested => Err(BrokerError::Refused),
    }
}

/// A topic (or topic pattern), checked: 1 to 255 bytes, no spaces.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 255 || topic.chars().any(char::is_whitespace) {
        return Err(format!(
            "{:?} is not a topic (1-255 bytes, no spaces)",
            topic.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

/// An AMQP URL, checked without echoing it (it holds a password).
pub fn check_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(_) => Ok(url.to_owned()),
        Err(_) => Err("not an amqp:// or amqps:// URL (amqp://user:pass@host:5672/%2f)".to_owned()),
    }
}

/// The broker part of an AMQP URL, for logs: host, port and vhost, never the
/// user or password.
pub fn describe(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!(
            "{}://{}:{}/{}",
            match uri.scheme {
                lapin::uri::AMQPScheme::AMQP => "amqp",
                lapin::uri::AMQPScheme::AMQPS => "amqps",
            },
            uri.authority.host,
            uri.authority.port,
            uri.vhost
        ),
        Err(_) => "(unreadable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_named_after_the_client() {
        let topology = Topology {
            client_id: "ctr-relay".to_owned(),
            subscribe: vec![],
        };
        assert_eq!(topology.inbox(), "ctr-relay-inbox");
        assert_eq!(topology.outbox(), "ctr-relay-outbox");
        assert_eq!(topology.notify(), "ctr-relay-notify");
    }

    #[test]
    fn client_ids_and_topics_are_checked() {
        let patterns = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        let topology = Topology::new(" relay-1 ", &patterns(&["soar.*.x", " ", "a.#"])).unwrap();
        assert_eq!(topology.client_id, "relay-1");
        assert_eq!(topology.subscribe, patterns(&["soar.*.x", "a.#"]));
        assert!(Topology::new("", &patterns(&["a"])).is_err());
        assert!(Topology::new("a b", &patterns(&["a"])).is_err());
        assert!(Topology::new(&"x".repeat(241), &patterns(&["a"])).is_err());
        assert!(Topology::new("ok", &patterns(&[" "])).is_err());
        assert!(Topology::new("ok", &patterns(&[&"t".repeat(256)])).is_err());
        assert!(check_topic("soar.ctr-relay.observe.result").is_ok());
        assert!(check_topic("two words").is_err());
    }

    #[test]
    fn a_url_is_checked_without_being_echoed() {
        assert_eq!(
            check_url(" amqp://u:p@h:5672/%2f ").as_deref(),
            Ok("amqp://u:p@h:5672/%2f")
        );
        let error = check_url("http://u:s3cr3t-pass@h/").unwrap_err();
        assert!(!error.contains("s3cr3t"), "{error}");
    }

    #[test]
    fn a_url_is_described_without_its_credentials() {
        let described = describe("amqps://user:s3cr3t-pass@rabbit.internal:5671/%2f");
        assert_eq!(described, "amqps://rabbit.internal:5671//");
        assert!(!described.contains("s3cr3t"));
        assert_eq!(describe("not a url"), "(unreadable URL)");
    }
}
