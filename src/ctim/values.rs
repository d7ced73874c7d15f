//! The small CTIM value types: enumerations, timestamps, observables.

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::SCHEMA_VERSION;

/// Serializes as [`SCHEMA_VERSION`]; a field of this type is the entity's
/// `schema_version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaVersion;

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(SCHEMA_VERSION)
    }
}

/// An instant, serialized as ISO-8601 UTC to the second with a `Z`
/// (`2020-04-12T00:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = [0u8; 20];
        match self.write_compact(&mut buffer) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.collect_str(self),
        }
    }
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SSZ` into `buffer` without the formatting machinery,
    /// for years 0–9999 (`None` otherwise).
    fn write_compact<'b>(&self, buffer: &'b mut [u8; 20]) -> Option<&'b str> {
        let time = self.0;
        let year = u32::try_from(time.year())
            .ok()
            .filter(|year| *year <= 9999)?;
        let mut put = |at: usize, value: u32, width: usize| {
            let mut value = value;
            for index in (at..at + width).rev() {
                buffer[index] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, year, 4);
        put(5, time.month(), 2);
        put(8, time.day(), 2);
        put(11, time.hour(), 2);
        put(14, time.minute(), 2);
        put(17, time.second(), 2);
        buffer[4] = b'-';
        buffer[7] = b'-';
        buffer[10] = b'T';
        buffer[13] = b':';
        buffer[16] = b':';
        buffer[19] = b'Z';
        std::str::from_utf8(buffer).ok()
    }
}

/// `2020-04-12T00:00:00Z`, written field by field: responses carry many
/// timestamps, and a format-string parse per timestamp showed in profiles.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = self.0;
        let year = time.year();
        if (0..=9999).contains(&year) {
            write!(
                f,
                "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                time.month(),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            )
        } else {
            f.write_str(&time.to_rfc3339_opts(SecondsFormat::Secs, true))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Confidence {
    Info,
    Low,
    Medium,
    High,
    None,
    Unknown,
}

impl Confidence {
    /// How much this confidence says: used to pick the strongest of several.
    pub fn strength(self) -> u8 {
        match self {
            Confidence::High => 5,
            Confidence::Medium => 4,
            Confidence::Low => 3,
            Confidence::Info => 2,
            Confidence::Unknown => 1,
            Confidence::None => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
    None,
    Unknown,
}

impl From<Confidence> for Severity {
    fn from(confidence: Confidence) -> Self {
        match confidence {
            Confidence::Info => Severity::Info,
            Confidence::Low => Severity::Low,
            Confidence::Medium => Severity::Medium,
            Confidence::High => Severity::High,
            Confidence::None => Severity::None,
            Confidence::Unknown => Severity::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tlp {
    Red,
    Amber,
    Green,
    White,
}

/// A CTIM disposition. Serialized (flattened into its entity) as the two
/// fields `disposition` and `disposition_name`, which therefore always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    Clean,
    Malicious,
    Suspicious,
    Common,
    Unknown,
}

impl Disposition {
    pub fn number(self) -> u8 {
        match self {
            Disposition::Clean => 1,
            Disposition::Malicious => 2,
            Disposition::Suspicious => 3,
            Disposition::Common => 4,
            Disposition::Unknown => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Disposition::Clean => "Clean",
            Disposition::Malicious => "Malicious",
            Disposition::Suspicious => "Suspicious",
            Disposition::Common => "Common",
            Disposition::Unknown => "Unknown",
        }
    }
}

impl Serialize for Disposition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("disposition", &self.number())?;
        map.serialize_entry("disposition_name", self.name())?;
        map.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RelationType {
    #[serde(rename = "Resolved_To")]
    ResolvedTo,
    Contains,
    #[serde(rename = "Hosted_By")]
    HostedBy,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn timestamps_are_utc_seconds_with_z() {
        let time = Utc.with_ymd_and_hms(2020, 4, 12, 0, 0, 0).unwrap()
            + chrono::Duration::milliseconds(250);
        assert_eq!(
            serde_json::to_value(Timestamp(time)).unwrap(),
            json!("2020-04-12T00:00:00Z")
        );
    }

    #[test]
    fn timestamps_match_rfc3339_with_seconds() {
        for (y, m, d, h, min, s) in [
            (1970, 1, 1, 0, 0, 0),
            (2026, 12, 31, 23, 59, 59),
            (999, 3, 4, 5, 6, 7),
        ] {
            let time = Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap();
            assert_eq!(
                Timestamp(time).to_string(),
                time.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            assert_eq!(
                serde_json::to_value(Timestamp(time)).unwrap(),
                json!(time.to_rfc3339_opts(SecondsFormat::Secs, true))
            );
        }
    }

    #[test]
    fn disposition_number_and_name_agree() {
        let expected = [
            (Disposition::Clean, 1, "Clean"),
            (Disposition::Malicious, 2, "Malicious"),
            (Disposition::Suspicious, 3, "Suspicious"),
            (Disposition::Common, 4, "Common"),
            (Disposition::Unknown, 5, "Unknown"),
        ];
        for (disposition, number, name) in expected {
            assert_eq!(
                serde_json::to_value(disposition).unwrap(),
                json!({"disposition": number, "disposition_name": name})
            );
        }
    }

    #[test]
    fn relation_names_are_the_ctim_ones() {
        assert_eq!(
            serde_json::to_value(RelationType::ResolvedTo).unwrap(),
            json!("Resolved_To")
        );
        assert_eq!(
            serde_json::to_value(RelationType::Contains).unwrap(),
            json!("Contains")
        );
        assert_eq!(
            serde_json::to_value(RelationType::HostedBy).unwrap(),
            json!("Hosted_By")
        );
    }

    #[test]
    fn severity_follows_confidence() {
        assert_eq!(Severity::from(Confidence::High), Severity::High);
        assert_eq!(Severity::from(Confidence::Unknown), Severity::Unknown);
    }
}
