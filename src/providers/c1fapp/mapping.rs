//! C1fApp records → CTIM. Pure: the id source is passed in, nothing reads the clock.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{Days, NaiveDate, NaiveTime};
use uuid::Uuid;

use super::records::Record;
use super::relations::relations;
use crate::ctim::JsonSize;
use crate::ctim::{
    Confidence, Disposition, Entities, IdSource, Indicator, Judgement, MAX_TAGS, ObservedTime,
    Relationship, SchemaVersion, Severity, Sighting, Timestamp, Tlp, TransientId, ValidTime,
    Verdict, clip, web_url,
};
use crate::domain::{EntitiesLimit, Observable};
use crate::providers::scope::{Allowance, Truncated};

const SOURCE: &str = "C1fApp";

/// The namespace of C1fApp's name-based indicator ids:
/// UUIDv5(NAMESPACE_URL, "https://www.c1fapp.com/"). An indicator is a feed,
/// and its id is `transient:indicator-<UUIDv5(this, feed label)>`.
static INDICATOR_NAMESPACE: LazyLock<Uuid> =
    LazyLock::new(|| Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://www.c1fapp.com/"));

const JUDGEMENT_PRIORITY: u8 = 85;
const JUDGEMENT_DAYS: u64 = 30;

fn midnight(date: NaiveDate) -> Timestamp {
    Timestamp(date.and_time(NaiveTime::MIN).and_utc())
}

/// Sightings, indicators, member-of relationships, and one judgement with its
/// verdict, for the newest `limit` records of one observable.
///
/// Each entity is counted against `allowance` before it is kept; when the
/// allowance runs out, mapping stops with [`Truncated`].
pub fn entities(
    observable: &Observable,
    records: &[Record],
    limit: EntitiesLimit,
    allowance: &impl Allowance,
    ids: &mut impl IdSource,
) -> Result<Entities, Truncated> {
    let records = newest(records, limit);
    let mut entities = Entities::default();
    // Where each feed's indicator is in `entities.indicators`.
    let mut indicator_of_feed: HashMap<&str, usize> = HashMap::new();

    for record in records {
        let sighting = sighting(observable, record, ids);
        let indicator = indicator(record);
        let held = indicator_of_feed.get(record.feed_label.as_ref()).copied();
        let relationship = Relationship {
            id: TransientId::new("relationship", ids),
            schema_version: SchemaVersion,
            relationship_type: "member-of",
            source_ref: sighting.id,
            target_ref: indicator.id,
        };
        let size = sighting.json_size()
            + relationship.json_size()
            + held.map_or_else(|| indicator.json_size(), |_| 0);
        if !allowance.allow(size) {
            return Err(Truncated);
        }
        match held {
            // Another record of a feed already held: its tags and confidence
            // join the feed's indicator.
            Some(at) => {
                let grown = entities.indicators.0[at].absorb(indicator);
                if !allowance.allow(grown) {
                    return Err(Truncated);
                }
            }
            None => {
                indicator_of_feed.insert(&record.feed_label, entities.indicators.len());
                entities.indicators.0.push(indicator);
            }
        }
        entities.relationships.0.push(relationship);
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
        let verdict = Verdict {
            disposition: assessment.disposition,
            observable: observable.clone(),
            judgement_id: Some(judgement.id),
            valid_time: assessment.valid_time,
        };
        if !allowance.allow(judgement.json_size() + verdict.json_size()) {
            return Err(Truncated);
        }
        entities.verdicts.0.push(verdict);
        entities.judgements.0.push(judgement);
    }
    Ok(entities)
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
    let tags = tags(best);
    let reason = match tags.is_empty() {
        true => clip(&best.feed_label),
        false => clip(&format!("{}: {}", clip(&best.feed_label), tags.join(", "))),
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
        source_uri: best.source_uri.as_deref().and_then(web_url),
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
        source_uri: record.source_uri.as_deref().and_then(web_url),
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

/// The feed's indicator. Its id is the feed's, the same for every observable,
/// request and relay, so that XDR merges it rather than showing duplicates.
fn indicator(record: &Record) -> Indicator {
    let label = clip(&record.feed_label);
    Indicator {
        id: TransientId::named("indicator", &INDICATOR_NAMESPACE, &record.feed_label),
        schema_version: SchemaVersion,
        producer: SOURCE,
        title: format!("Feed: {label}"),
        short_description: label,
        tags: tags(record),
        confidence: record.confidence,
        tlp: Tlp::White,
        valid_time: ValidTime::default(),
    }
}

/// A record's assessments as tags: the first [`MAX_TAGS`], each clipped.
fn tags(record: &Record) -> Vec<String> {
    record
        .assessment
        .iter()
        .take(MAX_TAGS)
        .map(|tag| clip(tag))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctim::{RandomIds, SequentialIds};
    use crate::domain::ObservableType;
    use crate::providers::c1fapp::fixtures::{parse, record};
    use crate::providers::scope::Unbounded;
    use serde_json::{Value, json};

    fn limit(n: usize) -> EntitiesLimit {
        EntitiesLimit::parse(&n.to_string()).unwrap()
    }

    /// `uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "https://www.c1fapp.com/"), "Phishtank")`
    /// in Python: the documented derivation, computed elsewhere.
    const PHISHTANK_INDICATOR: &str = "transient:indicator-fe530f1d-cba7-544d-ac7c-79f4a656ae05";

    fn domain() -> Observable {
        Observable::new(ObservableType::Domain, "login.example.net")
    }

    fn map(observable: &Observable, records: &[Value]) -> Value {
        let entities = entities(
            observable,
            &parse(records),
            EntitiesLimit::DEFAULT,
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
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
                    "id": PHISHTANK_INDICATOR,
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
                    "id": format!("transient:relationship-{}", id(2)),
                    "schema_version": "1.3.28",
                    "relationship_type": "member-of",
                    "source_ref": format!("transient:sighting-{}", id(1)),
                    "target_ref": PHISHTANK_INDICATOR
                }]},
                "judgements": {"count": 1, "docs": [{
                    "type": "judgement",
                    "id": format!("transient:judgement-{}", id(3)),
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
                    "judgement_id": format!("transient:judgement-{}", id(3)),
                    "valid_time": {
                        "start_time": "2020-04-12T00:00:00Z",
                        "end_time": "2020-05-12T00:00:00Z"
                    }
                }]}
            })
        );
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
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
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
    fn a_feed_has_one_indicator_id_for_every_observable_and_request() {
        let on = |feed: &str| [record(json!({"feed_label": [feed]}))];
        let indicator_id = |observable: &Observable, feed: &str| {
            let found = entities(
                observable,
                &parse(&on(feed)),
                EntitiesLimit::DEFAULT,
                &Unbounded,
                &mut RandomIds,
            )
            .unwrap();
            assert_eq!(
                found.relationships.0[0].target_ref,
                found.indicators.0[0].id
            );
            found.indicators.0[0].id
        };
        let ip = Observable::new(ObservableType::Ip, "192.0.2.10");
        let first = indicator_id(&domain(), "Phishtank");
        assert_eq!(first.to_string(), PHISHTANK_INDICATOR);
        assert_eq!(
            indicator_id(&domain(), "Phishtank"),
            first,
            "another request"
        );
        assert_eq!(indicator_id(&ip, "Phishtank"), first, "another observable");
        assert_ne!(indicator_id(&ip, "OpenPhish"), first, "another feed");
    }

    #[test]
    fn one_indicator_per_feed_and_every_sighting_points_at_its_feed() {
        let records = [
            record(
                json!({"reportime": ["2020-03-01"], "feed_label": ["A"], "assessment": ["phishing"], "confidence": [30]}),
            ),
            record(
                json!({"reportime": ["2020-02-01"], "feed_label": ["B"], "assessment": ["malware"]}),
            ),
            record(json!({
                "reportime": ["2020-01-01"], "feed_label": ["A"],
                "assessment": ["other", "phishing"], "confidence": [90]
            })),
        ];
        let entities = entities(
            &domain(),
            &parse(&records),
            EntitiesLimit::DEFAULT,
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
        assert_eq!(entities.sightings.len(), 3);
        assert_eq!(entities.indicators.len(), 2);
        let indicator_a = &entities.indicators.0[0];
        assert_eq!(
            indicator_a.tags,
            vec!["phishing", "other"],
            "the union of the feed's records' assessments, in order"
        );
        assert_eq!(
            indicator_a.confidence,
            Confidence::High,
            "the strongest of the feed's records"
        );
        let targets: Vec<_> = entities
            .relationships
            .0
            .iter()
            .map(|r| r.target_ref)
            .collect();
        assert_eq!(
            targets,
            vec![indicator_a.id, entities.indicators.0[1].id, indicator_a.id]
        );
        let sources: Vec<_> = entities
            .relationships
            .0
            .iter()
            .map(|r| r.source_ref)
            .collect();
        let sightings: Vec<_> = entities.sightings.0.iter().map(|s| s.id).collect();
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
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
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
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
        assert_eq!(entities.judgements.0[0].reason, "Strong: malware, botnet");
    }

    #[test]
    fn long_upstream_text_is_clipped_and_long_lists_are_cut() {
        let huge = "f".repeat(100_000);
        let tags: Vec<String> = (0..1000).map(|n| format!("tag{n}")).collect();
        let ips: Vec<String> = (0..10_000)
            .map(|n| format!("10.0.{}.{}", n / 256, n % 256))
            .collect();
        let entities = entities(
            &domain(),
            &parse(&[record(json!({
                "feed_label": [huge], "assessment": tags, "ip_address": ips,
                "source": [format!("https://{huge}")]
            }))]),
            EntitiesLimit::DEFAULT,
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
        let limit = crate::ctim::MAX_TEXT_CHARS + 1;
        let indicator = &entities.indicators.0[0];
        assert_eq!(indicator.short_description.chars().count(), limit);
        assert!(indicator.title.chars().count() <= limit + "Feed: ".len());
        assert_eq!(indicator.tags.len(), MAX_TAGS);
        let sighting = &entities.sightings.0[0];
        assert_eq!(
            sighting.source_uri, None,
            "a URL too long is dropped, not cut"
        );
        assert_eq!(
            sighting.relations.len(),
            crate::providers::c1fapp::relations::MAX_RELATIONS
        );
        let judgement = &entities.judgements.0[0];
        assert!(judgement.reason.chars().count() <= 2 * limit + 2);
        assert_eq!(judgement.source_uri, None);
    }

    #[test]
    fn only_http_and_https_urls_become_source_uris() {
        for (source, kept) in [
            (
                "https://feed.example/x?id=1",
                Some("https://feed.example/x?id=1"),
            ),
            (
                "http://www.phishtank.com/phish_detail.php?phish_id=1234",
                Some("http://www.phishtank.com/phish_detail.php?phish_id=1234"),
            ),
            ("javascript:alert(1)", None),
            ("data:text/html,<script>alert(1)</script>", None),
            ("//feed.example/x", None),
            ("feed.example/x", None),
            ("ftp://feed.example/x", None),
        ] {
            let entities = entities(
                &domain(),
                &parse(&[record(json!({"source": [source]}))]),
                EntitiesLimit::DEFAULT,
                &Unbounded,
                &mut SequentialIds::default(),
            )
            .unwrap();
            assert_eq!(
                entities.sightings.0[0].source_uri.as_deref(),
                kept,
                "{source}"
            );
            assert_eq!(
                entities.judgements.0[0].source_uri.as_deref(),
                kept,
                "{source}"
            );
        }
    }

    #[test]
    fn mapping_stops_when_the_allowance_runs_out() {
        struct Bytes(std::cell::Cell<usize>);
        impl Allowance for Bytes {
            fn allow(&self, bytes: usize) -> bool {
                let left = self.0.get();
                self.0.set(left.saturating_sub(bytes));
                bytes <= left
            }
        }
        let records = parse(&[record(json!({})), record(json!({})), record(json!({}))]);
        let everything = entities(
            &domain(),
            &records,
            EntitiesLimit::DEFAULT,
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
        assert_eq!(everything.sightings.len(), 3);
        let one_record = everything.sightings.0[0].json_size() + 2000;
        let tight = Bytes(std::cell::Cell::new(one_record));
        assert_eq!(
            entities(
                &domain(),
                &records,
                EntitiesLimit::DEFAULT,
                &tight,
                &mut SequentialIds::default()
            ),
            Err(Truncated)
        );
    }

    #[test]
    fn no_records_means_no_entities_at_all() {
        let entities = entities(
            &domain(),
            &[],
            EntitiesLimit::DEFAULT,
            &Unbounded,
            &mut SequentialIds::default(),
        )
        .unwrap();
        assert!(entities.is_empty());
        assert!(verdict(&domain(), &[], EntitiesLimit::DEFAULT).is_none());
    }
}
