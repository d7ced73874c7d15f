//! C1fApp records → CTIM. Pure: the id source is passed in, nothing reads the clock.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use chrono::{Days, NaiveDate, NaiveTime};
use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;

use crate::ctim::{
    Confidence, Disposition, Entities, IdSource, Indicator, Judgement, Observable, ObservableType,
    ObservedRelation, ObservedTime, RelationType, Relationship, SchemaVersion, Severity, Sighting,
    Timestamp, Tlp, TransientId, ValidTime, Verdict,
};
use crate::providers::EntitiesLimit;

const SOURCE: &str = "C1fApp";
const RELATION_ORIGIN: &str = "C1fApp Enrichment Module";
const JUDGEMENT_PRIORITY: u8 = 85;
const JUDGEMENT_DAYS: u64 = 30;

/// A JSON string, borrowed from the body unless it holds escapes. (A bare
/// `Cow<str>` inside a `Vec` would always be copied.)
#[derive(Debug, Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The first element of a JSON list, the rest skipped without being kept.
#[derive(Debug)]
struct First<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for FirstVisitor<T> {
            type Value = First<T>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }

        deserializer.deserialize_seq(FirstVisitor(PhantomData))
    }
}

/// A record as C1fApp sends it: every field a list (only the ones the mapping
/// needs are read; a missing one makes the whole answer malformed).
#[derive(Debug, Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow)]
    feed_label: First<Text<'a>>,
    #[serde(borrow)]
    domain: Vec<Text<'a>>,
    #[serde(borrow)]
    address: First<Text<'a>>,
    #[serde(borrow)]
    ip_address: Vec<Text<'a>>,
    confidence: First<Value>,
    #[serde(borrow)]
    reportime: First<Text<'a>>,
    #[serde(borrow)]
    source: First<Text<'a>>,
    #[serde(borrow)]
    assessment: Vec<Text<'a>>,
}

/// One feed listing, with the fields the mapping uses already interpreted;
/// its text borrowed from the answer's body where it can be.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub feed_label: Cow<'a, str>,
    pub domains: Vec<Cow<'a, str>>,
    pub address: Option<Cow<'a, str>>,
    pub ip_addresses: Vec<Cow<'a, str>>,
    pub confidence: Confidence,
    pub reported: NaiveDate,
    /// The longest comma-separated part of `source[0]`.
    pub source_uri: Option<Cow<'a, str>>,
    pub assessment: Vec<Cow<'a, str>>,
}

/// Parses a C1fApp answer into records sorted newest first (stable for equal
/// dates). `Err` carries what was wrong, for the logs.
pub fn parse_records(body: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let raw: Vec<RawRecord<'_>> =
        serde_json::from_slice(body).map_err(|error| format!("not a list of records: {error}"))?;
    let mut records = raw
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            Record::try_from(record).map_err(|error| format!("record {index}: {error}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    records.sort_by_key(|record| std::cmp::Reverse(record.reported));
    Ok(records)
}

impl<'a> TryFrom<RawRecord<'a>> for Record<'a> {
    type Error = String;

    fn try_from(raw: RawRecord<'a>) -> Result<Self, String> {
        fn first<'a>(list: First<Text<'a>>, field: &str) -> Result<Cow<'a, str>, String> {
            list.0
                .map(|text| text.0)
                .ok_or_else(|| format!("{field} is empty"))
        }
        fn all(list: Vec<Text<'_>>) -> Vec<Cow<'_, str>> {
            list.into_iter().map(|text| text.0).collect()
        }
        let reportime = first(raw.reportime, "reportime")?;
        let reported = report_date(&reportime)
            .ok_or_else(|| format!("reportime {reportime:?} is not a date"))?;
        let confidence = raw
            .confidence
            .0
            .as_ref()
            .map(map_confidence)
            .ok_or_else(|| "confidence is empty".to_owned())?;
        Ok(Self {
            feed_label: first(raw.feed_label, "feed_label")?,
            domains: all(raw.domain),
            address: raw.address.0.map(|text| text.0),
            ip_addresses: all(raw.ip_address),
            confidence,
            reported,
            source_uri: longest_part(first(raw.source, "source")?),
            assessment: all(raw.assessment),
        })
    }
}

