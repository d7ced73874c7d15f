//! A check of any relay answer against CTIM, written against the JSON and
//! CTIM's own vocabularies rather than the relay's types, so that it can catch
//! what the types let through: ids unique per entity type, every reference
//! (`source_ref`, `target_ref`, `judgement_id`) resolving inside the answer,
//! required fields present, closed vocabularies respected, times in RFC 3339,
//! links absolute `http(s)`. Used by the tests, the fuzz targets and
//! `examples/ctim_check.rs` (for the scripts).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::web_url;

const KINDS: [(&str, &str); 5] = [
    ("sightings", "sighting"),
    ("indicators", "indicator"),
    ("relationships", "relationship"),
    ("judgements", "judgement"),
    ("verdicts", "verdict"),
];
const CONFIDENCE: &[&str] = &["Info", "Low", "Medium", "High", "None", "Unknown"];
const SEVERITY: &[&str] = &[
    "Info", "Low", "Medium", "High", "Critical", "None", "Unknown",
];
const TLP: &[&str] = &["clear", "white", "green", "amber", "red"];
const DISPOSITIONS: [&str; 5] = ["Clean", "Malicious", "Suspicious", "Common", "Unknown"];
const RELATIONSHIP_TYPES: &[&str] = &[
    "attributed-to",
    "based-on",
    "derived-from",
    "duplicate-of",
    "element-of",
    "exploits",
    "indicates",
    "member-of",
    "mitigates",
    "related-to",
    "sighting-of",
    "targets",
    "uses",
    "variant-of",
];
const OBSERVABLE_TYPES: &[&str] = &[
    "amp_computer_guid",
    "certificate_common_name",
    "certificate_issuer",
    "certificate_serial",
    "device",
    "domain",
    "email",
    "email_messageid",
    "email_subject",
    "file_name",
    "file_path",
    "hostname",
    "ip",
    "ipv6",
    "mac_address",
    "md5",
    "mutex",
    "process_name",
    "sha1",
    "sha256",
    "url",
    "user",
    "user_agent",
];
const OBSERVED_RELATIONS: &[&str] = &[
    "Connected_To",
    "Contained_Within",
    "Contains",
    "Downloaded_By",
    "Downloaded_From",
    "Downloaded_To",
    "Dropped",
    "Dropped_By",
    "Hosted_By",
    "Hosts",
    "Redirects_To",
    "Related_To",
    "Resolved_To",
    "Sub-domain_Of",
    "Supra-domain_Of",
];

/// What is wrong with `answer` (a whole relay answer: `{"data": …}`,
/// `{"errors": […]}` or both); empty when it is a valid CTIM answer.
pub fn answer_problems(answer: &Value) -> Vec<String> {
    let mut check = Check::default();
    match answer.as_object() {
        None => check.fail("", "the answer is not a JSON object"),
        Some(fields) => {
            for key in fields.keys() {
                if key != "data" && key != "errors" {
                    check.fail(key, "is not a field of an answer");
                }
            }
            if let Some(errors) = fields.get("errors") {
                check.errors(errors);
            }
            match fields.get("data") {
                Some(Value::Array(references)) => check.references(references),
                // /health: `{"status": "ok", "quotas"?: {…}}`.
                Some(Value::Object(data)) if data.contains_key("status") => check.health(data),
                Some(data) => check.bundle(data),
                None if fields.contains_key("errors") => {}
                None => check.fail("", "neither data nor errors"),
            }
        }
    }
    check.problems
}

/// What is wrong with `data`, the `data` object of an /observe or
/// /deliberate answer; empty when it is a valid CTIM bundle.
pub fn bundle_problems(data: &Value) -> Vec<String> {
    let mut check = Check::default();
    check.bundle(data);
    check.problems
}

/// What is wrong with one CTIM sighting standing alone (as Threat Bus
/// sightings carry it in `x_threatbus_sighting_context`).
pub fn sighting_problems(sighting: &Value) -> Vec<String> {
    bundle_problems(&serde_json::json!({"sightings": {"count": 1, "docs": [sighting]}}))
}

#[derive(Default)]
struct Check {
    problems: Vec<String>,
}

impl Check {
    fn fail(&mut self, at: &str, what: &str) {
        self.problems.push(format!("{at}: {what}"));
    }

    fn errors(&mut self, errors: &Value) {
        let Some(errors) = errors.as_array().filter(|errors| !errors.is_empty()) else {
            return self.fail("errors", "not a non-empty array");
        };
        for (n, error) in errors.iter().enumerate() {
            let at = format!("errors[{n}]");
            self.word(&at, error, "type", &["fatal", "warning"], true);
            for field in ["code", "message"] {
                self.text(&at, error, field, true);
            }
        }
    }

