//! Untrusted JSON costs memory in proportion to what is kept, never a
//! multiple of the input: measured with a counting allocator (its own test
//! binary, so nothing else allocates meanwhile).

// Tests may panic: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use peak_alloc::PeakAlloc;

use ctr_relay::backbone::wire;
use ctr_relay::domain::parse_observables;
use ctr_relay::providers::c1fapp::records::parse_records;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// The most bytes held at once, above what was held before, while `work` runs.
fn peak_above_start(work: impl FnOnce()) -> usize {
    let start = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    work();
    ALLOCATOR.peak_usage().saturating_sub(start)
}

/// `[0,0,…]` of about `bytes` bytes.
fn zeros(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 2);
    text.push('[');
    text.push_str(&"0,".repeat(bytes / 2));
    text.push('0');
    text.push(']');
    text
}

const MIB: usize = 1024 * 1024;

// One test, so the measurements do not overlap.
#[test]
fn untrusted_json_is_read_without_amplification() {
    // A request body: 1 MiB of `[0,0,…]`.
    let body = zeros(MIB);
    let peak = peak_above_start(|| {
        let error = parse_observables(body.as_bytes(), 1000).unwrap_err();
        assert!(error.starts_with("Too many observables: 524289"), "{error}");
    });
    assert!(
        peak < 64 * 1024,
        "a 1 MiB request body took {peak} bytes more"
    );

    // The same list in a Communications Backbone request.
    let message = format!(
        r#"{{"topic": "t", "message": {{"request_id": "r", "observables": {body}, "extra": {body}}}}}"#
    );
    let peak = peak_above_start(|| {
        let incoming = wire::read(message.as_bytes(), 4 * MIB, 1000);
        assert!(
            matches!(incoming, wire::Incoming::Refused { .. }),
            "{incoming:?}"
        );
    });
    assert!(
        peak < 64 * 1024,
        "a 2 MiB Backbone request took {peak} bytes more"
    );

    // A C1fApp answer whose confidence is an 8 MiB list.
    let answer = format!(
        r#"[{{"feed_label": ["F"], "domain": ["a.example"], "address": ["https://a.example/"],
             "ip_address": ["192.0.2.1"], "confidence": [{}], "reportime": ["2020-04-12"],
             "source": ["https://feed.example/1"], "assessment": ["phishing"]}}]"#,
        zeros(8 * MIB)
    );
    let peak = peak_above_start(|| {
        let records = parse_records(answer.as_bytes()).unwrap();
        assert_eq!(records.len(), 1);
    });
    assert!(
        peak < 64 * 1024,
        "an 8 MiB confidence took {peak} bytes more"
    );
}