/// The date at the start of a `reportime` (`2020-04-12`, possibly followed by a
/// time). Parsed by hand: a format-string parse per record showed in profiles.
fn report_date(reportime: &str) -> Option<NaiveDate> {
    let date = reportime.get(..10)?.as_bytes();
    let number = |digits: &[u8]| -> Option<u32> {
        digits.iter().try_fold(0u32, |value, &digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + u32::from(digit - b'0'))
        })
    };
    if date[4] != b'-' || date[7] != b'-' {
        return None;
    }
    let year = i32::try_from(number(&date[..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, number(&date[5..7])?, number(&date[8..10])?)
}

/// 0–25 `Low`, 26–79 `Medium`, 80–100 `High`, anything else `Unknown`. The
/// score may arrive as a number or as a numeric string.
fn map_confidence(value: &Value) -> Confidence {
    let score = match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(text) => text.trim().parse::<i64>().ok(),
        _ => None,
    };
    match score {
        Some(0..=25) => Confidence::Low,
        Some(26..=79) => Confidence::Medium,
        Some(80..=100) => Confidence::High,
        _ => Confidence::Unknown,
    }
}

fn longest_part(source: Cow<'_, str>) -> Option<Cow<'_, str>> {
    fn longest(source: &str) -> Option<&str> {
        source
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            // `max_by_key` keeps the last of equals; reverse to keep the first.
            .rev()
            .max_by_key(|part| part.len())
    }
    match source {
        Cow::Borrowed(text) => longest(text).map(Cow::Borrowed),
        Cow::Owned(text) => longest(&text).map(|part| Cow::Owned(part.to_owned())),
    }
}

fn midnight(date: NaiveDate) -> Timestamp {
    Timestamp(date.and_time(NaiveTime::MIN).and_utc())
}

/// Sightings, indicators, member-of relationships, and one judgement with its
/// verdict, for the newest `limit` records of one observable.
pub fn entities(
    observable: &Observable,
    records: &[Record],
    limit: EntitiesLimit,
    ids: &mut impl IdSource,
) -> Entities {
    let records = newest(records, limit);
    let mut entities = Entities::default();
    let mut indicator_of_feed: HashMap<&str, TransientId> = HashMap::new();

    for record in records {
        let sighting = sighting(observable, record, ids);
        let indicator_id = match indicator_of_feed.get(record.feed_label.as_ref()) {
            Some(id) => id.clone(),
            None => {
                let indicator = indicator(record, ids);
                let id = indicator.id.clone();
                indicator_of_feed.insert(&record.feed_label, id.clone());
                entities.indicators.0.push(indicator);
                id
            }
        };
        entities.relationships.0.push(Relationship {
            id: TransientId::new("relationship", ids),
            schema_version: SchemaVersion,
            relationship_type: "member-of",
            source_ref: sighting.id.clone(),
            target_ref: indicator_id,
        });
        entities.sightings.0.push(sighting);
    }

    if let Some(assessment) = assess(records) {
        let judgement = Judgement {
            id: TransientId::new("judgement", ids),
            schema_version: SchemaVersion,
            source: SOURCE,
            source_uri: assessment.source_uri,
            observable: observable.clone(),
            disposition: assessment.disposition,
            priority: JUDGEMENT_PRIORITY,
            confidence: assessment.confidence,
            severity: Severity::from(assessment.confidence),
            reason: assessment.reason,
            valid_time: assessment.valid_time.clone(),
        };
        entities.verdicts.0.push(Verdict {
            disposition: assessment.disposition,
            observable: observable.clone(),
            judgement_id: Some(judgement.id.clone()),
            valid_time: assessment.valid_time,
        });
        entities.judgements.0.push(judgement);
    }
    entities
}

/// The verdict alone, for /deliberate: it names no judgement, since none is
/// returned next to it.
pub fn verdict(
    observable: &Observable,
    records: &[Record],
    limit: EntitiesLimit,
) -> Option<Verdict> {
    assess(newest(records, limit)).map(|assessment| Verdict {
        disposition: assessment.disposition,
        observable: observable.clone(),
        judgement_id: None,
        valid_time: assessment.valid_time,
    })
}

/// The first `limit` of records sorted newest first.
fn newest<'r, 'a>(records: &'r [Record<'a>], limit: EntitiesLimit) -> &'r [Record<'a>] {
    &records[..records.len().min(limit.get())]
}

