//! Any bytes as a request body: parsed into observables or refused with a
//! message, never a panic. What is accepted holds what the relay promises.
#![no_main]

use ctr_relay::domain::parse_observables;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(observables) = parse_observables(body, 1000) {
        assert!(observables.len() <= 1000);
        for observable in &observables {
            assert!(!observable.value.trim().is_empty());
        }
    }
});
