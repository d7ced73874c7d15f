//! The observable relations one C1fApp record shows, by the observable's type.

use std::borrow::Cow;

use super::records::Record;
use crate::ctim::{ObservedRelation, RelationType, clip, url_in_domain};
use crate::domain::{Observable, ObservableType};

const RELATION_ORIGIN: &str = "C1fApp Enrichment Module";

/// The most relations one sighting carries.
pub const MAX_RELATIONS: usize = 100;

/// The observable relations a record shows, by the observable's type.
pub fn relations<'a>(observable: &Observable, record: &'a Record<'_>) -> Vec<ObservedRelation> {
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
                let listed = record.domains.first().map(|domain| domain.as_ref()) == Some(value);
                if listed && url_in_domain(address, value) {
                    relations.add(
                        RelationType::Contains,
                        Observable::new(ObservableType::Url, clip(address)),
                        observable.clone(),
                    );
                }
            }
            for ip in non_empty(&record.ip_addresses) {
                relations.add(
                    RelationType::ResolvedTo,
                    observable.clone(),
                    Observable::new(ObservableType::Ip, clip(ip)),
                );
            }
        }
        ObservableType::Ip => {
            for domain in non_empty(&record.domains) {
                if domain != value {
                    relations.add(
                        RelationType::ResolvedTo,
                        Observable::new(ObservableType::Domain, clip(domain)),
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
                        Observable::new(ObservableType::Ip, clip(ip)),
                    );
                }
                for domain in non_empty(&record.domains) {
                    if url_in_domain(value, domain) {
                        relations.add(
                            RelationType::Contains,
                            observable.clone(),
                            Observable::new(ObservableType::Domain, clip(domain)),
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
    /// Adds a relation unless it is there already or [`MAX_RELATIONS`] are.
    fn add(&mut self, relation: RelationType, source: Observable, related: Observable) {
        if self.0.len() >= MAX_RELATIONS {
            return;
        }
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
    use crate::providers::c1fapp::fixtures::{parse, record};
    use serde_json::{Value, json};

    /// The relations of `observable` in the one record `overrides` makes.
    fn related(observable: &Observable, overrides: Value) -> Vec<Value> {
        let records = parse(&[record(overrides)]);
        relations(observable, &records[0])
            .iter()
            .map(|relation| serde_json::to_value(relation).unwrap())
            .collect()
    }

    fn domain() -> Observable {
        Observable::new(ObservableType::Domain, "login.example.net")
    }

    #[test]
    fn a_domain_gets_no_contains_relation_when_the_record_lists_another_domain_first() {
        let relations = related(&domain(), json!({"domain": ["other.example"]}));
        assert_eq!(relations.len(), 1);
        assert_eq!(relations[0]["relation"], "Resolved_To");
    }

    #[test]
    fn a_domain_gets_no_contains_relation_when_the_address_is_not_a_web_address() {
        let relations = related(
            &domain(),
            json!({"address": ["login.example.net"], "ip_address": ["", "192.0.2.10"]}),
        );
        assert_eq!(relations.len(), 1, "only the non-empty ip: {relations:?}");
        assert_eq!(
            relations[0]["related"],
            json!({"type": "ip", "value": "192.0.2.10"})
        );
    }

    #[test]
    fn an_ip_is_resolved_to_by_every_other_listed_domain() {
        let ip = Observable::new(ObservableType::Ip, "192.0.2.10");
        let relations = related(
            &ip,
            json!({"domain": ["a.example", "", "192.0.2.10", "b.example", "a.example"]}),
        );
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
        let relations = related(
            &url,
            json!({
                "domain": ["login.example.net", "unrelated.example"],
                "ip_address": ["192.0.2.10", "192.0.2.11"]
            }),
        );
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
    fn relation_values_are_clipped() {
        let long = format!("{}.example", "a".repeat(100_000));
        let relations = related(&domain(), json!({"ip_address": [long]}));
        let resolved = relations
            .iter()
            .find(|r| r["relation"] == "Resolved_To")
            .unwrap();
        let value = resolved["related"]["value"].as_str().unwrap();
        assert_eq!(value.chars().count(), crate::ctim::MAX_TEXT_CHARS + 1);
    }

    #[test]
    fn a_url_record_without_a_web_address_has_no_relations() {
        let url = Observable::new(ObservableType::Url, "https://login.example.net/");
        assert!(related(&url, json!({"address": ["-"]})).is_empty());
    }

    #[test]
    fn a_url_contains_a_domain_only_when_its_host_is_in_it() {
        let url = |value: &str| Observable::new(ObservableType::Url, value);
        let contains = |relations: Vec<Value>| {
            relations
                .iter()
                .filter(|relation| relation["relation"] == "Contains")
                .map(|relation| relation["related"]["value"].clone())
                .collect::<Vec<_>>()
        };
        let record =
            |address: &str, domains: Value| json!({"address": [address], "domain": domains});
        assert!(
            contains(related(
                &url("https://banana.com/x"),
                record("https://banana.com/x", json!(["a.co"]))
            ))
            .is_empty(),
            "not a substring test"
        );
        assert_eq!(
            contains(related(
                &url("https://login.a.co/x"),
                record("https://login.a.co/x", json!(["a.co", "banana.com"]))
            )),
            vec![json!("a.co")]
        );
        // A domain observable: the record's URL must be in it too.
        let domain = Observable::new(ObservableType::Domain, "a.co");
        assert!(
            related(&domain, record("https://banana.com/x", json!(["a.co"])))
                .iter()
                .all(|relation| relation["relation"] != "Contains")
        );
        assert_eq!(
            related(&domain, record("https://www.a.co/x", json!(["a.co"])))
                .iter()
                .filter(|relation| relation["relation"] == "Contains")
                .count(),
            1
        );
    }
}
