//! CyberScan answers → CTIM. Pure: the clock and the id source are passed in.
//!
//! Answers are read borrowing from the body: a string is copied only as far
//! as it is kept (clipped), and only the fields used are kept at all, so a
//! 10 MiB answer costs its body and little more.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ctim::JsonSize;
use crate::ctim::{
    Confidence, IdSource, ObservedTime, Reference, SchemaVersion, Sighting, SightingDataTable,
    Timestamp, TransientId, clip, web_url,
};
use crate::domain::{EntitiesLimit, Observable};
use crate::outbound::json_error;
use crate::providers::scope::{Allowance, Truncated};

const SOURCE: &str = "CyberScan";

/// The most columns of a sighting's data table: the first fields of a
/// finding, in the order received.
pub const MAX_COLUMNS: usize = 64;

/// The most findings of one answer that are read; the rest are skipped
/// unread (no request may ask for more: [`EntitiesLimit::MAX`]).
const MAX_FINDINGS: usize = EntitiesLimit::MAX;

/// A non-string field of a finding is shown as compact JSON when its text is
/// at most this long, else as its text, clipped.
const MAX_REFORMATTED: usize = 64 * 1024;

/// Fields read wherever they are in an object, past the first [`MAX_COLUMNS`].
const WANTED: &[&str] = &[
    "name",
    "description",
    "cve",
    "ip",
    "details_page",
    "vulnerabilities",
];

/// One finding of `/vulnerabilities/ip/<ip>`. Text is kept as the upstream
/// sent it (blank text counts as none), clipped; `cells` are its first fields,
/// in the order received, each shown as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Vulnerability {
    pub name: Option<String>,
    pub description: Option<String>,
    pub cve: Option<String>,
    pub cells: Vec<(String, String)>,
}

/// The fields of a JSON object, in order, their values unparsed and borrowed
/// from the body: the first [`MAX_COLUMNS`], and the [`WANTED`] ones.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor<'de>(PhantomData<&'de ()>);

        impl<'de> Visitor<'de> for FieldsVisitor<'de> {
            type Value = Fields<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if fields.len() < MAX_COLUMNS || WANTED.contains(&key.as_ref()) {
                        fields.push((key, map.next_value::<&'de RawValue>()?));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(FieldsVisitor(PhantomData))
    }
}

/// A key, borrowed from the body unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
        Borrowed::deserialize(deserializer).map(|key| Key(key.0))
    }
}

/// The first [`MAX_FINDINGS`] elements of a JSON list, unparsed.
struct Leading<'a>(Vec<&'a RawValue>);

impl<'de> Deserialize<'de> for Leading<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LeadingVisitor<'de>(PhantomData<&'de ()>);

        impl<'de> Visitor<'de> for LeadingVisitor<'de> {
            type Value = Leading<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leading<'de>, A::Error> {
                let mut kept = Vec::new();
                while kept.len() < MAX_FINDINGS {
                    match seq.next_element::<&'de RawValue>()? {
                        Some(element) => kept.push(element),
                        None => return Ok(Leading(kept)),
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Leading(kept))
            }
        }

        deserializer.deserialize_seq(LeadingVisitor(PhantomData))
    }
}

fn object(json: &[u8]) -> Result<Fields<'_>, String> {
    match json.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'{') => {
            serde_json::from_slice(json).map_err(|error| format!("the body {}", json_error(&error)))
        }
        Some(_) => Err("the body is not a JSON object".to_owned()),
        None => Err("the body is empty".to_owned()),
    }
}

fn field<'a>(fields: &Fields<'a>, name: &str) -> Option<&'a RawValue> {
    fields
        .0
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| *value)
}

/// A string value, borrowed unless it holds escapes; `None` for `null`,
/// `Err` for other types.
fn text<'a>(value: &'a RawValue) -> Result<Option<Cow<'a, str>>, ()> {
    match value.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Key<'a>>(value.get())
            .map(|key| Some(key.0))
            .map_err(drop),
        Some(b'n') => Ok(None),
        _ => Err(()),
    }
}

