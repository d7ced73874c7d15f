//! The STIX 2.1 side of Threat Bus mode: messages in, point-indicator
//! patterns, and the sightings sent back.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ctim::Sighting;
use crate::domain::{MAX_VALUE_CHARS, Observable, ObservableType};

/// A message from Threat Bus: one frame, `"<topic> <json>"`.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// An indicator to enrich.
    Indicator(Indicator),
    /// Anything else, and why it is not enriched.
    Skipped(Skip),
}

/// Why a message was not enriched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not `<topic> <json>`, or the JSON is not a STIX object.
    Malformed,
    /// A STIX object other than an indicator (e.g. a snapshot request).
    NotAnIndicator,
    /// `x_threatbus_update: "REMOVE"`: a withdrawal, nothing to look up.
    Removal,
    /// A pattern that is not one `ipv4-addr`, `domain-name` or `url` value.
    UnsupportedPattern,
    /// A value longer than any observable the relay looks up.
    TooLong,
    /// An object this relay published itself.
    OwnObject,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Malformed => "malformed",
            Skip::NotAnIndicator => "not_an_indicator",
            Skip::Removal => "removal",
            Skip::UnsupportedPattern => "unsupported_pattern",
            Skip::TooLong => "too_long",
            Skip::OwnObject => "own_object",
        }
    }
}

/// A STIX 2.1 indicator with a point pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    /// `indicator--<uuid>`.
    pub id: String,
    pub observable: Observable,
}

#[derive(Deserialize)]
struct StixObject {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    pattern: Option<String>,
    pattern_type: Option<String>,
    x_threatbus_update: Option<String>,
}

/// Reads one frame. `is_own` tells whether an object id is one this relay
/// published.
pub fn parse_message(frame: &[u8], is_own: impl Fn(&str) -> bool) -> Message {
    let Some(space) = frame.iter().position(|&byte| byte == b' ') else {
        return Message::Skipped(Skip::Malformed);
    };
    let Ok(object) = serde_json::from_slice::<StixObject>(&frame[space + 1..]) else {
        return Message::Skipped(Skip::Malformed);
    };
    if is_own(&object.id) {
        return Message::Skipped(Skip::OwnObject);
    }
    if object.kind != "indicator" {
        return Message::Skipped(Skip::NotAnIndicator);
    }
    if !is_stix_id(&object.id, "indicator") {
        return Message::Skipped(Skip::Malformed);
    }
    if object
        .x_threatbus_update
        .as_deref()
        .is_some_and(|update| update.eq_ignore_ascii_case("REMOVE"))
    {
        return Message::Skipped(Skip::Removal);
    }
    if object
        .pattern_type
        .as_deref()
        .is_some_and(|kind| kind != "stix")
    {
        return Message::Skipped(Skip::UnsupportedPattern);
    }
    match object.pattern.as_deref().and_then(point_pattern) {
        Some(observable) if observable.value.chars().nth(MAX_VALUE_CHARS).is_some() => {
            Message::Skipped(Skip::TooLong)
        }
        Some(observable) => Message::Indicator(Indicator {
            id: object.id,
            observable,
        }),
        None => Message::Skipped(Skip::UnsupportedPattern),
    }
}

/// `<type>--<uuid>`, as STIX requires of an id.
fn is_stix_id(id: &str, kind: &str) -> bool {
    id.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix("--"))
        .is_some_and(|uuid| Uuid::parse_str(uuid).is_ok())
}

/// The observable of a point pattern: exactly one comparison
/// `[ipv4-addr:value = '…']`, `[domain-name:value = '…']` or
/// `[url:value = '…']`, with STIX string escapes (`\'`, `\\`). Anything else —
/// other object types or properties, other operators, `AND`/`OR`, qualifiers
/// such as `WITHIN` — is `None`.
pub fn point_pattern(pattern: &str) -> Option<Observable> {
    let inner = pattern.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    let (path, rest) = inner.split_once('=')?;
    let kind = match path.trim() {
        "ipv4-addr:value" => ObservableType::Ip,
        "domain-name:value" => ObservableType::Domain,
        "url:value" => ObservableType::Url,
        _ => return None,
    };
    let literal = rest.trim().strip_prefix('\'')?;
    let mut value = String::new();
    let mut chars = literal.chars();
    loop {
        match chars.next()? {
            '\\' => match chars.next()? {
                escaped @ ('\'' | '\\') => value.push(escaped),
                _ => return None,
            },
            '\'' => break,
            other => value.push(other),
        }
    }
    // Nothing may follow the closing quote: `= 'a' OR …` is not a point.
    if !chars.as_str().trim().is_empty() || value.trim().is_empty() {
        return None;
    }
    if kind == ObservableType::Ip && value.parse::<std::net::Ipv4Addr>().is_err() {
        return None;
    }
    Some(Observable { kind, value })
}

