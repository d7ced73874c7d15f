//! A JSON-lines event formatter, written for the hot path: one object per
//! event, written straight into the line buffer.
//!
//! The stock `tracing-subscriber` JSON format re-parses the current span's
//! fields from their stored JSON text on every event; here they are spliced in
//! as stored. Output: `{"timestamp", "level", <event fields>, "target",
//! "span": {<span fields>, "name"}}`.

use std::fmt::{self, Write};

use chrono::{Datelike, Timelike, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", metadata.level())?;
        let mut fields = FieldWriter {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, metadata.target())?;
        if let Some(span) = ctx.lookup_current() {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            // Stored by `JsonFields` as a JSON object: splice in its members.
            let members = extensions
                .get::<FormattedFields<JsonFields>>()
                .map(|fields| fields.fields.trim())
                .and_then(|text| text.strip_prefix('{'))
                .and_then(|text| text.strip_suffix('}'))
                .map(str::trim)
                .unwrap_or_default();
            if !members.is_empty() {
                writer.write_str(members)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// `2026-11-23T09:06:45.803659Z`: UTC, microseconds.
fn write_timestamp(writer: &mut impl Write) -> fmt::Result {
    let now = Utc::now();
    write!(
        writer,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond() % 1_000_000_000 / 1_000
    )
}

/// Writes each field as `,"name":value`.
struct FieldWriter<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl FieldWriter<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.writer.write_char(',')?;
            write_string(self.writer, field.name())?;
            self.writer.write_char(':')?;
            value(self.writer)
        })();
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |writer| write_string(writer, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |writer| write!(writer, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |writer| write!(writer, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // `{:?}` keeps the decimal point of a whole number (`11.0`, not
        // `11`): a reader sees the same type on every line.
        self.field(field, |writer| match value.is_finite() {
            true => write!(writer, "{value:?}"),
            false => writer.write_str("null"),
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |writer| write!(writer, "{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |writer| {
            writer.write_char('"')?;
            write!(Escaped(&mut *writer), "{value}")?;
            writer.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |writer| {
            writer.write_char('"')?;
            write!(Escaped(&mut *writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

fn write_string(writer: &mut impl Write, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaped(&mut *writer).write_str(text)?;
    writer.write_char('"')
}

/// Escapes what it is given for a JSON string, as it passes it on.
struct Escaped<W>(W);

impl<W: Write> Write for Escaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut start = 0;
        for (index, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[start..index])?;
            match escape {
                "" => write!(self.0, "\\u{byte:04x}")?,
                escape => self.0.write_str(escape)?,
            }
            start = index + 1;
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn logged(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(buffer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))
            })
            .collect()
    }

    #[test]
    fn events_are_json_objects_with_their_fields_and_span() {
        let lines = logged(|| {
            let span = tracing::info_span!("request", request_id = "abc-123");
            let _entered = span.enter();
            tracing::info!(
                route = "/observe",
                status = 200u64,
                latency_ms = 1.5,
                ok = true,
                delta = -4i64,
                "request"
            );
        });
        let line = &lines[0];
        assert_eq!(line["message"], "request");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["route"], "/observe");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["ok"], true);
        assert_eq!(line["delta"], -4);
        assert_eq!(line["target"], "ctr_relay::telemetry::json::tests");
        assert_eq!(
            line["span"],
            serde_json::json!({"request_id": "abc-123", "name": "request"})
        );
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{timestamp}"
        );
        assert!(timestamp.ends_with('Z'));
    }

    #[test]
    fn text_is_escaped_and_odd_values_stay_valid_json() {
        let lines = logged(|| {
            let error = io::Error::other("broken \"pipe\"");
            tracing::warn!(
                detail = "quote \" backslash \\ newline \n tab \t bell \u{7} é",
                value = ?vec!["a\"b"],
                error = &error as &(dyn std::error::Error + 'static),
                ratio = f64::NAN,
                "odd"
            );
        });
        let line = &lines[0];
        assert_eq!(
            line["detail"],
            "quote \" backslash \\ newline \n tab \t bell \u{7} é"
        );
        assert_eq!(line["value"], "[\"a\\\"b\"]");
        assert_eq!(line["error"], "broken \"pipe\"");
        assert_eq!(line["ratio"], serde_json::Value::Null);
        assert!(line.get("span").is_none(), "outside any span");
    }
}
