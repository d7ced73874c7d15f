//! The Communications Backbone wire form, both ways: UTF-8 JSON
//! `{"topic": "<topic>", "message": {…}}`. Reading a delivery decides what it
//! is before any lookup: a request, a message that is not a request (other
//! traffic on a subscribed topic), a request that can only get an error reply,
//! or something unreadable that gets a log line.

use std::borrow::Cow;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::ctim::{CtimError, Entities};
use crate::domain::{Observable, parse_observables};
use crate::enrich::RequestError;

/// What a delivery is.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A request to answer.
    Request(Request),
    /// A `message` without `request_id`: someone else's traffic. Acknowledged
    /// and ignored.
    NotARequest,
    /// A request that can only be answered with an error (then rejected).
    Refused {
        request_id: String,
        reply_topic: Option<String>,
        error: CtimError,
    },
    /// Nothing to reply to: logged, counted and rejected. The reason is a
    /// fixed label.
    Unreadable(&'static str),
}

/// A request, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub request_id: String,
    pub observables: Vec<Observable>,
    pub reply_topic: Option<String>,
    /// A token to verify as a Bearer token is; `None`: the relay's own
    /// credentials.
    pub token: Option<String>,
}

/// A delivery as read: the fields of its message that matter, each left as
/// the JSON text it is in the body (borrowed, not parsed yet), every other
/// field skipped unread. Nothing is built as a `serde_json::Value`, whose
/// size would be a multiple of the message's.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    message: Message<'a>,
}

#[derive(Default)]
struct Message<'a> {
    request_id: Option<&'a RawValue>,
    reply_topic: Option<&'a RawValue>,
    observables: Option<&'a RawValue>,
    token: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Message<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessageVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for MessageVisitor<'a> {
            type Value = Message<'a>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'a>, A::Error> {
                let mut message = Message::default();
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match name.as_ref() {
                        "request_id" => &mut message.request_id,
                        "reply_topic" => &mut message.reply_topic,
                        "observables" => &mut message.observables,
                        "token" => &mut message.token,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(message)
            }
        }

        deserializer.deserialize_map(MessageVisitor(std::marker::PhantomData))
    }
}

/// A raw JSON value read as `T`, if it is one.
fn raw<'a, T: Deserialize<'a>>(value: &'a RawValue) -> Option<T> {
    serde_json::from_str(value.get()).ok()
}

/// Only what an oversized delivery is read for: where to send the refusal.
#[derive(Deserialize)]
struct OversizedEnvelope<'a> {
    #[serde(borrow)]
    message: OversizedMessage<'a>,
}

#[derive(Deserialize)]
struct OversizedMessage<'a> {
    #[serde(borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reply_topic: Option<Cow<'a, str>>,
    // Other fields are skipped as they are read (never buffered).
}

/// Reads a delivery's body. `max_bytes` bounds the request (as
/// `MAX_REQUEST_BYTES` bounds an HTTP body); `max_observables` its list.
pub fn read(body: &[u8], max_bytes: usize, max_observables: usize) -> Incoming {
    if body.len() > max_bytes {
        return oversized(body, max_bytes);
    }
    let Ok(Envelope { message }) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return Incoming::Unreadable("malformed");
    };
    let request_id = match message.request_id {
        None => return Incoming::NotARequest,
        Some(value) => match raw::<String>(value) {
            Some(id) => id,
            None => return Incoming::Unreadable("malformed"),
        },
    };
    let reply_topic = message
        .reply_topic
        .and_then(raw::<String>)
        .filter(|topic| !topic.trim().is_empty());
    let refuse = |error: RequestError| Incoming::Refused {
        request_id: request_id.clone(),
        reply_topic: reply_topic.clone(),
        error: error.to_ctim(),
    };
    let observables = match message.observables {
        None => {
            return refuse(RequestError::InvalidPayload(
                "observables: missing field.".to_owned(),
            ));
        }
        Some(value) => match parse_observables(value.get().as_bytes(), max_observables) {
            Ok(observables) => observables,
            Err(detail) => return refuse(RequestError::InvalidPayload(detail)),
        },
    };
    let token = match message.token.map(raw::<Option<String>>) {
        None | Some(Some(None)) => None,
        Some(Some(Some(token))) => Some(token),
        Some(None) => {
            return refuse(RequestError::Auth(crate::auth::AuthError::WrongStructure));
        }
    };
    Incoming::Request(Request {
        request_id,
        observables,
        reply_topic,
        token,
    })
}

/// An oversized delivery is read only for its `request_id` (everything else
/// skipped), so that the refusal can be sent where the answer would have gone.
fn oversized(body: &[u8], max_bytes: usize) -> Incoming {
    match serde_json::from_slice::<OversizedEnvelope<'_>>(body) {
        Ok(OversizedEnvelope {
            message:
                OversizedMessage {
                    request_id: Some(request_id),
                    reply_topic,
                },
        }) => Incoming::Refused {
            request_id: request_id.into_owned(),
            reply_topic: reply_topic
                .filter(|topic| !topic.trim().is_empty())
                .map(Cow::into_owned),
            error: RequestError::PayloadTooLarge { limit: max_bytes }.to_ctim(),
        },
        _ => Incoming::Unreadable("oversized"),
    }
}

/// `{"topic", "message"}`, as sent.
#[derive(Debug, Serialize)]
pub struct Outgoing<'a, M> {
    pub topic: &'a str,
    pub message: M,
}