/// A STIX 2.1 sighting of `indicator`, as Threat Bus's reference apps send
/// them, carrying the provider's CTIM sighting as its context.
#[derive(Debug, Serialize)]
pub struct StixSighting {
    #[serde(rename = "type")]
    kind: &'static str,
    spec_version: &'static str,
    pub id: String,
    created: String,
    modified: String,
    sighting_of_ref: String,
    last_seen: String,
    count: u64,
    x_threatbus_sighting_context: Value,
    x_threatbus_indicator_value: String,
}

impl StixSighting {
    pub fn new(indicator: &Indicator, sighting: &Sighting, id: Uuid, now: DateTime<Utc>) -> Self {
        let now = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let last_seen = sighting
            .observed_time
            .end_time
            .as_ref()
            .unwrap_or(&sighting.observed_time.start_time)
            .0
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        Self {
            kind: "sighting",
            spec_version: "2.1",
            id: format!("sighting--{id}"),
            created: now.clone(),
            modified: now,
            sighting_of_ref: indicator.id.clone(),
            last_seen,
            count: u64::from(sighting.count).clamp(1, 999_999_999),
            x_threatbus_sighting_context: serde_json::to_value(sighting).unwrap_or(Value::Null),
            x_threatbus_indicator_value: indicator.observable.value.clone(),
        }
    }

