//! Comparing two answers to the same observables made moments apart: the
//! `transient:` ids are random per answer and the judgements' validity starts
//! "now", so both are replaced by stable stand-ins first.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// `value` with each distinct `transient:` id renamed by order of first
/// appearance, and each timestamp within a day of now (or up to a year
/// ahead) written as its distance from now in whole days.
pub fn normalized(value: &Value) -> Value {
    let mut ids = HashMap::new();
    rewrite(value, &mut ids, Utc::now())
}

fn rewrite(value: &Value, ids: &mut HashMap<String, usize>, now: DateTime<Utc>) -> Value {
    match value {
        Value::String(text) => Value::String(stand_in(text, ids, now)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| rewrite(item, ids, now)).collect())
        }
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, field)| (name.clone(), rewrite(field, ids, now)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn stand_in(text: &str, ids: &mut HashMap<String, usize>, now: DateTime<Utc>) -> String {
    if let Some(rest) = text.strip_prefix("transient:") {
        let kind = rest.split('-').next().unwrap_or_default();
        let next = ids.len();
        let n = *ids.entry(text.to_owned()).or_insert(next);
        return format!("transient:{kind}-#{n}");
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        let ahead = time.with_timezone(&Utc) - now;
        if ahead.num_hours() > -24 && ahead.num_days() <= 366 {
            // `+ 0.0`: a time a moment ago rounds to -0, which prints "-0".
            let days = (ahead.num_seconds() as f64 / 86_400.0).round() + 0.0;
            return format!("<now{days:+}d>");
        }
    }
    text.to_owned()
}