/// The answer to a request: `data` and `errors` as `POST
/// /observe/observables` would answer, both always present.
#[derive(Debug, Serialize)]
pub struct Reply<'a> {
    pub request_id: &'a str,
    pub data: &'a Entities,
    pub errors: &'a [CtimError],
}

/// `online` / `offline`, on the client's notify queue.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    pub client_id: &'a str,
    pub status: &'static str,
    pub version: &'static str,
}

/// The topic of status messages.
pub const STATUS_TOPIC: &str = "soar.ctr-relay.status";

/// The wire bytes of `message` under `topic`.
pub fn encode<M: Serialize>(topic: &str, message: M) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Outgoing { topic, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctim::ErrorCode;
    use crate::domain::ObservableType;
    use serde_json::Value;
    use serde_json::json;

    fn read_json(value: Value) -> Incoming {
        read(&serde_json::to_vec(&value).unwrap(), 1024 * 1024, 1000)
    }

    fn request(message: Value) -> Value {
        json!({"topic": "soar.noc.ctr-relay.observe", "message": message})
    }

    #[test]
    fn a_request_is_read_with_its_observables_reply_topic_and_token() {
        let incoming = read_json(request(json!({
            "request_id": "r-1",
            "observables": [{"type": "ip", "value": "192.0.2.1"}, {"type": "sha256", "value": "x"}],
            "reply_topic": "soar.noc.results",
            "token": "a.b.c"
        })));
        assert_eq!(
            incoming,
            Incoming::Request(Request {
                request_id: "r-1".to_owned(),
                observables: vec![Observable::new(ObservableType::Ip, "192.0.2.1")],
                reply_topic: Some("soar.noc.results".to_owned()),
                token: Some("a.b.c".to_owned()),
            })
        );
    }

    #[test]
    fn a_message_without_a_request_id_is_not_a_request() {
        assert_eq!(
            read_json(request(json!({"event": "glider surfaced"}))),
            Incoming::NotARequest
        );
    }

    #[test]
    fn unreadable_deliveries_get_no_reply() {
        for body in [
            &b"not json"[..],
            b"\xff\xfe",
            b"[1, 2]",
            br#"{"topic": "t"}"#,
            br#"{"topic": "t", "message": "text"}"#,
            br#"{"topic": "t", "message": {"request_id": 7, "observables": []}}"#,
        ] {
            assert_eq!(
                read(body, 1024, 10),
                Incoming::Unreadable("malformed"),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn bad_observables_get_the_error_http_gives() {
        let Incoming::Refused {
            request_id, error, ..
        } = read_json(request(json!({
            "request_id": "r-2",
            "observables": [{"type": "ip"}]
        })))
        else {
            panic!("refused");
        };
        assert_eq!(request_id, "r-2");
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert_eq!(
            error.message,
            "Invalid JSON payload received. 0.value: missing field."
        );
        let Incoming::Refused { error, .. } =
            read_json(request(json!({"request_id": "r-3", "observables": {}})))
        else {
            panic!("refused");
        };
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        let Incoming::Refused { error, .. } = read_json(request(json!({"request_id": "r-4"})))
        else {
            panic!("refused");
        };
        assert_eq!(
            error.message,
            "Invalid JSON payload received. observables: missing field."
        );
    }

    #[test]
    fn a_token_that_is_not_a_string_is_an_authorization_error() {
        let Incoming::Refused { error, .. } = read_json(request(
            json!({"request_id": "r-5", "observables": [], "token": 5}),
        )) else {
            panic!("refused");
        };
        assert_eq!(error.code, ErrorCode::AuthorizationError);
    }

    #[test]
    fn an_oversized_request_is_refused_to_its_requester_when_it_names_one() {
        let padding = "x".repeat(2048);
        let body = serde_json::to_vec(&request(json!({
            "observables": [{"type": "domain", "value": padding}],
            "request_id": "big-1",
            "reply_topic": "soar.noc.results"
        })))
        .unwrap();
        assert_eq!(
            read(&body, 1024, 10),
            Incoming::Refused {
                request_id: "big-1".to_owned(),
                reply_topic: Some("soar.noc.results".to_owned()),
                error: RequestError::PayloadTooLarge { limit: 1024 }.to_ctim(),
            }
        );
        let anonymous = serde_json::to_vec(&request(json!({"padding": padding}))).unwrap();
        assert_eq!(
            read(&anonymous, 1024, 10),
            Incoming::Unreadable("oversized")
        );
        assert_eq!(
            read(&vec![b'x'; 2048], 1024, 10),
            Incoming::Unreadable("oversized")
        );
    }

    #[test]
    fn replies_and_statuses_are_in_the_wire_form() {
        let errors = [CtimError::new(ErrorCode::Timeout, "late")];
        let bytes = encode(
            "soar.ctr-relay.observe.result",
            Reply {
                request_id: "r-1",
                data: &Entities::default(),
                errors: &errors,
            },
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap(),
            json!({"topic": "soar.ctr-relay.observe.result", "message": {
                "request_id": "r-1", "data": {},
                "errors": [{"type": "fatal", "code": "timeout", "message": "late"}]
            }})
        );
        let status = encode(
            STATUS_TOPIC,
            Status {
                client_id: "ctr-relay",
                status: "online",
                version: "0.1.0",
            },
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&status).unwrap(),
            json!({"topic": "soar.ctr-relay.status", "message": {
                "client_id": "ctr-relay", "status": "online", "version": "0.1.0"
            }})
        );
    }
}