    /// The frame to publish: `stix2/sighting {…}`.
    pub fn frame(&self) -> Result<String, serde_json::Error> {
        Ok(format!("stix2/sighting {}", serde_json::to_string(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctim::{
        Confidence, ObservedTime, SchemaVersion, SequentialIds, Timestamp, TransientId,
    };
    use serde_json::json;

    fn observable(kind: ObservableType, value: &str) -> Option<Observable> {
        Some(Observable {
            kind,
            value: value.to_owned(),
        })
    }

    #[test]
    fn point_patterns_of_the_three_types_are_read() {
        assert_eq!(
            point_pattern("[ipv4-addr:value = '192.0.2.10']"),
            observable(ObservableType::Ip, "192.0.2.10")
        );
        assert_eq!(
            point_pattern("  [ domain-name:value='evil.example' ] "),
            observable(ObservableType::Domain, "evil.example")
        );
        assert_eq!(
            point_pattern("[url:value = 'http://evil.example/a?b=c&d=\\'e\\'\\\\']"),
            observable(ObservableType::Url, "http://evil.example/a?b=c&d='e'\\")
        );
    }

    #[test]
    fn anything_but_a_point_pattern_is_refused() {
        for pattern in [
            "",
            "[]",
            "ipv4-addr:value = '192.0.2.10'",
            "[ipv4-addr:value = '192.0.2.10'",
            "[ipv6-addr:value = '2001:db8::1']",
            "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']",
            "[email-addr:value = 'a@evil.example']",
            "[ipv4-addr:value != '192.0.2.10']",
            "[ipv4-addr:value LIKE '192.0.2.%']",
            "[ipv4-addr:value = '192.0.2.0/24']",
            "[ipv4-addr:value = 'not an ip']",
            "[domain-name:value = '']",
            "[domain-name:value = '   ']",
            "[domain-name:value = 'a'] AND [domain-name:value = 'b']",
            "[domain-name:value = 'a' OR domain-name:value = 'b']",
            "[domain-name:value = 'a'] WITHIN 10 SECONDS",
            "[domain-name:value = 'unterminated]",
            "[domain-name:value = 'bad \\escape']",
            "[domain-name:value = \"double quotes\"]",
        ] {
            assert_eq!(point_pattern(pattern), None, "{pattern:?}");
        }
    }

    const INDICATOR_ID: &str = "indicator--a5a8c5b4-4b7e-4f4c-9f5e-6d3f0a9c1b2d";

    fn indicator_frame(extra: Value) -> Vec<u8> {
        let mut object = json!({
            "type": "indicator",
            "spec_version": "2.1",
            "id": INDICATOR_ID,
            "created": "2026-11-23T12:00:00.000Z",
            "modified": "2026-11-23T12:00:00.000Z",
            "pattern": "[domain-name:value = 'evil.example']",
            "pattern_type": "stix",
            "valid_from": "2026-11-23T12:00:00Z"
        });
        if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
            object.extend(extra);
        }
        format!("abcdefghijklmnopqrstuvwxyzabcdefindicator {object}").into_bytes()
    }

    #[test]
    fn an_indicator_message_is_read() {
        assert_eq!(
            parse_message(&indicator_frame(json!({})), |_| false),
            Message::Indicator(Indicator {
                id: INDICATOR_ID.to_owned(),
                observable: Observable {
                    kind: ObservableType::Domain,
                    value: "evil.example".to_owned()
                }
            })
        );
    }

    #[test]
    fn other_messages_are_skipped_with_a_reason() {
        let skipped = |frame: &[u8]| match parse_message(frame, |id| id.starts_with("sighting--")) {
            Message::Skipped(reason) => reason,
            Message::Indicator(indicator) => panic!("read {indicator:?}"),
        };
        assert_eq!(skipped(b"no-space-at-all"), Skip::Malformed);
        assert_eq!(skipped(b"topic {not json"), Skip::Malformed);
        assert_eq!(skipped(b"topic [1, 2]"), Skip::Malformed);
        assert_eq!(
            skipped(&indicator_frame(json!({"id": "indicator--nope"}))),
            Skip::Malformed
        );
        assert_eq!(
            skipped(&indicator_frame(json!({"x_threatbus_update": "REMOVE"}))),
            Skip::Removal
        );
        assert_eq!(
            skipped(&indicator_frame(
                json!({"pattern": "[file:name = 'a.exe']"})
            )),
            Skip::UnsupportedPattern
        );
        assert_eq!(
            skipped(&indicator_frame(json!({"pattern_type": "sigma"}))),
            Skip::UnsupportedPattern
        );
        let long = format!("[url:value = 'https://{}']", "a".repeat(MAX_VALUE_CHARS));
        assert_eq!(
            skipped(&indicator_frame(json!({"pattern": long}))),
            Skip::TooLong
        );
        assert_eq!(
            skipped(
                br#"p2psnapshotrequest {"type": "snapshotrequest", "id": "x", "snapshot_type": 1}"#
            ),
            Skip::NotAnIndicator
        );
        assert_eq!(
            skipped(
                br#"stix2/sighting {"type": "sighting", "id": "sighting--a5a8c5b4-4b7e-4f4c-9f5e-6d3f0a9c1b2d"}"#
            ),
            Skip::OwnObject
        );
    }

    #[test]
    fn a_sighting_carries_the_indicator_and_the_ctim_sighting() {
        let indicator = Indicator {
            id: INDICATOR_ID.to_owned(),
            observable: Observable {
                kind: ObservableType::Ip,
                value: "192.0.2.10".to_owned(),
            },
        };
        let seen = DateTime::parse_from_rfc3339("2020-04-12T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sighting = Sighting {
            id: TransientId::new("sighting", &mut SequentialIds::default()),
            schema_version: SchemaVersion,
            source: "C1fApp",
            source_uri: None,
            confidence: Confidence::High,
            count: 1,
            internal: None,
            title: Some("Phishtank".to_owned()),
            description: None,
            short_description: None,
            observables: vec![indicator.observable.clone()],
            observed_time: ObservedTime {
                start_time: Timestamp(seen),
                end_time: None,
            },
            relations: Vec::new(),
            data: None,
        };
        let now = DateTime::parse_from_rfc3339("2026-11-23T12:34:56.789Z")
            .unwrap()
            .with_timezone(&Utc);
        let stix = StixSighting::new(&indicator, &sighting, Uuid::from_u128(7), now);
        let frame = stix.frame().unwrap();
        let (topic, body) = frame.split_once(' ').unwrap();
        assert_eq!(topic, "stix2/sighting");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body,
            json!({
                "type": "sighting",
                "spec_version": "2.1",
                "id": "sighting--00000000-0000-0000-0000-000000000007",
                "created": "2026-11-23T12:34:56.789Z",
                "modified": "2026-11-23T12:34:56.789Z",
                "sighting_of_ref": INDICATOR_ID,
                "last_seen": "2020-04-12T00:00:00.000Z",
                "count": 1,
                "x_threatbus_sighting_context": serde_json::to_value(&sighting).unwrap(),
                "x_threatbus_indicator_value": "192.0.2.10"
            })
        );
        assert_eq!(body["x_threatbus_sighting_context"]["source"], "C1fApp");
    }
}