/// A string field that is not blank, as received and clipped; `None` when
/// absent, null or blank, `Err` for other types.
fn optional_text(fields: &Fields<'_>, name: &str) -> Result<Option<String>, String> {
    let Some(value) = field(fields, name) else {
        return Ok(None);
    };
    match text(value) {
        Ok(Some(text)) if text.trim().is_empty() => Ok(None),
        Ok(Some(text)) => Ok(Some(clip(&text))),
        Ok(None) => Ok(None),
        Err(()) => Err(format!("{name} is not a string")),
    }
}

/// The `ip` of a `/domain/<domain>` answer (an address to ask about next,
/// so trimmed); `None` when the domain has none.
pub fn resolved_ip(body: &[u8]) -> Result<Option<String>, String> {
    Ok(optional_text(&object(body)?, "ip")?.map(|ip| ip.trim().to_owned()))
}

/// The `details_page` of an `/ip/<ip>` or `/domain/<domain>` answer.
pub fn details_page(body: &[u8]) -> Result<String, String> {
    optional_text(&object(body)?, "details_page")?
        .ok_or_else(|| "details_page is missing".to_owned())
}

/// The findings of a `/vulnerabilities/ip/<ip>` answer, in the order received.
pub fn vulnerabilities(body: &[u8]) -> Result<Vec<Vulnerability>, String> {
    let top = object(body)?;
    let items = match field(&top, "vulnerabilities") {
        None => return Err("vulnerabilities is missing".to_owned()),
        Some(value) => match value.get().as_bytes().first() {
            Some(b'n') => return Ok(Vec::new()),
            Some(b'[') => {
                serde_json::from_str::<Leading<'_>>(value.get())
                    .map_err(|error| format!("vulnerabilities {}", json_error(&error)))?
                    .0
            }
            _ => return Err("vulnerabilities is not a list".to_owned()),
        },
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            if !item.get().starts_with('{') {
                return Err(format!("vulnerability {index} is not an object"));
            }
            let fields = serde_json::from_str::<Fields<'_>>(item.get())
                .map_err(|error| format!("vulnerability {index} {}", json_error(&error)))?;
            // The name must be there; a blank one is kept out of the title.
            if !field(&fields, "name").is_some_and(|name| matches!(text(name), Ok(Some(_)))) {
                return Err(format!("vulnerability {index} has no name"));
            }
            let read = |name| {
                optional_text(&fields, name)
                    .map_err(|error| format!("vulnerability {index}: {error}"))
            };
            Ok(Vulnerability {
                name: read("name")?,
                description: read("description")?,
                cve: read("cve")?,
                cells: fields
                    .0
                    .iter()
                    .take(MAX_COLUMNS)
                    .map(|(name, value)| (clip(name), cell(value)))
                    .collect(),
            })
        })
        .collect()
}

/// A cell of the sighting's data table: strings as they are, `null` empty,
/// anything else as compact JSON (`22`, `6.8`, `true`); clipped.
fn cell(value: &RawValue) -> String {
    match text(value) {
        Ok(Some(text)) => clip(&text),
        Ok(None) => String::new(),
        Err(()) if value.get().len() <= MAX_REFORMATTED => {
            serde_json::from_str::<Value>(value.get())
                .map(|value| clip(&value.to_string()))
                .unwrap_or_default()
        }
        Err(()) => clip(value.get()),
    }
}

/// One sighting per vulnerability, for the first `limit` of them. Each is
/// counted against `allowance` before it is kept; when the allowance runs
/// out, mapping stops with [`Truncated`].
pub fn sightings(
    observable: &Observable,
    vulnerabilities: Vec<Vulnerability>,
    limit: EntitiesLimit,
    now: DateTime<Utc>,
    allowance: &impl Allowance,
    ids: &mut impl IdSource,
) -> Result<Vec<Sighting>, Truncated> {
    vulnerabilities
        .into_iter()
        .take(limit.get())
        .map(|vulnerability| {
            let short_description = match &vulnerability.cve {
                Some(cve) => format!("Vulnerability {cve} observed at CyberScan"),
                None => "Vulnerability observed at CyberScan".to_owned(),
            };
            let cells = vulnerability.cells;
            Sighting {
                id: TransientId::new("sighting", ids),
                schema_version: SchemaVersion,
                source: SOURCE,
                source_uri: None,
                confidence: Confidence::High,
                count: 1,
                internal: Some(true),
                title: vulnerability.name,
                description: vulnerability.description,
                short_description: Some(short_description),
                observables: vec![observable.clone()],
                observed_time: ObservedTime {
                    start_time: Timestamp(now),
                    end_time: None,
                },
                relations: Vec::new(),
                data: Some(SightingDataTable::single_row(cells)),
            }
        })
        .map(|sighting| match allowance.allow(sighting.json_size()) {
            true => Ok(sighting),
            false => Err(Truncated),
        })
        .collect()
}