/// What a set of listings says about the observable.
struct Assessment {
    disposition: Disposition,
    confidence: Confidence,
    reason: String,
    source_uri: Option<String>,
    valid_time: ValidTime,
}

/// Being listed on a threat feed is the judgement: `Malicious` when the best
/// listing is of `High` confidence, else `Suspicious`; valid for 30 days from the
/// newest report. `records` must be sorted newest first.
fn assess(records: &[Record]) -> Option<Assessment> {
    let newest = records.first()?;
    // The strongest listing explains the disposition; the newest among equals.
    let best = records
        .iter()
        .rev()
        .max_by_key(|record| record.confidence.strength())?;
    let disposition = if best.confidence == Confidence::High {
        Disposition::Malicious
    } else {
        Disposition::Suspicious
    };
    let reason = match best.assessment.is_empty() {
        true => best.feed_label.to_string(),
        false => format!("{}: {}", best.feed_label, best.assessment.join(", ")),
    };
    let start = midnight(newest.reported);
    let end = newest
        .reported
        .checked_add_days(Days::new(JUDGEMENT_DAYS))
        .map(midnight)
        .unwrap_or(start);
    Some(Assessment {
        disposition,
        confidence: best.confidence,
        reason,
        source_uri: best.source_uri.as_deref().map(str::to_owned),
        valid_time: ValidTime {
            start_time: Some(start),
            end_time: Some(end),
        },
    })
}

fn sighting(observable: &Observable, record: &Record, ids: &mut impl IdSource) -> Sighting {
    let seen = midnight(record.reported);
    Sighting {
        id: TransientId::new("sighting", ids),
        schema_version: SchemaVersion,
        source: SOURCE,
        source_uri: record.source_uri.as_deref().map(str::to_owned),
        confidence: record.confidence,
        count: 1,
        internal: None,
        title: None,
        description: Some("Seen on C1fApp feed".to_owned()),
        short_description: None,
        observables: vec![observable.clone()],
        observed_time: ObservedTime {
            start_time: seen,
            end_time: Some(seen),
        },
        relations: relations(observable, record),
        data: None,
    }
}

fn indicator(record: &Record, ids: &mut impl IdSource) -> Indicator {
    Indicator {
        id: TransientId::new("indicator", ids),
        schema_version: SchemaVersion,
        producer: SOURCE,
        title: format!("Feed: {}", record.feed_label),
        short_description: record.feed_label.to_string(),
        tags: record
            .assessment
            .iter()
            .map(|tag| tag.to_string())
            .collect(),
        confidence: record.confidence,
        tlp: Tlp::White,
        valid_time: ValidTime::default(),
    }
}