    /// XDR's `ModuleHealthStatus`: a status, and quotas of a closed shape.
    fn health(&mut self, data: &Map<String, Value>) {
        if !data["status"].is_string() || data.keys().any(|key| key != "status" && key != "quotas")
        {
            self.fail("data", "a health answer holds a status and quotas alone");
        }
        for (name, quota) in data
            .get("quotas")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let at = format!("data.quotas.{name}");
            self.text(&at, quota, "description", true);
            let values = &quota["values"];
            let fields = [
                "bucket_unit",
                "bucket_limit",
                "current_bucket_consumption",
                "current_bucket_start_time",
                "current_bucket_end_time",
                "current_bucket_limit_reached",
                "current_bucket_limit_reached_at",
            ];
            if quota.as_object().is_none_or(|quota| quota.len() != 2)
                || values
                    .as_object()
                    .is_none_or(|values| values.keys().any(|key| !fields.contains(&key.as_str())))
            {
                self.fail(&at, "not {description, values} of the known fields");
            }
            self.word(
                &at,
                values,
                "bucket_unit",
                &["minute", "hour", "day", "week", "month"],
                true,
            );
            if values["bucket_limit"].as_u64().is_none()
                || values["current_bucket_consumption"].as_u64().is_none()
                || !values["current_bucket_limit_reached"].is_boolean()
            {
                self.fail(&at, "limit, consumption or reached of the wrong type");
            }
            if let Some(values) = values.as_object() {
                let mut times = Map::new();
                times.insert(
                    "start_time".into(),
                    values
                        .get("current_bucket_start_time")
                        .cloned()
                        .unwrap_or_default(),
                );
                times.insert(
                    "end_time".into(),
                    values
                        .get("current_bucket_end_time")
                        .cloned()
                        .unwrap_or_default(),
                );
                self.interval(&at, &times);
            }
        }
    }

    fn references(&mut self, references: &[Value]) {
        let mut ids = HashSet::new();
        for (n, reference) in references.iter().enumerate() {
            let at = format!("data[{n}]");
            for field in ["id", "title", "description"] {
                self.text(&at, reference, field, true);
            }
            if let Some(id) = reference["id"].as_str()
                && !ids.insert(id)
            {
                self.fail(&at, "id repeated");
            }
            self.link(&at, reference, "url", true);
            if !reference["categories"]
                .as_array()
                .is_some_and(|all| all.iter().all(Value::is_string))
            {
                self.fail(&at, "categories is not an array of strings");
            }
        }
    }

    fn bundle(&mut self, data: &Value) {
        let Some(data) = data.as_object() else {
            return self.fail("data", "not an object");
        };
        // Every id of the answer, by entity type, to resolve references.
        let mut ids: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (key, docs) in data {
            let Some((_, kind)) = KINDS.iter().find(|(plural, _)| plural == key) else {
                self.fail(key, "is not an entity list of CTIM");
                continue;
            };
            let Some(list) = docs["docs"].as_array() else {
                self.fail(key, "has no docs array");
                continue;
            };
            if docs["count"].as_u64() != Some(list.len() as u64) {
                self.fail(key, "count is not the number of docs");
            }
            for (n, doc) in list.iter().enumerate() {
                let at = format!("{key}[{n}]");
                self.entity(&at, kind, doc);
                if let Some(id) = doc["id"].as_str()
                    && !ids.entry(kind).or_default().insert(id)
                {
                    self.fail(&at, &format!("{kind} id {id} repeated"));
                }
            }
        }
        let resolves = |id: &str| ids.values().any(|set| set.contains(id));
        let mut unresolved = Vec::new();
        for (n, doc) in docs(data, "relationships").enumerate() {
            for field in ["source_ref", "target_ref"] {
                if let Some(id) = doc[field].as_str()
                    && !resolves(id)
                {
                    unresolved.push(format!(
                        "relationships[{n}]: {field} {id} is not in the answer"
                    ));
                }
            }
        }
        for (n, doc) in docs(data, "verdicts").enumerate() {
            if let Some(id) = doc["judgement_id"].as_str()
                && !ids.get("judgement").is_some_and(|set| set.contains(id))
            {
                unresolved.push(format!(
                    "verdicts[{n}]: judgement_id {id} is not in the answer"
                ));
            }
        }
        self.problems.extend(unresolved);
    }

    fn entity(&mut self, at: &str, kind: &str, doc: &Value) {
        if !doc.is_object() {
            return self.fail(at, "not an object");
        }
        if doc["type"] != kind {
            self.fail(at, &format!("type is not {kind}"));
        }
        if kind != "verdict" {
            self.id(at, kind, doc);
            self.schema_version(at, doc);
        }
        match kind {
            "sighting" => self.sighting(at, doc),
            "indicator" => {
                self.text(at, doc, "producer", true);
                self.valid_time(at, doc, true);
                self.word(at, doc, "confidence", CONFIDENCE, false);
                self.word(at, doc, "tlp", TLP, false);
                self.strings(at, doc, "tags");
            }
            "relationship" => {
                self.word(at, doc, "relationship_type", RELATIONSHIP_TYPES, true);
                self.text(at, doc, "source_ref", true);
                self.text(at, doc, "target_ref", true);
            }
            "judgement" => {
                self.observable(&format!("{at}.observable"), &doc["observable"]);
                self.disposition(at, doc);
                self.text(at, doc, "source", true);
                self.link(at, doc, "source_uri", false);
                if doc["priority"].as_u64().is_none_or(|p| p > 100) {
                    self.fail(at, "priority is not an integer from 0 to 100");
                }
                self.word(at, doc, "confidence", CONFIDENCE, true);
                self.word(at, doc, "severity", SEVERITY, true);
                self.valid_time(at, doc, true);
            }
            _ => {
                self.observable(&format!("{at}.observable"), &doc["observable"]);
                self.disposition(at, doc);
                self.valid_time(at, doc, true);
            }
        }
    }

    fn sighting(&mut self, at: &str, doc: &Value) {
        if doc["count"].as_u64().is_none() {
            self.fail(at, "count is not a non-negative integer");
        }
        self.word(at, doc, "confidence", CONFIDENCE, true);
        self.text(at, doc, "source", false);
        self.link(at, doc, "source_uri", false);
        match doc["observed_time"].as_object() {
            None => self.fail(at, "observed_time missing"),
            Some(time) => {
                if !time.contains_key("start_time") {
                    self.fail(at, "observed_time.start_time missing");
                }
                self.interval(&format!("{at}.observed_time"), time);
            }
        }
        if let Some(observables) = doc.get("observables") {
            match observables.as_array() {
                None => self.fail(at, "observables is not an array"),
                Some(all) => {
                    for (n, observable) in all.iter().enumerate() {
                        self.observable(&format!("{at}.observables[{n}]"), observable);
                    }
                }
            }
        }
        for (n, relation) in doc["relations"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{at}.relations[{n}]");
            self.text(&at, relation, "origin", true);
            self.word(&at, relation, "relation", OBSERVED_RELATIONS, true);
            self.observable(&format!("{at}.source"), &relation["source"]);
            self.observable(&format!("{at}.related"), &relation["related"]);
        }
        if let Some(table) = doc.get("data") {
            let columns = table["columns"].as_array().map_or(0, Vec::len);
            let rows = table["rows"].as_array();
            if columns == 0 || rows.is_none() {
                self.fail(at, "data is not a table of columns and rows");
            }
            if rows
                .into_iter()
                .flatten()
                .any(|row| row.as_array().map(Vec::len) != Some(columns))
            {
                self.fail(at, "a data row does not have one cell per column");
            }
        }
    }

    fn id(&mut self, at: &str, kind: &str, doc: &Value) {
        let Some(id) = doc["id"].as_str() else {
            return self.fail(at, "id missing");
        };
        let transient = id
            .strip_prefix("transient:")
            .and_then(|rest| rest.strip_prefix(kind))
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| !rest.is_empty());
        if !transient && web_url(id).is_none() {
            self.fail(
                at,
                &format!("id {id} is neither transient:{kind}-… nor a URL"),
            );
        }
    }

    fn schema_version(&mut self, at: &str, doc: &Value) {
        let version = doc["schema_version"].as_str().unwrap_or_default();
        let parts: Vec<_> = version.split('.').collect();
        if parts.len() != 3 || !parts.iter().all(|p| p.parse::<u32>().is_ok()) {
            self.fail(at, "schema_version is not major.minor.patch");
        }
    }

    fn observable(&mut self, at: &str, observable: &Value) {
        if !observable["type"]
            .as_str()
            .is_some_and(|kind| OBSERVABLE_TYPES.contains(&kind))
        {
            self.fail(at, "not an observable of a CTIM type");
        }
        if observable["value"].as_str().is_none_or(str::is_empty) {
            self.fail(at, "observable without a value");
        }
    }

    fn disposition(&mut self, at: &str, doc: &Value) {
        let number = doc["disposition"].as_u64().unwrap_or(0) as usize;
        let name = DISPOSITIONS.get(number.wrapping_sub(1));
        if name.is_none() || doc["disposition_name"].as_str() != name.copied() {
            self.fail(at, "disposition and disposition_name do not agree");
        }
    }

    fn valid_time(&mut self, at: &str, doc: &Value, required: bool) {
        match doc.get("valid_time").map(Value::as_object) {
            None if !required => {}
            None => self.fail(at, "valid_time missing"),
            Some(None) => self.fail(at, "valid_time is not an object"),
            Some(Some(time)) => self.interval(&format!("{at}.valid_time"), time),
        }
    }

    /// `start_time` and `end_time`, each RFC 3339 when present, in order.
    fn interval(&mut self, at: &str, time: &Map<String, Value>) {
        let mut parsed = [None, None];
        for (n, field) in ["start_time", "end_time"].into_iter().enumerate() {
            if let Some(value) = time.get(field) {
                parsed[n] = value
                    .as_str()
                    .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok());
                if parsed[n].is_none() {
                    self.fail(at, &format!("{field} is not an RFC 3339 time"));
                }
            }
        }
        if let [Some(start), Some(end)] = parsed
            && end < start
        {
            self.fail(at, "end_time is before start_time");
        }
    }

    fn text(&mut self, at: &str, doc: &Value, field: &str, required: bool) {
        match doc.get(field) {
            None if !required => {}
            Some(Value::String(text)) if !text.is_empty() => {}
            _ => self.fail(at, &format!("{field} is not a non-empty string")),
        }
    }

    fn word(&mut self, at: &str, doc: &Value, field: &str, words: &[&str], required: bool) {
        match doc.get(field) {
            None if !required => {}
            Some(Value::String(word)) if words.contains(&word.as_str()) => {}
            other => self.fail(at, &format!("{field} {other:?} is not one of {words:?}")),
        }
    }

    fn strings(&mut self, at: &str, doc: &Value, field: &str) {
        if let Some(value) = doc.get(field)
            && !value
                .as_array()
                .is_some_and(|all| all.iter().all(Value::is_string))
        {
            self.fail(at, &format!("{field} is not an array of strings"));
        }
    }

    /// An absolute http(s) URL, as the relay must give the XDR UI.
    fn link(&mut self, at: &str, doc: &Value, field: &str, required: bool) {
        match doc.get(field) {
            None if !required => {}
            Some(Value::String(url)) if web_url(url).is_some() => {}
            other => self.fail(at, &format!("{field} {other:?} is not an http(s) URL")),
        }
    }
}