/// The pivot to CyberScan's own page for the observable; none when the page
/// is no absolute `http(s)` URL (see [`web_url`]).
pub fn reference(observable: &Observable, details_page: &str) -> Option<Reference> {
    let kind = observable.kind.as_str();
    Some(Reference {
        id: format!("ref-cyberscan-search-{kind}-{}", observable.value),
        title: format!("Details for this {kind}"),
        description: format!("Details for this {kind} in the CyberScan"),
        url: web_url(details_page)?,
        categories: vec![SOURCE],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctim::SequentialIds;
    use crate::domain::ObservableType;
    use crate::providers::scope::Unbounded;
    use chrono::TimeZone;
    use serde_json::json;

    fn bytes(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn finding() -> Value {
        json!({
            "name": "OpenSSH ",
            "family": "General",
            "description": "scp in OpenSSH allows command injection",
            "severity": "Medium",
            "port": 22,
            "protocol": "tcp",
            "cve": "CVE-2020-15778",
            "cvss": 6.8,
            "confidence": 30
        })
    }

    #[test]
    fn a_vulnerability_maps_to_a_sighting_with_a_data_table() {
        let observable = Observable::new(ObservableType::Domain, "j-p.link");
        let now = Utc.with_ymd_and_hms(2022, 7, 12, 9, 38, 46).unwrap();
        let found = vulnerabilities(&bytes(
            json!({"ip": "116.203.177.93", "vulnerabilities": [finding()]}),
        ))
        .unwrap();
        let sightings = sightings(
            &observable,
            found,
            EntitiesLimit::DEFAULT,
            now,
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&sightings).unwrap(),
            json!([{
                "type": "sighting",
                "id": "transient:sighting-00000000-0000-0000-0000-000000000001",
                "schema_version": "1.3.28",
                "source": "CyberScan",
                "confidence": "High",
                "count": 1,
                "internal": true,
                "title": "OpenSSH ",
                "description": "scp in OpenSSH allows command injection",
                "short_description": "Vulnerability CVE-2020-15778 observed at CyberScan",
                "observables": [{"type": "domain", "value": "j-p.link"}],
                "observed_time": {"start_time": "2022-07-12T09:38:46Z"},
                "data": {
                    "columns": [
                        {"name": "name", "type": "string"},
                        {"name": "family", "type": "string"},
                        {"name": "description", "type": "string"},
                        {"name": "severity", "type": "string"},
                        {"name": "port", "type": "string"},
                        {"name": "protocol", "type": "string"},
                        {"name": "cve", "type": "string"},
                        {"name": "cvss", "type": "string"},
                        {"name": "confidence", "type": "string"}
                    ],
                    "rows": [["OpenSSH ", "General", "scp in OpenSSH allows command injection", "Medium", "22", "tcp", "CVE-2020-15778", "6.8", "30"]]
                }
            }])
        );
    }

    #[test]
    fn columns_follow_the_order_received() {
        let found = vulnerabilities(&bytes(
            json!({"vulnerabilities": [{"zeta": 1, "name": "x", "alpha": null}]}),
        ))
        .unwrap();
        let sighting = &sightings(
            &Observable::new(ObservableType::Ip, "192.0.2.1"),
            found,
            EntitiesLimit::DEFAULT,
            Utc::now(),
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap()[0];
        let table = serde_json::to_value(sighting.data.as_ref().unwrap()).unwrap();
        assert_eq!(table["columns"][0]["name"], "zeta");
        assert_eq!(table["columns"][2]["name"], "alpha");
        assert_eq!(table["rows"], json!([["1", "x", ""]]));
    }

    #[test]
    fn a_vulnerability_without_a_cve_says_so_plainly() {
        let found = vulnerabilities(&bytes(
            json!({"vulnerabilities": [{"name": "Untrusted CA", "cve": ""}]}),
        ))
        .unwrap();
        let sighting = &sightings(
            &Observable::new(ObservableType::Ip, "192.0.2.1"),
            found,
            EntitiesLimit::DEFAULT,
            Utc::now(),
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap()[0];
        assert_eq!(
            sighting.short_description.as_deref(),
            Some("Vulnerability observed at CyberScan")
        );
        assert_eq!(sighting.description, None);
    }

    fn one_sighting(body: Value) -> Sighting {
        let found = vulnerabilities(&bytes(body)).unwrap();
        let mut sightings = sightings(
            &Observable::new(ObservableType::Ip, "192.0.2.1"),
            found,
            EntitiesLimit::DEFAULT,
            Utc::now(),
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
        assert_eq!(sightings.len(), 1);
        sightings.remove(0)
    }

    #[test]
    fn upstream_text_is_kept_as_received() {
        let sighting = one_sighting(json!({"vulnerabilities": [{
            "name": " OpenSSH ", "description": "  indented\n", "cve": "CVE-2020-15778 "
        }]}));
        assert_eq!(sighting.title.as_deref(), Some(" OpenSSH "));
        assert_eq!(sighting.description.as_deref(), Some("  indented\n"));
        assert_eq!(
            sighting.short_description.as_deref(),
            Some("Vulnerability CVE-2020-15778  observed at CyberScan")
        );
        let table = serde_json::to_value(sighting.data.unwrap()).unwrap();
        assert_eq!(
            table["rows"][0][0], " OpenSSH ",
            "the title and its row agree"
        );
    }

    #[test]
    fn a_blank_name_leaves_the_title_out_and_keeps_the_finding() {
        let sighting = one_sighting(json!({"vulnerabilities": [{"name": "  ", "cve": "CVE-1"}]}));
        assert_eq!(sighting.title, None);
        assert_eq!(
            sighting.short_description.as_deref(),
            Some("Vulnerability CVE-1 observed at CyberScan")
        );
    }

    #[test]
    fn long_upstream_text_is_clipped_in_every_field() {
        let huge = "x".repeat(100_000);
        let sighting = one_sighting(json!({"vulnerabilities": [{
            "name": huge, "description": huge, "cve": huge, huge.clone(): huge
        }]}));
        let limit = crate::ctim::MAX_TEXT_CHARS + 1;
        assert_eq!(sighting.title.unwrap().chars().count(), limit);
        assert_eq!(sighting.description.unwrap().chars().count(), limit);
        assert!(sighting.short_description.unwrap().chars().count() <= limit + 64);
        let table = serde_json::to_value(sighting.data.unwrap()).unwrap();
        for cell in table["rows"][0].as_array().unwrap() {
            assert_eq!(cell.as_str().unwrap().chars().count(), limit);
        }
        assert_eq!(
            table["columns"][3]["name"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            limit
        );
    }

    #[test]
    fn a_data_table_has_at_most_its_bound_of_columns() {
        let mut finding = serde_json::Map::new();
        finding.insert("name".to_owned(), json!("many"));
        for n in 0..1000 {
            finding.insert(format!("field{n}"), json!(n));
        }
        let sighting = one_sighting(json!({"vulnerabilities": [finding]}));
        let table = serde_json::to_value(sighting.data.unwrap()).unwrap();
        assert_eq!(table["columns"].as_array().unwrap().len(), MAX_COLUMNS);
        assert_eq!(table["rows"][0].as_array().unwrap().len(), MAX_COLUMNS);
    }

    #[test]
    fn the_name_is_read_wherever_it_is_and_the_table_keeps_the_first_columns() {
        let mut finding = serde_json::Map::new();
        for n in 0..100 {
            finding.insert(format!("field{n}"), json!(n));
        }
        finding.insert("name".to_owned(), json!("Late"));
        let found = vulnerabilities(&bytes(json!({"vulnerabilities": [finding]}))).unwrap();
        assert_eq!(found[0].name.as_deref(), Some("Late"));
        assert_eq!(found[0].cells.len(), MAX_COLUMNS);
        assert_eq!(found[0].cells[0], ("field0".to_owned(), "0".to_owned()));
    }

    #[test]
    fn nested_values_are_shown_as_compact_json() {
        let found = vulnerabilities(&bytes(
            json!({"vulnerabilities": [{"name": "x", "ports": [22, 443], "meta": {"a": true}}]}),
        ))
        .unwrap();
        assert_eq!(
            found[0].cells,
            vec![
                ("name".to_owned(), "x".to_owned()),
                ("ports".to_owned(), "[22,443]".to_owned()),
                ("meta".to_owned(), r#"{"a":true}"#.to_owned()),
            ]
        );
    }

    #[test]
    fn only_the_first_limit_vulnerabilities_are_mapped() {
        let items: Vec<Value> = (0..5).map(|i| json!({"name": format!("v{i}")})).collect();
        let found = vulnerabilities(&bytes(json!({"vulnerabilities": items}))).unwrap();
        let sightings = sightings(
            &Observable::new(ObservableType::Ip, "192.0.2.1"),
            found,
            EntitiesLimit::parse("2").unwrap(),
            Utc::now(),
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
        let titles: Vec<_> = sightings.iter().map(|s| s.title.clone().unwrap()).collect();
        assert_eq!(titles, vec!["v0", "v1"]);
    }

    #[test]
    fn malformed_vulnerability_answers_are_refused() {
        for body in [
            json!([]),
            json!({"ip": "192.0.2.1"}),
            json!({"vulnerabilities": {}}),
            json!({"vulnerabilities": ["x"]}),
            json!({"vulnerabilities": [{"family": "General"}]}),
            json!({"vulnerabilities": [{"name": 5}]}),
        ] {
            assert!(vulnerabilities(&bytes(body.clone())).is_err(), "{body}");
        }
        assert!(vulnerabilities(b"<html>").is_err());
        assert_eq!(
            vulnerabilities(&bytes(json!({"vulnerabilities": null}))).unwrap(),
            Vec::new()
        );
    }

    #[test]
    fn a_domain_without_an_ip_resolves_to_nothing() {
        assert_eq!(
            resolved_ip(&bytes(json!({"domain": "x", "ip": "192.0.2.1"})))
                .unwrap()
                .as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(
            resolved_ip(&bytes(json!({"domain": "x", "ip": null}))).unwrap(),
            None
        );
        assert_eq!(
            resolved_ip(&bytes(json!({"domain": "x", "ip": ""}))).unwrap(),
            None
        );
        assert_eq!(resolved_ip(&bytes(json!({"domain": "x"}))).unwrap(), None);
        assert!(resolved_ip(&bytes(json!({"ip": 5}))).is_err());
        assert!(resolved_ip(b"[]").is_err());
    }

    #[test]
    fn a_reference_links_to_the_details_page() {
        let observable = Observable::new(ObservableType::Ip, "116.203.177.93");
        let page = details_page(&bytes(json!({"details_page": "https://www.cyberscan.io/vulnerabilities/j-p.link/116.203.177.93"}))).unwrap();
        assert_eq!(
            serde_json::to_value(reference(&observable, &page).unwrap()).unwrap(),
            json!({
                "id": "ref-cyberscan-search-ip-116.203.177.93",
                "title": "Details for this ip",
                "description": "Details for this ip in the CyberScan",
                "url": "https://www.cyberscan.io/vulnerabilities/j-p.link/116.203.177.93",
                "categories": ["CyberScan"]
            })
        );
        assert!(details_page(&bytes(json!({"ip": "x"}))).is_err());
        for page in [
            "javascript:alert(1)",
            "data:text/html,<b>x</b>",
            "/relative",
            "https://",
        ] {
            assert_eq!(reference(&observable, page), None, "{page}");
        }
        let long = format!("https://www.cyberscan.io/{}", "a".repeat(3000));
        assert_eq!(reference(&observable, &long), None, "dropped, not cut");
    }
}