/// The observable relations a record shows, by the observable's type.
fn relations<'a>(observable: &Observable, record: &'a Record<'_>) -> Vec<ObservedRelation> {
    let mut relations = Relations::default();
    let value = observable.value.as_str();
    let non_empty = |items: &'a [Cow<'_, str>]| {
        items
            .iter()
            .map(|item| item.as_ref())
            .filter(|item| !item.is_empty())
    };
    let web_address = record
        .address
        .as_deref()
        .filter(|address| address.contains("http"));

    match observable.kind {
        ObservableType::Domain => {
            if let Some(address) = web_address {
                if record.domains.first().map(|domain| domain.as_ref()) == Some(value) {
                    relations.add(
                        RelationType::Contains,
                        Observable::new(ObservableType::Url, address),
                        observable.clone(),
                    );
                }
            }
            for ip in non_empty(&record.ip_addresses) {
                relations.add(
                    RelationType::ResolvedTo,
                    observable.clone(),
                    Observable::new(ObservableType::Ip, ip),
                );
            }
        }
        ObservableType::Ip => {
            for domain in non_empty(&record.domains) {
                if domain != value {
                    relations.add(
                        RelationType::ResolvedTo,
                        Observable::new(ObservableType::Domain, domain),
                        observable.clone(),
                    );
                }
            }
        }
        ObservableType::Url => {
            if web_address.is_some() {
                for ip in non_empty(&record.ip_addresses) {
                    relations.add(
                        RelationType::HostedBy,
                        observable.clone(),
                        Observable::new(ObservableType::Ip, ip),
                    );
                }
                for domain in non_empty(&record.domains) {
                    if value.contains(domain) {
                        relations.add(
                            RelationType::Contains,
                            observable.clone(),
                            Observable::new(ObservableType::Domain, domain),
                        );
                    }
                }
            }
        }
    }
    relations.0
}

/// Observed relations without repeats (feeds often list an address twice).
#[derive(Default)]
struct Relations(Vec<ObservedRelation>);