fn docs<'a>(data: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    data.get(key)
        .and_then(|docs| docs["docs"].as_array())
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer() -> Value {
        json!({"data": {
            "sightings": {"count": 1, "docs": [{
                "type": "sighting", "id": "transient:sighting-1", "schema_version": "1.3.28",
                "count": 1, "confidence": "High", "source": "C1fApp",
                "source_uri": "https://feed.example/1",
                "observables": [{"type": "domain", "value": "a.example"}],
                "observed_time": {"start_time": "2020-04-12T00:00:00Z", "end_time": "2020-04-12T00:00:00Z"},
                "relations": [{"origin": "x", "relation": "Contains",
                    "source": {"type": "url", "value": "https://a.example/"},
                    "related": {"type": "domain", "value": "a.example"}}]
            }]},
            "indicators": {"count": 1, "docs": [{
                "type": "indicator", "id": "transient:indicator-1", "schema_version": "1.3.28",
                "producer": "C1fApp", "valid_time": {}, "tags": ["phishing"], "tlp": "white",
                "confidence": "High"
            }]},
            "relationships": {"count": 1, "docs": [{
                "type": "relationship", "id": "transient:relationship-1", "schema_version": "1.3.28",
                "relationship_type": "member-of",
                "source_ref": "transient:sighting-1", "target_ref": "transient:indicator-1"
            }]},
            "judgements": {"count": 1, "docs": [{
                "type": "judgement", "id": "transient:judgement-1", "schema_version": "1.3.28",
                "observable": {"type": "domain", "value": "a.example"},
                "disposition": 2, "disposition_name": "Malicious", "source": "C1fApp",
                "priority": 85, "confidence": "High", "severity": "High", "reason": "listed",
                "valid_time": {"start_time": "2020-04-12T00:00:00Z", "end_time": "2020-05-12T00:00:00Z"}
            }]},
            "verdicts": {"count": 1, "docs": [{
                "type": "verdict", "disposition": 2, "disposition_name": "Malicious",
                "observable": {"type": "domain", "value": "a.example"},
                "judgement_id": "transient:judgement-1",
                "valid_time": {"start_time": "2020-04-12T00:00:00Z"}
            }]}
        }})
    }

    fn problems_after(change: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut answer = answer();
        change(&mut answer);
        answer_problems(&answer)
    }

    #[test]
    fn a_valid_answer_has_no_problems() {
        assert_eq!(answer_problems(&answer()), Vec::<String>::new());
        assert!(answer_problems(&json!({"data": {}})).is_empty());
        assert!(answer_problems(&json!({"data": {"status": "ok"}})).is_empty());
        assert!(
            answer_problems(&json!({"errors": [{"type": "fatal", "code": "c", "message": "m"}]}))
                .is_empty()
        );
    }

    #[test]
    fn each_broken_rule_is_named() {
        type Change = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "repeated",
                Box::new(|a| {
                    let doc = a["data"]["indicators"]["docs"][0].clone();
                    a["data"]["indicators"]["docs"]
                        .as_array_mut()
                        .unwrap()
                        .push(doc);
                    a["data"]["indicators"]["count"] = json!(2);
                }),
            ),
            (
                "target_ref",
                Box::new(|a| {
                    a["data"]["relationships"]["docs"][0]["target_ref"] =
                        json!("transient:indicator-2");
                }),
            ),
            (
                "judgement_id",
                Box::new(|a| {
                    a["data"]["verdicts"]["docs"][0]["judgement_id"] =
                        json!("transient:judgement-9");
                }),
            ),
            (
                "producer",
                Box::new(|a| {
                    a["data"]["indicators"]["docs"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("producer");
                }),
            ),
            (
                "confidence",
                Box::new(|a| {
                    a["data"]["sightings"]["docs"][0]["confidence"] = json!("Very High");
                }),
            ),
            (
                "relationship_type",
                Box::new(|a| {
                    a["data"]["relationships"]["docs"][0]["relationship_type"] = json!("member_of");
                }),
            ),
            (
                "RFC 3339",
                Box::new(|a| {
                    a["data"]["sightings"]["docs"][0]["observed_time"]["start_time"] =
                        json!("2020-04-12");
                }),
            ),
            (
                "before",
                Box::new(|a| {
                    a["data"]["judgements"]["docs"][0]["valid_time"]["end_time"] =
                        json!("2019-01-01T00:00:00Z");
                }),
            ),
            (
                "http(s)",
                Box::new(|a| {
                    a["data"]["sightings"]["docs"][0]["source_uri"] = json!("javascript:alert(1)");
                }),
            ),
            (
                "count",
                Box::new(|a| a["data"]["sightings"]["count"] = json!(2)),
            ),
            (
                "agree",
                Box::new(|a| {
                    a["data"]["verdicts"]["docs"][0]["disposition_name"] = json!("Clean");
                }),
            ),
            (
                "type is not",
                Box::new(|a| {
                    a["data"]["judgements"]["docs"][0]["type"] = json!("verdict");
                }),
            ),
            (
                "relation",
                Box::new(|a| {
                    a["data"]["sightings"]["docs"][0]["relations"][0]["relation"] = json!("Near");
                }),
            ),
            (
                "observable",
                Box::new(|a| {
                    a["data"]["judgements"]["docs"][0]["observable"] = json!({"type": "planet"});
                }),
            ),
            (
                "transient",
                Box::new(|a| {
                    a["data"]["indicators"]["docs"][0]["id"] = json!("indicator-1");
                }),
            ),
            ("not a field", Box::new(|a| a["extra"] = json!(1))),
        ];
        for (expected, change) in cases {
            let problems = problems_after(change);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn references_need_web_links_and_unique_ids() {
        let link = json!({"id": "ref-1", "title": "t", "description": "d",
            "url": "https://x.example/", "categories": ["C1fApp"]});
        assert!(answer_problems(&json!({"data": [link]})).is_empty());
        let mut bad = link.clone();
        bad["url"] = json!("data:text/html,hi");
        bad["id"] = json!("ref-2");
        let problems = answer_problems(&json!({"data": [link.clone(), link, bad]}));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
