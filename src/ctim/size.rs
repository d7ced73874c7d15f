//! How large an entity will be as JSON, known before it is serialized: its
//! text (with the escapes JSON adds) plus a fixed allowance for its keys,
//! punctuation and fixed-size values. An estimate from above, so a budget
//! charged with it is never passed unawares (a test checks it against the
//! real serialization).

use super::{
    Indicator, Judgement, ObservedRelation, Reference, Relationship, Sighting, SightingDataTable,
    TransientId, Verdict,
};
use crate::domain::Observable;

/// An upper estimate of the JSON size, in bytes.
pub trait JsonSize {
    fn json_size(&self) -> usize;
}

/// A JSON string: its quotes, its bytes, and two bytes per escaped quote or
/// backslash, six per other control character.
pub fn text_size(text: &str) -> usize {
    let needs_escape = |byte: &u8| *byte < 0x20 || *byte == b'"' || *byte == b'\\';
    // Most text needs no escape: one pass the compiler vectorizes says so.
    if text
        .as_bytes()
        .iter()
        .filter(|byte| needs_escape(byte))
        .count()
        == 0
    {
        return 2 + text.len();
    }
    let escapes: usize = text
        .bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    2 + text.len() + escapes
}

fn optional(text: &Option<String>) -> usize {
    text.as_deref().map_or(0, text_size)
}

/// Keys, punctuation, timestamps, enums and numbers of each kind of entity:
/// what does not grow with its text (measured, with room to spare).
const SIGHTING_FIXED: usize = 400;
const INDICATOR_FIXED: usize = 300;
const RELATIONSHIP_FIXED: usize = 200;
const JUDGEMENT_FIXED: usize = 420;
const VERDICT_FIXED: usize = 260;
const REFERENCE_FIXED: usize = 100;
const RELATION_FIXED: usize = 120;
/// A separating comma and an array's brackets, per element.
const ELEMENT: usize = 2;

impl JsonSize for Observable {
    fn json_size(&self) -> usize {
        30 + text_size(&self.value)
    }
}

impl JsonSize for TransientId {
    fn json_size(&self) -> usize {
        2 + self.len()
    }
}

impl JsonSize for ObservedRelation {
    fn json_size(&self) -> usize {
        RELATION_FIXED + text_size(self.origin) + self.source.json_size() + self.related.json_size()
    }
}

impl JsonSize for SightingDataTable {
    fn json_size(&self) -> usize {
        let columns: usize = self
            .columns
            .iter()
            .map(|column| 30 + text_size(&column.name) + ELEMENT)
            .sum();
        let rows: usize = self
            .rows
            .iter()
            .flatten()
            .map(|cell| text_size(cell) + ELEMENT)
            .sum();
        40 + columns + rows + ELEMENT * self.rows.len()
    }
}

fn all<T: JsonSize>(items: &[T]) -> usize {
    items.iter().map(|item| item.json_size() + ELEMENT).sum()
}

impl JsonSize for Sighting {
    fn json_size(&self) -> usize {
        SIGHTING_FIXED
            + self.id.json_size()
            + text_size(self.source)
            + optional(&self.source_uri)
            + optional(&self.title)
            + optional(&self.description)
            + optional(&self.short_description)
            + all(&self.observables)
            + all(&self.relations)
            + self.data.as_ref().map_or(0, JsonSize::json_size)
    }
}

impl JsonSize for Indicator {
    fn json_size(&self) -> usize {
        INDICATOR_FIXED
            + self.id.json_size()
            + text_size(self.producer)
            + text_size(&self.title)
            + text_size(&self.short_description)
            + self
                .tags
                .iter()
                .map(|tag| text_size(tag) + ELEMENT)
                .sum::<usize>()
    }
}

impl JsonSize for Relationship {
    fn json_size(&self) -> usize {
        RELATIONSHIP_FIXED
            + self.id.json_size()
            + text_size(self.relationship_type)
            + self.source_ref.json_size()
            + self.target_ref.json_size()
    }
}

impl JsonSize for Judgement {
    fn json_size(&self) -> usize {
        JUDGEMENT_FIXED
            + self.id.json_size()
            + text_size(self.source)
            + optional(&self.source_uri)
            + self.observable.json_size()
            + text_size(&self.reason)
    }
}

impl JsonSize for Verdict {
    fn json_size(&self) -> usize {
        VERDICT_FIXED
            + self.observable.json_size()
            + self.judgement_id.as_ref().map_or(0, JsonSize::json_size)
    }
}