impl Relations {
    fn add(&mut self, relation: RelationType, source: Observable, related: Observable) {
        let relation = ObservedRelation {
            origin: RELATION_ORIGIN,
            relation,
            source,
            related,
        };
        if !self.0.contains(&relation) {
            self.0.push(relation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctim::SequentialIds;
    use serde_json::json;

    fn record(overrides: Value) -> Value {
        let mut record = json!({
            "feed_label": ["Phishtank"],
            "domain": ["login.example.net"],
            "description": ["Example"],
            "derived": "direct",
            "address": ["https://login.example.net/?session=abc"],
            "ip_address": ["192.0.2.10"],
            "asn": ["-"],
            "confidence": [95],
            "country": ["US"],
            "reportime": ["2020-04-12"],
            "source": ["http://www.phishtank.com/phish_detail.php?phish_id=1,http://www.phishtank.com/phish_detail.php?phish_id=1234"],
            "asn_desc": ["-"],
            "assessment": ["phishing"]
        });
        if let (Some(target), Value::Object(changes)) = (record.as_object_mut(), overrides) {
            target.extend(changes);
        }
        record
    }

    fn parse(records: &[Value]) -> Vec<Record<'static>> {
        // Records borrow from their body; a test's body may live forever.
        let body: &'static [u8] =
            Box::leak(serde_json::to_vec(records).unwrap().into_boxed_slice());
        parse_records(body).unwrap()
    }

    fn limit(n: usize) -> EntitiesLimit {
        EntitiesLimit::parse(&n.to_string()).unwrap()
    }

    fn domain() -> Observable {
        Observable::new(ObservableType::Domain, "login.example.net")
    }

    fn map(observable: &Observable, records: &[Value]) -> Value {
        let entities = entities(
            observable,
            &parse(records),
            EntitiesLimit::DEFAULT,
            &mut SequentialIds::default(),
        );
        serde_json::to_value(entities).unwrap()
    }

    #[test]
    fn a_domain_record_maps_to_the_full_set_of_entities() {
        let data = map(&domain(), &[record(json!({}))]);
        let id = |n: u128| format!("{}", uuid::Uuid::from_u128(n));
        assert_eq!(
            data,
            json!({
                "sightings": {"count": 1, "docs": [{
                    "type": "sighting",
                    "id": format!("transient:sighting-{}", id(1)),
                    "schema_version": "1.3.28",
                    "source": "C1fApp",
                    "source_uri": "http://www.phishtank.com/phish_detail.php?phish_id=1234",
                    "confidence": "High",
                    "count": 1,
                    "description": "Seen on C1fApp feed",
                    "observables": [{"type": "domain", "value": "login.example.net"}],
                    "observed_time": {
                        "start_time": "2020-04-12T00:00:00Z",
                        "end_time": "2020-04-12T00:00:00Z"
                    },
                    "relations": [
                        {
                            "origin": "C1fApp Enrichment Module",
                            "relation": "Contains",
                            "source": {"type": "url", "value": "https://login.example.net/?session=abc"},
                            "related": {"type": "domain", "value": "login.example.net"}
                        },
                        {
                            "origin": "C1fApp Enrichment Module",
                            "relation": "Resolved_To",
                            "source": {"type": "domain", "value": "login.example.net"},
                            "related": {"type": "ip", "value": "192.0.2.10"}
                        }
                    ]
                }]},
                "indicators": {"count": 1, "docs": [{
                    "type": "indicator",
                    "id": format!("transient:indicator-{}", id(2)),
                    "schema_version": "1.3.28",
                    "producer": "C1fApp",
                    "title": "Feed: Phishtank",
                    "short_description": "Phishtank",
                    "tags": ["phishing"],
                    "confidence": "High",
                    "tlp": "white",
                    "valid_time": {}
                }]},
                "relationships": {"count": 1, "docs": [{
                    "type": "relationship",
                    "id": format!("transient:relationship-{}", id(3)),
                    "schema_version": "1.3.28",
                    "relationship_type": "member-of",
                    "source_ref": format!("transient:sighting-{}", id(1)),
                    "target_ref": format!("transient:indicator-{}", id(2))
                }]},
                "judgements": {"count": 1, "docs": [{
                    "type": "judgement",
                    "id": format!("transient:judgement-{}", id(4)),
                    "schema_version": "1.3.28",
                    "source": "C1fApp",
                    "source_uri": "http://www.phishtank.com/phish_detail.php?phish_id=1234",
                    "observable": {"type": "domain", "value": "login.example.net"},
                    "disposition": 2,
                    "disposition_name": "Malicious",
                    "priority": 85,
                    "confidence": "High",
                    "severity": "High",
                    "reason": "Phishtank: phishing",
                    "valid_time": {
                        "start_time": "2020-04-12T00:00:00Z",
                        "end_time": "2020-05-12T00:00:00Z"
                    }
                }]},
                "verdicts": {"count": 1, "docs": [{
                    "type": "verdict",
                    "disposition": 2,
                    "disposition_name": "Malicious",
                    "observable": {"type": "domain", "value": "login.example.net"},
                    "judgement_id": format!("transient:judgement-{}", id(4)),
                    "valid_time": {
                        "start_time": "2020-04-12T00:00:00Z",
                        "end_time": "2020-05-12T00:00:00Z"
                    }
                }]}
            })
        );
    }

    #[test]
    fn a_domain_gets_no_contains_relation_when_the_record_lists_another_domain_first() {
        let data = map(&domain(), &[record(json!({"domain": ["other.example"]}))]);
        let relations = &data["sightings"]["docs"][0]["relations"];
        assert_eq!(relations.as_array().unwrap().len(), 1);
        assert_eq!(relations[0]["relation"], "Resolved_To");
    }

    #[test]
    fn a_domain_gets_no_contains_relation_when_the_address_is_not_a_web_address() {
        let data = map(
            &domain(),
            &[record(
                json!({"address": ["login.example.net"], "ip_address": ["", "192.0.2.10"]}),
            )],
        );
        let relations = data["sightings"]["docs"][0]["relations"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(relations.len(), 1, "only the non-empty ip: {relations:?}");
        assert_eq!(
            relations[0]["related"],
            json!({"type": "ip", "value": "192.0.2.10"})
        );
    }

    #[test]
    fn an_ip_is_resolved_to_by_every_other_listed_domain() {
        let ip = Observable::new(ObservableType::Ip, "192.0.2.10");
        let data = map(
            &ip,
            &[record(
                json!({"domain": ["a.example", "", "192.0.2.10", "b.example", "a.example"]}),
            )],
        );
        let relations = data["sightings"]["docs"][0]["relations"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(
            relations,
            vec![
                json!({
                    "origin": "C1fApp Enrichment Module",
                    "relation": "Resolved_To",
                    "source": {"type": "domain", "value": "a.example"},
                    "related": {"type": "ip", "value": "192.0.2.10"}
                }),
                json!({
                    "origin": "C1fApp Enrichment Module",
                    "relation": "Resolved_To",
                    "source": {"type": "domain", "value": "b.example"},
                    "related": {"type": "ip", "value": "192.0.2.10"}
                }),
            ]
        );
    }

    #[test]
    fn a_url_is_hosted_by_its_ips_and_contains_the_domains_inside_it() {
        let url = Observable::new(
            ObservableType::Url,
            "https://login.example.net/?session=abc",
        );
        let data = map(
            &url,
            &[record(json!({
                "domain": ["login.example.net", "unrelated.example"],
                "ip_address": ["192.0.2.10", "192.0.2.11"]
            }))],
        );
        let relations = data["sightings"]["docs"][0]["relations"]
            .as_array()
            .unwrap()
            .clone();
        let summary: Vec<(String, String)> = relations
            .iter()
            .map(|r| {
                (
                    r["relation"].as_str().unwrap().to_owned(),
                    r["related"]["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Hosted_By".to_owned(), "192.0.2.10".to_owned()),
                ("Hosted_By".to_owned(), "192.0.2.11".to_owned()),
                ("Contains".to_owned(), "login.example.net".to_owned()),
            ]
        );
        assert!(relations.iter().all(|r| r["source"]
            == json!({"type": "url", "value": "https://login.example.net/?session=abc"})));
    }

    #[test]
    fn a_url_record_without_a_web_address_has_no_relations() {
        let url = Observable::new(ObservableType::Url, "https://login.example.net/");
        let data = map(&url, &[record(json!({"address": ["-"]}))]);
        assert!(data["sightings"]["docs"][0].get("relations").is_none());
    }

    #[test]
    fn confidence_scores_map_to_the_ctim_scale() {
        let cases = [
            (json!(0), Confidence::Low),
            (json!(25), Confidence::Low),
            (json!(26), Confidence::Medium),
            (json!(79), Confidence::Medium),
            (json!(80), Confidence::High),
            (json!(100), Confidence::High),
            (json!("90"), Confidence::High),
            (json!(101), Confidence::Unknown),
            (json!(-1), Confidence::Unknown),
            (json!("high"), Confidence::Unknown),
            (json!(null), Confidence::Unknown),
        ];
        for (score, expected) in cases {
            assert_eq!(map_confidence(&score), expected, "{score}");
        }
    }

    #[test]
    fn records_are_sorted_newest_first_and_limited() {
        let records = [
            record(json!({"reportime": ["2020-01-01"], "feed_label": ["Old"]})),
            record(json!({"reportime": ["2021-06-30"], "feed_label": ["Newest"]})),
            record(json!({"reportime": ["2020-12-31"], "feed_label": ["Middle"]})),
        ];
        let entities = entities(
            &domain(),
            &parse(&records),
            limit(2),
            &mut SequentialIds::default(),
        );
        let dates: Vec<_> = entities
            .sightings
            .0
            .iter()
            .map(|s| serde_json::to_value(s.observed_time.start_time).unwrap())
            .collect();
        assert_eq!(
            dates,
            vec![json!("2021-06-30T00:00:00Z"), json!("2020-12-31T00:00:00Z")]
        );
        let feeds: Vec<_> = entities
            .indicators
            .0
            .iter()
            .map(|i| i.short_description.as_str())
            .collect();
        assert_eq!(feeds, vec!["Newest", "Middle"]);
        assert_eq!(entities.relationships.len(), 2);
    }

    #[test]
    fn one_indicator_per_feed_and_every_sighting_points_at_its_feed() {
        let records = [
            record(
                json!({"reportime": ["2020-03-01"], "feed_label": ["A"], "assessment": ["phishing"]}),
            ),
            record(
                json!({"reportime": ["2020-02-01"], "feed_label": ["B"], "assessment": ["malware"]}),
            ),
            record(
                json!({"reportime": ["2020-01-01"], "feed_label": ["A"], "assessment": ["other"]}),
            ),
        ];
        let entities = entities(
            &domain(),
            &parse(&records),
            EntitiesLimit::DEFAULT,
            &mut SequentialIds::default(),
        );
        assert_eq!(entities.sightings.len(), 3);
        assert_eq!(entities.indicators.len(), 2);
        let indicator_a = &entities.indicators.0[0];
        assert_eq!(
            indicator_a.tags,
            vec!["phishing"],
            "taken from the feed's first (newest) record"
        );
        let targets: Vec<_> = entities
            .relationships
            .0
            .iter()
            .map(|r| r.target_ref.clone())
            .collect();
        assert_eq!(
            targets,
            vec![
                indicator_a.id.clone(),
                entities.indicators.0[1].id.clone(),
                indicator_a.id.clone()
            ]
        );
        let sources: Vec<_> = entities
            .relationships
            .0
            .iter()
            .map(|r| r.source_ref.clone())
            .collect();
        let sightings: Vec<_> = entities.sightings.0.iter().map(|s| s.id.clone()).collect();
        assert_eq!(sources, sightings);
    }

    #[test]
    fn the_judgement_is_suspicious_unless_a_listing_is_of_high_confidence() {
        let records = [
            record(
                json!({"reportime": ["2020-03-01"], "confidence": [50], "feed_label": ["Newer"]}),
            ),
            record(
                json!({"reportime": ["2020-02-01"], "confidence": [10], "feed_label": ["Older"]}),
            ),
        ];
        let entities = entities(
            &domain(),
            &parse(&records),
            EntitiesLimit::DEFAULT,
            &mut SequentialIds::default(),
        );
        let judgement = &entities.judgements.0[0];
        assert_eq!(judgement.disposition, Disposition::Suspicious);
        assert_eq!(judgement.confidence, Confidence::Medium);
        assert_eq!(judgement.severity, Severity::Medium);
        assert_eq!(judgement.reason, "Newer: phishing");
        assert_eq!(entities.verdicts.0[0].disposition, Disposition::Suspicious);
        assert_eq!(
            entities.verdicts.0[0].judgement_id.as_ref(),
            Some(&judgement.id)
        );
    }

    #[test]
    fn the_judgement_rests_on_the_strongest_listing_and_lasts_30_days_from_the_newest() {
        let records = [
            record(
                json!({"reportime": ["2020-03-01"], "confidence": [50], "feed_label": ["Newer"]}),
            ),
            record(
                json!({"reportime": ["2020-02-01"], "confidence": [99], "feed_label": ["Strong"], "assessment": ["malware", "botnet"]}),
            ),
        ];
        let verdict = verdict(&domain(), &parse(&records), EntitiesLimit::DEFAULT).unwrap();
        assert_eq!(verdict.disposition, Disposition::Malicious);
        assert_eq!(verdict.judgement_id, None);
        assert_eq!(
            serde_json::to_value(&verdict.valid_time).unwrap(),
            json!({"start_time": "2020-03-01T00:00:00Z", "end_time": "2020-03-31T00:00:00Z"})
        );
        let entities = entities(
            &domain(),
            &parse(&records),
            EntitiesLimit::DEFAULT,
            &mut SequentialIds::default(),
        );
        assert_eq!(entities.judgements.0[0].reason, "Strong: malware, botnet");
    }

    #[test]
    fn no_records_means_no_entities_at_all() {
        let entities = entities(
            &domain(),
            &[],
            EntitiesLimit::DEFAULT,
            &mut SequentialIds::default(),
        );
        assert!(entities.is_empty());
        assert!(verdict(&domain(), &[], EntitiesLimit::DEFAULT).is_none());
    }

    #[test]
    fn report_dates_are_read_from_the_start_of_reportime() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        assert_eq!(report_date("2020-04-12"), date(2020, 4, 12));
        assert_eq!(report_date("2020-04-12 10:11:12"), date(2020, 4, 12));
        assert_eq!(report_date("2020-04-12T10:11:12Z"), date(2020, 4, 12));
        for bad in [
            "2020-4-12",
            "2020/04/12",
            "2020-13-01",
            "2020-02-30",
            "20-04-12xx",
            "",
            "yesterday",
            "2020-04-1",
        ] {
            assert_eq!(report_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unescaped_text_is_borrowed_from_the_body() {
        let body = serde_json::to_vec(&[record(json!({}))]).unwrap();
        let records = parse_records(&body).unwrap();
        assert!(matches!(records[0].feed_label, Cow::Borrowed(_)));
        assert!(matches!(records[0].domains[0], Cow::Borrowed(_)));
        assert!(matches!(records[0].source_uri, Some(Cow::Borrowed(_))));
        assert_eq!(
            longest_part(Cow::Owned("a,bbb".to_owned())).as_deref(),
            Some("bbb")
        );
    }

    #[test]
    fn escaped_strings_are_read_too() {
        let body =
            serde_json::to_vec(&[record(json!({"feed_label": ["Feed \"quoted\" é"]}))]).unwrap();
        assert_eq!(
            parse_records(&body).unwrap()[0].feed_label,
            "Feed \"quoted\" é"
        );
    }

    #[test]
    fn source_uri_is_the_longest_comma_separated_part() {
        assert_eq!(longest_part("a,bbb,cc".into()).as_deref(), Some("bbb"));
        assert_eq!(
            longest_part("aa, bb".into()).as_deref(),
            Some("aa"),
            "the first of equals"
        );
        assert_eq!(longest_part("".into()), None);
    }

    #[test]
    fn a_record_missing_a_needed_field_is_malformed() {
        for field in [
            "feed_label",
            "domain",
            "address",
            "ip_address",
            "confidence",
            "reportime",
            "source",
            "assessment",
        ] {
            let mut broken = record(json!({}));
            broken.as_object_mut().unwrap().remove(field);
            let error =
                parse_records(serde_json::to_vec(&[broken]).unwrap().as_slice()).unwrap_err();
            assert!(error.contains(field), "{field}: {error}");
        }
    }

    #[test]
    fn empty_lists_and_bad_dates_are_malformed() {
        for overrides in [
            json!({"feed_label": []}),
            json!({"reportime": []}),
            json!({"reportime": ["yesterday"]}),
            json!({"source": []}),
            json!({"confidence": []}),
            json!({"domain": "not a list"}),
        ] {
            let body = serde_json::to_vec(&[record(overrides.clone())]).unwrap();
            assert!(parse_records(&body).is_err(), "{overrides}");
        }
    }

    #[test]
    fn bodies_that_are_not_a_list_of_records_are_malformed() {
        for body in [&b"{}"[..], b"null", b"<html>", b"[1, 2]", b""] {
            assert!(
                parse_records(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse_records(b"[]").unwrap(), Vec::new());
    }
}
