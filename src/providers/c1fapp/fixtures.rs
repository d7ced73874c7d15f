//! C1fApp records for unit tests.

use serde_json::{Value, json};

use super::records::{Record, parse_records};

/// A record in the documented shape; `overrides` replaces fields.
pub fn record(overrides: Value) -> Value {
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

/// Parses records as C1fApp would send them.
pub fn parse(records: &[Value]) -> Vec<Record<'static>> {
    // Records borrow from their body; a test's body may live forever.
    let body: &'static [u8] = Box::leak(serde_json::to_vec(records).unwrap().into_boxed_slice());
    parse_records(body).unwrap()
}
