//! C1fApp's answer → [`Record`]s: only the fields the mapping needs, read once,
//! their text borrowed from the body where it can be.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use chrono::NaiveDate;
use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};

use crate::ctim::Confidence;
use crate::outbound::json_error;

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

/// The most elements of one list of a record that are kept (domains, IP
/// addresses, assessments); the rest are skipped unread. An upstream can list
/// a million, and each would become a relation or a tag.
pub const MAX_LIST_ITEMS: usize = 1000;

/// The first [`MAX_LIST_ITEMS`] elements of a JSON list, the rest skipped
/// without being kept.
#[derive(Debug)]
struct Leading<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Leading<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LeadingVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for LeadingVisitor<T> {
            type Value = Leading<T>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leading<T>, A::Error> {
                let mut kept = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while kept.len() < MAX_LIST_ITEMS {
                    match seq.next_element()? {
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

/// A confidence score as sent: a number or a numeric string; anything else
/// (skipped unread, however large) is no score.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(Option<i64>);

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScoreVisitor;

        impl<'de> Visitor<'de> for ScoreVisitor {
            type Value = Score;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a confidence score")
            }

            fn visit_i64<E: serde::de::Error>(self, score: i64) -> Result<Score, E> {
                Ok(Score(Some(score)))
            }

            fn visit_u64<E: serde::de::Error>(self, score: u64) -> Result<Score, E> {
                Ok(Score(i64::try_from(score).ok()))
            }

            fn visit_f64<E: serde::de::Error>(self, score: f64) -> Result<Score, E> {
                Ok(Score(score.is_finite().then_some(score as i64)))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Score, E> {
                Ok(Score(text.trim().parse().ok()))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Score, E> {
                Ok(Score(None))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Score, E> {
                Ok(Score(None))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Score, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Score(None))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Score, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Score(None))
            }
        }

        deserializer.deserialize_any(ScoreVisitor)
    }
}

/// A record as C1fApp sends it: every field a list (only the ones the mapping
/// needs are read; a missing one makes the whole answer malformed).
#[derive(Debug, Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow)]
    feed_label: First<Text<'a>>,
    #[serde(borrow)]
    domain: Leading<Text<'a>>,
    #[serde(borrow)]
    address: First<Text<'a>>,
    #[serde(borrow)]
    ip_address: Leading<Text<'a>>,
    confidence: First<Score>,
    #[serde(borrow)]
    reportime: First<Text<'a>>,
    #[serde(borrow)]
    source: First<Text<'a>>,
    #[serde(borrow)]
    assessment: Leading<Text<'a>>,
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
    let raw: Vec<RawRecord<'_>> = serde_json::from_slice(body)
        .map_err(|error| format!("the answer {}", json_error(&error)))?;
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
        fn all(list: Leading<Text<'_>>) -> Vec<Cow<'_, str>> {
            list.0.into_iter().map(|text| text.0).collect()
        }
        let reportime = first(raw.reportime, "reportime")?;
        let reported =
            report_date(&reportime).ok_or_else(|| "reportime is not a date".to_owned())?;
        let confidence = raw
            .confidence
            .0
            .map(|score| map_confidence(score.0))
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

/// 0–25 `Low`, 26–79 `Medium`, 80–100 `High`, anything else (no score)
/// `Unknown`.
fn map_confidence(score: Option<i64>) -> Confidence {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::c1fapp::fixtures::record;
    use serde_json::json;

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
            (json!(80.5), Confidence::High),
            (json!([90]), Confidence::Unknown),
            (json!({"score": 90}), Confidence::Unknown),
        ];
        for (score, expected) in cases {
            let read: Score = serde_json::from_value(score.clone()).unwrap();
            assert_eq!(map_confidence(read.0), expected, "{score}");
        }
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
    fn only_the_first_items_of_a_long_list_are_kept() {
        let ips: Vec<String> = (0..5000).map(|n| n.to_string()).collect();
        let body = serde_json::to_vec(&[record(json!({"ip_address": ips}))]).unwrap();
        let records = parse_records(&body).unwrap();
        assert_eq!(records[0].ip_addresses.len(), MAX_LIST_ITEMS);
        assert_eq!(
            records[0].ip_addresses[MAX_LIST_ITEMS - 1],
            (MAX_LIST_ITEMS - 1).to_string()
        );
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
