//! The CTIM entities the relay produces, and the refer-link shape.

use serde::Serialize;

use super::{
    Confidence, Disposition, RelationType, SchemaVersion, Severity, Timestamp, Tlp, TransientId,
};
use crate::domain::Observable;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedTime {
    pub start_time: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
}

/// `valid_time`; `{}` (both absent) means "valid indefinitely".
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ValidTime {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedRelation {
    pub origin: &'static str,
    pub relation: RelationType,
    pub source: Observable,
    pub related: Observable,
}

/// A sighting's `data`: a table of named string columns and rows of strings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SightingDataTable {
    pub columns: Vec<ColumnDefinition>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDefinition {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl SightingDataTable {
    /// One row of string cells under string columns, in the given order.
    pub fn single_row(cells: Vec<(String, String)>) -> Self {
        let (names, row): (Vec<_>, Vec<_>) = cells.into_iter().unzip();
        Self {
            columns: names
                .into_iter()
                .map(|name| ColumnDefinition {
                    name,
                    kind: "string",
                })
                .collect(),
            rows: vec![row],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename = "sighting")]
pub struct Sighting {
    pub id: TransientId,
    pub schema_version: SchemaVersion,
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_uri: Option<String>,
    pub confidence: Confidence,
    pub count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_description: Option<String>,
    pub observables: Vec<Observable>,
    pub observed_time: ObservedTime,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<ObservedRelation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<SightingDataTable>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename = "indicator")]
pub struct Indicator {
    pub id: TransientId,
    pub schema_version: SchemaVersion,
    pub producer: &'static str,
    pub title: String,
    pub short_description: String,
    pub tags: Vec<String>,
    pub confidence: Confidence,
    pub tlp: Tlp,
    pub valid_time: ValidTime,
}

/// The most tags one indicator carries.
pub const MAX_TAGS: usize = 64;

impl Indicator {
    /// Folds `other`, the same indicator seen again (another record of its
    /// feed, another observable found in it), into this one: the tags are the
    /// union of both (in order of first appearance, at most [`MAX_TAGS`]), the
    /// confidence the stronger of the two. The bytes the tags grew by.
    pub fn absorb(&mut self, other: Indicator) -> usize {
        let mut grown = 0;
        for tag in other.tags {
            if self.tags.len() >= MAX_TAGS {
                break;
            }
            if !self.tags.contains(&tag) {
                grown += super::text_size(&tag) + 1;
                self.tags.push(tag);
            }
        }
        if other.confidence.strength() > self.confidence.strength() {
            self.confidence = other.confidence;
        }
        grown
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename = "relationship")]
pub struct Relationship {
    pub id: TransientId,
    pub schema_version: SchemaVersion,
    pub relationship_type: &'static str,
    pub source_ref: TransientId,
    pub target_ref: TransientId,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename = "judgement")]
pub struct Judgement {
    pub id: TransientId,
    pub schema_version: SchemaVersion,
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_uri: Option<String>,
    pub observable: Observable,
    #[serde(flatten)]
    pub disposition: Disposition,
    pub priority: u8,
    pub confidence: Confidence,
    pub severity: Severity,
    pub reason: String,
    pub valid_time: ValidTime,
}

/// Verdicts carry no `schema_version` (CTIM defines them without one).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename = "verdict")]
pub struct Verdict {
    #[serde(flatten)]
    pub disposition: Disposition,
    pub observable: Observable,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement_id: Option<TransientId>,
    pub valid_time: ValidTime,
}

/// A /refer/observables link that pivots to the provider's own page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    pub id: String,
    pub title: String,
    pub description: String,
    pub url: String,
    pub categories: Vec<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctim::SequentialIds;
    use crate::domain::ObservableType;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    #[test]
    fn a_verdict_serializes_with_type_and_flattened_disposition() {
        let start = Utc.with_ymd_and_hms(2020, 4, 12, 0, 0, 0).unwrap();
        let verdict = Verdict {
            disposition: Disposition::Malicious,
            observable: Observable::new(ObservableType::Ip, "192.0.2.1"),
            judgement_id: Some(TransientId::new("judgement", &mut SequentialIds::default())),
            valid_time: ValidTime {
                start_time: Some(Timestamp(start)),
                end_time: Some(Timestamp(start + chrono::Duration::days(30))),
            },
        };
        assert_eq!(
            serde_json::to_value(&verdict).unwrap(),
            json!({
                "type": "verdict",
                "disposition": 2,
                "disposition_name": "Malicious",
                "observable": {"type": "ip", "value": "192.0.2.1"},
                "judgement_id": "transient:judgement-00000000-0000-0000-0000-000000000001",
                "valid_time": {"start_time": "2020-04-12T00:00:00Z", "end_time": "2020-05-12T00:00:00Z"}
            })
        );
    }

    #[test]
    fn a_relationship_carries_type_and_schema_version() {
        let mut ids = SequentialIds::default();
        let relationship = Relationship {
            id: TransientId::new("relationship", &mut ids),
            schema_version: SchemaVersion,
            relationship_type: "member-of",
            source_ref: TransientId::new("sighting", &mut ids),
            target_ref: TransientId::new("indicator", &mut ids),
        };
        let value = serde_json::to_value(&relationship).unwrap();
        assert_eq!(value["type"], "relationship");
        assert_eq!(value["schema_version"], "1.3.28");
        assert_eq!(value["relationship_type"], "member-of");
    }

    #[test]
    fn a_data_table_has_one_string_column_per_cell() {
        let table = SightingDataTable::single_row(vec![
            ("name".to_owned(), "SSH".to_owned()),
            ("port".to_owned(), "22".to_owned()),
        ]);
        assert_eq!(
            serde_json::to_value(&table).unwrap(),
            json!({
                "columns": [{"name": "name", "type": "string"}, {"name": "port", "type": "string"}],
                "rows": [["SSH", "22"]]
            })
        );
    }
}
