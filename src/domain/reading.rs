//! Reading a list of observables from untrusted JSON (a request body, a
//! Backbone request's `observables`) as it is parsed: nothing is built for
//! what is not kept. Elements past the limit are counted, not read; a field
//! other than `type` and `value` is skipped unread; a text longer than
//! [`MAX_VALUE_CHARS`] is never copied; at most [`MAX_REPORTED_PROBLEMS`]
//! problems are written out. Memory grows with what is kept, never with a
//! multiple of the input (as it would through `serde_json::Value`).

use std::collections::HashSet;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::observable::{MAX_VALUE_CHARS, Observable, ObservableType};

/// At most this many problems are listed in one error message.
const MAX_REPORTED_PROBLEMS: usize = 10;

/// At most this many unknown types are remembered for the log, clipped.
const MAX_TYPE_CHARS_LOGGED: usize = 64;

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
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut list = List::new(max_observables);
    let shape = deserializer
        .deserialize_any(ListVisitor(&mut list))
        .and_then(|shape| deserializer.end().map(|()| shape))
        .map_err(|error| format!("Not valid JSON: {error}."))?;
    if let Shape::Other(kind) = shape {
        return Err(format!("Expected a JSON array of observables, got {kind}."));
    }
    list.finish()
}

/// What was read so far.
struct List {
    max: usize,
    count: usize,
    observables: Vec<Observable>,
    seen: HashSet<Observable>,
    problems: Vec<String>,
    more_problems: usize,
    skipped: usize,
    skipped_types: Vec<String>,
}

impl List {
    fn new(max: usize) -> Self {
        Self {
            max,
            count: 0,
            observables: Vec::new(),
            seen: HashSet::new(),
            problems: Vec::new(),
            more_problems: 0,
            skipped: 0,
            skipped_types: Vec::new(),
        }
    }

    fn problem(&mut self, problem: impl FnOnce() -> String) {
        match self.problems.len() < MAX_REPORTED_PROBLEMS {
            true => self.problems.push(problem()),
            false => self.more_problems += 1,
        }
    }

    fn element(&mut self, index: usize, element: Element) {
        let fields = match element {
            Element::Object(fields) => fields,
            Element::Other(kind) => {
                return self.problem(|| {
                    format!("{index}: expected an object with \"type\" and \"value\", got {kind}")
                });
            }
        };
        let kind = self.field(fields.kind, index, "type");
        let value = self.field(fields.value, index, "value");
        let (Some(kind), Some(value)) = (kind, value) else {
            return;
        };
        match ObservableType::parse(&kind) {
            Some(kind) => {
                let observable = Observable::new(kind, value);
                if !self.seen.contains(&observable) {
                    self.seen.insert(observable.clone());
                    self.observables.push(observable);
                }
            }
            None => {
                self.skipped += 1;
                let clipped: String = kind.chars().take(MAX_TYPE_CHARS_LOGGED).collect();
                if self.skipped_types.len() < MAX_REPORTED_PROBLEMS
                    && !self.skipped_types.contains(&clipped)
                {
                    self.skipped_types.push(clipped);
                }
            }
        }
    }

    fn field(&mut self, field: Option<Text>, index: usize, name: &str) -> Option<String> {
        match field {
            None => self.problem(|| format!("{index}.{name}: missing field")),
            Some(Text::Blank) => self.problem(|| format!("{index}.{name}: must not be empty")),
            Some(Text::TooLong) => {
                self.problem(|| format!("{index}.{name}: longer than {MAX_VALUE_CHARS} characters"))
            }
            Some(Text::Other(kind)) => {
                self.problem(|| format!("{index}.{name}: must be a string, got {kind}"))
            }
            Some(Text::Kept(text)) => return Some(text),
        }
        None
    }

