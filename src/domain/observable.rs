//! Observables: what the relay is asked about, and reading them from a request.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The observable types the relay knows; any other type in a request is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservableType {
    Ip,
    Domain,
    Url,
}

impl ObservableType {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ip" => Some(ObservableType::Ip),
            "domain" => Some(ObservableType::Domain),
            "url" => Some(ObservableType::Url),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ObservableType::Ip => "ip",
            ObservableType::Domain => "domain",
            ObservableType::Url => "url",
        }
    }
}

impl fmt::Display for ObservableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"type": "ip", "value": "192.0.2.1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Observable {
    #[serde(rename = "type")]
    pub kind: ObservableType,
    pub value: String,
}

impl Observable {
    pub fn new(kind: ObservableType, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

impl fmt::Display for Observable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The longest observable value accepted, in characters. A value is copied
/// into every entity made for it (each sighting, relation, judgement), so its
/// length multiplies the size of an answer; no IP, domain or URL in real use
/// comes near it.
pub const MAX_VALUE_CHARS: usize = 4096;

/// At most this many problems are listed in one error message.
const MAX_REPORTED_PROBLEMS: usize = 10;

/// Parses a JSON array of `{"type", "value"}` objects (extra keys ignored).
///
/// Every element must have non-empty string `type` and `value`; otherwise the
/// error says what is wrong and where (`0.value: missing field`). Types the relay
/// does not know are skipped; repeated observables are kept once, in the order
/// of their first appearance.
pub fn parse_observables(body: &[u8], max_observables: usize) -> Result<Vec<Observable>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("The body is empty: expected a JSON array of observables.".to_owned());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|error| format!("Not valid JSON: {error}."))?;
    observables_from_value(&value, max_observables)
}

/// As [`parse_observables`], from JSON already read (a Communications Backbone
/// request's `observables`).
pub fn observables_from_value(
    value: &Value,
    max_observables: usize,
) -> Result<Vec<Observable>, String> {
    let Value::Array(elements) = value else {
        return Err(format!(
            "Expected a JSON array of observables, got {}.",
            describe(value)
        ));
    };
    if elements.len() > max_observables {
        return Err(format!(
            "Too many observables: {} (at most {max_observables} per request).",
            elements.len()
        ));
    }

    let mut problems = Vec::new();
    let mut observables = Vec::new();
    let mut seen = HashSet::new();
    let (mut skipped, mut skipped_types) = (0usize, Vec::<&str>::new());
    for (index, element) in elements.iter().enumerate() {
        let Value::Object(fields) = element else {
            problems.push(format!(
                "{index}: expected an object with \"type\" and \"value\", got {}",
                describe(element)
            ));
            continue;
        };
        let kind = text_field(fields.get("type"), index, "type", &mut problems);
        let value = text_field(fields.get("value"), index, "value", &mut problems);
        let (Some(kind), Some(value)) = (kind, value) else {
            continue;
        };
        match ObservableType::parse(kind) {
            Some(kind) => {
                let observable = Observable::new(kind, value);
                if seen.insert(observable.clone()) {
                    observables.push(observable);
                }
            }
            None => {
                skipped += 1;
                if skipped_types.len() < MAX_REPORTED_PROBLEMS && !skipped_types.contains(&kind) {
                    skipped_types.push(kind);
                }
            }
        }
    }
    if skipped > 0 {
        // Caller's text: clipped, at debug (a request may hold many).
        let types: Vec<String> = skipped_types
            .iter()
            .map(|kind| kind.chars().take(64).collect())
            .collect();
        tracing::debug!(
            skipped,
            types = ?types,
            supported = "ip, domain, url",
            "observables of types the relay does not look up were skipped"
        );
    }

    match problems.len() {
        0 => Ok(observables),
        n if n > MAX_REPORTED_PROBLEMS => {
            let shown = problems[..MAX_REPORTED_PROBLEMS].join("; ");
            Err(format!("{shown}; and {} more.", n - MAX_REPORTED_PROBLEMS))
        }
        _ => Err(format!("{}.", problems.join("; "))),
    }
}