impl JsonSize for Reference {
    fn json_size(&self) -> usize {
        REFERENCE_FIXED
            + text_size(&self.id)
            + text_size(&self.title)
            + text_size(&self.description)
            + text_size(&self.url)
            + self
                .categories
                .iter()
                .map(|category| text_size(category) + ELEMENT)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctim::{
        Confidence, Disposition, ObservedTime, RelationType, SchemaVersion, SequentialIds,
        Severity, Timestamp, Tlp, ValidTime,
    };
    use crate::domain::ObservableType;
    use chrono::{TimeZone, Utc};

    fn serialized<T: serde::Serialize>(value: &T) -> usize {
        serde_json::to_vec(value).unwrap().len()
    }

    /// The estimate is never below the truth, and not far above it.
    fn check<T: serde::Serialize + JsonSize>(value: &T) {
        let (estimate, actual) = (value.json_size(), serialized(value));
        assert!(estimate >= actual, "estimate {estimate} < actual {actual}");
        assert!(
            estimate <= actual * 2 + 500,
            "estimate {estimate} ≫ actual {actual}"
        );
    }

    #[test]
    fn text_sizes_count_quotes_and_escapes() {
        for text in [
            "",
            "plain",
            "a\"b\\c",
            "line\nfeed\ttab",
            "\u{1}\u{1f}",
            "é✓",
        ] {
            assert_eq!(
                text_size(text),
                serde_json::to_string(text).unwrap().len(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn estimates_are_upper_bounds_for_every_entity() {
        let mut ids = SequentialIds::default();
        let time = Timestamp(Utc.with_ymd_and_hms(2020, 4, 12, 0, 0, 0).unwrap());
        let tricky = "quote \" backslash \\ control \u{1} newline \n".repeat(3);
        let observable = Observable::new(ObservableType::Url, tricky.clone());
        let sighting = Sighting {
            id: TransientId::new("sighting", &mut ids),
            schema_version: SchemaVersion,
            source: "CyberScan",
            source_uri: Some(tricky.clone()),
            confidence: Confidence::Unknown,
            count: u32::MAX,
            internal: Some(false),
            title: Some(tricky.clone()),
            description: Some(tricky.clone()),
            short_description: Some(tricky.clone()),
            observables: vec![observable.clone(), observable.clone()],
            observed_time: ObservedTime {
                start_time: time,
                end_time: Some(time),
            },
            relations: vec![
                ObservedRelation {
                    origin: "C1fApp Enrichment Module",
                    relation: RelationType::ResolvedTo,
                    source: observable.clone(),
                    related: observable.clone(),
                };
                3
            ],
            data: Some(SightingDataTable::single_row(vec![
                (tricky.clone(), tricky.clone()),
                ("port".to_owned(), "22".to_owned()),
            ])),
        };
        check(&sighting);
        let indicator = Indicator {
            id: TransientId::new("indicator", &mut ids),
            schema_version: SchemaVersion,
            producer: "C1fApp",
            title: tricky.clone(),
            short_description: tricky.clone(),
            tags: vec![tricky.clone(), "phishing".to_owned()],
            confidence: Confidence::Medium,
            tlp: Tlp::White,
            valid_time: ValidTime {
                start_time: Some(time),
                end_time: Some(time),
            },
        };
        check(&indicator);
        check(&Relationship {
            id: TransientId::new("relationship", &mut ids),
            schema_version: SchemaVersion,
            relationship_type: "member-of",
            source_ref: TransientId::new("sighting", &mut ids),
            target_ref: TransientId::new("indicator", &mut ids),
        });
        let valid_time = ValidTime {
            start_time: Some(time),
            end_time: Some(time),
        };
        check(&Judgement {
            id: TransientId::new("judgement", &mut ids),
            schema_version: SchemaVersion,
            source: "C1fApp",
            source_uri: Some(tricky.clone()),
            observable: observable.clone(),
            disposition: Disposition::Suspicious,
            priority: 85,
            confidence: Confidence::Medium,
            severity: Severity::Critical,
            reason: tricky.clone(),
            valid_time: valid_time.clone(),
        });
        check(&Verdict {
            disposition: Disposition::Malicious,
            observable: observable.clone(),
            judgement_id: Some(TransientId::new("judgement", &mut ids)),
            valid_time,
        });
        check(&Reference {
            id: tricky.clone(),
            title: tricky.clone(),
            description: tricky.clone(),
            url: tricky,
            categories: vec!["CyberScan"],
        });
    }
}