    fn finish(self) -> Result<Vec<Observable>, String> {
        if self.count > self.max {
            return Err(format!(
                "Too many observables: {} (at most {} per request).",
                self.count, self.max
            ));
        }
        if self.skipped > 0 {
            tracing::debug!(
                skipped = self.skipped,
                types = ?self.skipped_types,
                supported = "ip, domain, url",
                "observables of types the relay does not look up were skipped"
            );
        }
        match (self.problems.is_empty(), self.more_problems) {
            (true, _) => Ok(self.observables),
            (false, 0) => Err(format!("{}.", self.problems.join("; "))),
            (false, more) => Err(format!("{}; and {more} more.", self.problems.join("; "))),
        }
    }
}

/// What the top-level JSON value was.
enum Shape {
    List,
    Other(&'static str),
}

/// One element of the list.
enum Element {
    Object(Fields),
    Other(&'static str),
}

#[derive(Default)]
struct Fields {
    kind: Option<Text>,
    value: Option<Text>,
}

/// A `type` or `value` field, as far as it matters.
enum Text {
    Kept(String),
    Blank,
    TooLong,
    Other(&'static str),
}

struct ListVisitor<'l>(&'l mut List);

impl<'de> Visitor<'de> for ListVisitor<'_> {
    type Value = Shape;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON array of observables")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let list = self.0;
        while list.count < list.max {
            match seq.next_element_seed(ElementSeed)? {
                Some(element) => {
                    list.element(list.count, element);
                    list.count += 1;
                }
                None => return Ok(Shape::List),
            }
        }
        // Past the limit, elements are counted for the message, not read.
        while seq.next_element::<IgnoredAny>()?.is_some() {
            list.count += 1;
        }
        Ok(Shape::List)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
        drain_map(map).map(|()| Shape::Other("an object"))
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other("a boolean"))
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_f64<E: Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_str<E: Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other("a string"))
    }

    fn visit_unit<E: Error>(self) -> Result<Shape, E> {
        Ok(Shape::Other("null"))
    }
}

struct ElementSeed;

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Element;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Element, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an observable")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut fields = Fields::default();
        while let Some(name) = map.next_key::<FieldName>()? {
            match name {
                FieldName::Type => fields.kind = Some(map.next_value_seed(TextSeed)?),
                FieldName::Value => fields.value = Some(map.next_value_seed(TextSeed)?),
                FieldName::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Element::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element, A::Error> {
        drain_seq(seq).map(|()| Element::Other("an array"))
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<Element, E> {
        Ok(Element::Other("a boolean"))
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_f64<E: Error>(self, _: f64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_str<E: Error>(self, _: &str) -> Result<Element, E> {
        Ok(Element::Other("a string"))
    }

    fn visit_unit<E: Error>(self) -> Result<Element, E> {
        Ok(Element::Other("null"))
    }
}

/// An object key: `type`, `value`, or one that is skipped.
enum FieldName {
    Type,
    Value,
    Other,
}

impl<'de> serde::Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl Visitor<'_> for NameVisitor {
            type Value = FieldName;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_str<E: Error>(self, name: &str) -> Result<FieldName, E> {
                Ok(match name {
                    "type" => FieldName::Type,
                    "value" => FieldName::Value,
                    _ => FieldName::Other,
                })
            }
        }

        deserializer.deserialize_identifier(NameVisitor)
    }
}

struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Text;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Text, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Text, E> {
        Ok(if text.trim().is_empty() {
            Text::Blank
        } else if text.chars().nth(MAX_VALUE_CHARS).is_some() {
            Text::TooLong
        } else {
            Text::Kept(text.to_owned())
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
        drain_map(map).map(|()| Text::Other("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
        drain_seq(seq).map(|()| Text::Other("an array"))
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<Text, E> {
        Ok(Text::Other("a boolean"))
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<Text, E> {
        Ok(Text::Other("a number"))
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<Text, E> {
        Ok(Text::Other("a number"))
    }

    fn visit_f64<E: Error>(self, _: f64) -> Result<Text, E> {
        Ok(Text::Other("a number"))
    }

    fn visit_unit<E: Error>(self) -> Result<Text, E> {
        Ok(Text::Other("null"))
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
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
        // Skipped without recursing, and refused.
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse(&deep).unwrap_err(),
            "0: expected an object with \"type\" and \"value\", got an array."
        );
        let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(parse(&deep).is_err());
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