fn text_field<'a>(
    field: Option<&'a Value>,
    index: usize,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<&'a str> {
    match field {
        None => problems.push(format!("{index}.{name}: missing field")),
        Some(Value::String(text)) if text.trim().is_empty() => {
            problems.push(format!("{index}.{name}: must not be empty"))
        }
        Some(Value::String(text)) if text.chars().nth(MAX_VALUE_CHARS).is_some() => problems.push(
            format!("{index}.{name}: longer than {MAX_VALUE_CHARS} characters"),
        ),
        Some(Value::String(text)) => return Some(text),
        Some(other) => problems.push(format!(
            "{index}.{name}: must be a string, got {}",
            describe(other)
        )),
    }
    None
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<Observable>, String> {
        parse_observables(body.as_bytes(), 1000)
    }

    #[test]
    fn known_types_are_parsed_in_order() {
        let observables = parse(
            r#"[{"type": "domain", "value": "a.example"}, {"type": "ip", "value": "192.0.2.1", "extra": 1},
                {"type": "url", "value": "https://a.example/x"}]"#,
        )
        .unwrap();
        assert_eq!(
            observables,
            vec![
                Observable::new(ObservableType::Domain, "a.example"),
                Observable::new(ObservableType::Ip, "192.0.2.1"),
                Observable::new(ObservableType::Url, "https://a.example/x"),
            ]
        );
    }

    #[test]
    fn unknown_types_are_skipped_and_duplicates_kept_once() {
        let observables = parse(
            r#"[{"type": "sha256", "value": "abc"}, {"type": "ip", "value": "192.0.2.1"},
                {"type": "ip", "value": "192.0.2.1"}, {"type": "IP", "value": "192.0.2.2"}]"#,
        )
        .unwrap();
        assert_eq!(
            observables,
            vec![Observable::new(ObservableType::Ip, "192.0.2.1")]
        );
        assert_eq!(parse("[]").unwrap(), Vec::new());
    }

    #[test]
    fn each_problem_is_named_by_its_place() {
        assert_eq!(
            parse(r#"[{"type": "ip"}]"#).unwrap_err(),
            "0.value: missing field."
        );
        assert_eq!(
            parse(r#"[{"type": "ip", "value": "x"}, {"value": "y", "type": ""}]"#).unwrap_err(),
            "1.type: must not be empty."
        );
        assert_eq!(
            parse(r#"[{"type": 5, "value": ["x"]}]"#).unwrap_err(),
            "0.type: must be a string, got a number; 0.value: must be a string, got an array."
        );
        assert_eq!(
            parse(r#"["ip"]"#).unwrap_err(),
            "0: expected an object with \"type\" and \"value\", got a string."
        );
        assert_eq!(
            parse(r#"[{"type": "ip", "value": "  "}]"#).unwrap_err(),
            "0.value: must not be empty."
        );
    }

    #[test]
    fn problems_are_checked_for_unknown_types_too() {
        assert_eq!(
            parse(r#"[{"type": "sha256"}]"#).unwrap_err(),
            "0.value: missing field."
        );
    }

    #[test]
    fn a_long_list_of_problems_is_cut() {
        let body = format!("[{}]", ["{}"; 20].join(","));
        let message = parse(&body).unwrap_err();
        assert!(message.ends_with("; and 30 more."), "{message}");
    }

    #[test]
    fn the_body_must_be_a_json_array() {
        assert_eq!(
            parse(r#"{"type": "ip", "value": "x"}"#).unwrap_err(),
            "Expected a JSON array of observables, got an object."
        );
        assert!(
            parse("not json")
                .unwrap_err()
                .starts_with("Not valid JSON: ")
        );
        assert_eq!(
            parse("  ").unwrap_err(),
            "The body is empty: expected a JSON array of observables."
        );
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_are_refused() {
        assert!(parse_observables(b"[{\"type\": \"ip\", \"value\": \"\xff\"}]", 10).is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let error = parse(&deep).unwrap_err();
        assert!(error.contains("recursion limit"), "{error}");
    }

    #[test]
    fn a_value_longer_than_the_bound_is_refused() {
        let longest = "a".repeat(MAX_VALUE_CHARS);
        let body = format!(r#"[{{"type": "url", "value": "{longest}"}}]"#);
        assert_eq!(parse(&body).unwrap().len(), 1);
        let body = format!(r#"[{{"type": "url", "value": "{longest}é"}}]"#);
        assert_eq!(
            parse(&body).unwrap_err(),
            "0.value: longer than 4096 characters."
        );
    }

    #[test]
    fn too_many_observables_are_refused() {
        let body = format!("[{}]", [r#"{"type": "ip", "value": "x"}"#; 3].join(","));
        assert_eq!(
            parse_observables(body.as_bytes(), 2).unwrap_err(),
            "Too many observables: 3 (at most 2 per request)."
        );
    }
}
