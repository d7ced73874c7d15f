//! The ZeroMQ app protocol of Threat Bus: manage requests on a REQ socket
//! (one per call, as the reference apps do), messages in on a SUB socket,
//! sightings out on a PUB socket. Every message is one frame.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use super::guard::{Guard, MAX_MESSAGE_BYTES, OnOversized};

/// How long a manage call or a connection may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("Threat Bus did not answer within {0:?}")]
    Timeout(Duration),
    #[error("ZeroMQ: {0}")]
    Zmq(#[from] zeromq::ZmqError),
    #[error("Threat Bus answered {0}")]
    Refused(String),
    #[error("Threat Bus sent an unreadable answer: {0}")]
    Unreadable(String),
    #[error("the manage endpoint {0:?} is not tcp://<host>:<port>")]
    Endpoint(String),
    #[error("cannot guard the connection: {0}")]
    Guard(#[from] std::io::Error),
}

/// Where Threat Bus's manage socket is, e.g. `tcp://127.0.0.1:13370`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManageEndpoint {
    url: String,
    host: String,
}

impl ManageEndpoint {
    pub fn parse(text: &str) -> Result<Self, BusError> {
        let invalid = || BusError::Endpoint(text.to_owned());
        let address = text.trim().strip_prefix("tcp://").ok_or_else(invalid)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid());
        }
        Ok(Self {
            url: format!("tcp://{address}"),
            host: host.to_owned(),
        })
    }

    fn on_port(&self, port: u16) -> String {
        format!("tcp://{}:{port}", self.host)
    }

    /// `host:port` of the manage endpoint.
    fn address(&self) -> &str {
        self.url.trim_start_matches("tcp://")
    }
}

impl std::fmt::Display for ManageEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

#[derive(Debug, Deserialize)]
struct SubscribeReply {
    topic: String,
    pub_port: u16,
    sub_port: u16,
    status: String,
}

/// One request and its reply on a fresh REQ socket (as the reference apps
/// do), through a size guard, within [`CALL_TIMEOUT`].
async fn manage(
    endpoint: &ManageEndpoint,
    request: &Value,
    oversized: &OnOversized,
) -> Result<Value, BusError> {
    let call = async {
        let guard = Guard::start(
            endpoint.address().to_owned(),
            MAX_MESSAGE_BYTES,
            oversized.clone(),
        )
        .await?;
        let mut socket = zeromq::ReqSocket::new();
        socket.connect(&guard.local).await?;
        socket.send(ZmqMessage::from(request.to_string())).await?;
        let reply = socket.recv().await?;
        let frame = reply.get(0).cloned().unwrap_or_default();
        serde_json::from_slice::<Value>(&frame)
            .map_err(|error| BusError::Unreadable(error.to_string()))
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| BusError::Timeout(CALL_TIMEOUT))?
}

fn succeeded(reply: &Value) -> Result<(), BusError> {
    match reply.get("status").and_then(Value::as_str) {
        Some("success") => Ok(()),
        _ => Err(BusError::Refused(reply.to_string())),
    }
}

/// A live subscription: the point-to-point topic Threat Bus gave, and the
/// sockets that carry it.
pub struct Subscription {
    endpoint: ManageEndpoint,
    pub topic: String,
    publisher: zeromq::PubSocket,
    oversized: OnOversized,
}

/// The receiving side of a [`Subscription`], to be read on its own task,
/// through a size guard (kept as long as the socket).
pub struct Inbox {
    sub: zeromq::SubSocket,
    _guard: Guard,
}

impl Inbox {
    /// The next message's first frame (every Threat Bus message is one frame).
    pub async fn recv(&mut self) -> Result<Vec<u8>, BusError> {
        let message = self.sub.recv().await?;
        Ok(message
            .get(0)
            .map(|frame| frame.to_vec())
            .unwrap_or_default())
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("endpoint", &self.endpoint)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Subscribes to `topics` in one request (a list when there are several,
    /// as Threat Bus accepts since its PR #120; the plain string of older
    /// releases for one), with a snapshot of `snapshot_days`, then
    /// connects the SUB socket to the p2p topic and the PUB socket. Waits a
    /// moment after connecting the PUB socket: Threat Bus's subscription must
    /// reach it before a message sent is forwarded.
    pub async fn open(
        endpoint: &ManageEndpoint,
        topics: &[String],
        snapshot_days: u32,
        oversized: OnOversized,
    ) -> Result<(Self, Inbox), BusError> {
        let topic = match topics {
            [one] => json!(one),
            several => json!(several),
        };
        let reply = manage(
            endpoint,
            &json!({"action": "subscribe", "topic": topic, "snapshot": snapshot_days}),
            &oversized,
        )
        .await?;
        succeeded(&reply)?;
        let reply: SubscribeReply = serde_json::from_value(reply)
            .map_err(|error| BusError::Unreadable(error.to_string()))?;
        if reply.status != "success" || reply.topic.is_empty() {
            return Err(BusError::Refused(format!("status {}", reply.status)));
        }
        let guard = Guard::start(
            endpoint
                .on_port(reply.pub_port)
                .trim_start_matches("tcp://")
                .to_owned(),
            MAX_MESSAGE_BYTES,
            oversized.clone(),
        )
        .await?;
        let connect = async {
            let mut sub = zeromq::SubSocket::new();
            sub.connect(&guard.local).await?;
            sub.subscribe(&reply.topic).await?;
            let mut publisher = zeromq::PubSocket::new();
            publisher.connect(&endpoint.on_port(reply.sub_port)).await?;
            Ok::<_, BusError>((sub, publisher))
        };
        let (sub, publisher) = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| BusError::Timeout(CALL_TIMEOUT))??;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let subscription = Self {
            endpoint: endpoint.clone(),
            topic: reply.topic,
            publisher,
            oversized,
        };
        Ok((subscription, Inbox { sub, _guard: guard }))
    }

    /// Publishes one frame.
    pub async fn publish(&mut self, frame: String) -> Result<(), BusError> {
        self.publisher.send(ZmqMessage::from(frame)).await?;
        Ok(())
    }

    /// Tells Threat Bus this app is alive; an error means Threat Bus no longer
    /// knows the topic (it restarted) or cannot be reached.
    pub async fn heartbeat(&self) -> Result<(), BusError> {
        let reply = manage(
            &self.endpoint,
            &json!({"action": "heartbeat", "topic": self.topic}),
            &self.oversized,
        )
        .await?;
        succeeded(&reply)
    }

    /// Ends the subscription.
    pub async fn unsubscribe(self) -> Result<(), BusError> {
        let reply = manage(
            &self.endpoint,
            &json!({"action": "unsubscribe", "topic": self.topic}),
            &self.oversized,
        )
        .await?;
        succeeded(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manage_endpoints_are_tcp_host_and_port() {
        let endpoint = ManageEndpoint::parse("tcp://127.0.0.1:13370").unwrap();
        assert_eq!(endpoint.to_string(), "tcp://127.0.0.1:13370");
        assert_eq!(endpoint.on_port(13371), "tcp://127.0.0.1:13371");
        let named = ManageEndpoint::parse(" tcp://threatbus.internal:13370 ").unwrap();
        assert_eq!(named.on_port(1), "tcp://threatbus.internal:1");
        for bad in [
            "",
            "127.0.0.1:13370",
            "ipc:///tmp/bus",
            "tcp://127.0.0.1",
            "tcp://:13370",
            "tcp://host:port",
        ] {
            assert!(ManageEndpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
