//! Any bytes as a CyberScan answer (host report or vulnerabilities): parsed,
//! mapped to CTIM and serialized, never a panic; the sightings and the refer
//! link are valid CTIM (`ctim::check`).
#![no_main]

use chrono::Utc;
use ctr_relay::ctim::check::{answer_problems, bundle_problems};
use ctr_relay::ctim::{Docs, Entities, JsonSize, SequentialIds};
use ctr_relay::providers::scope::Unbounded;
use ctr_relay::domain::{EntitiesLimit, Observable, ObservableType};
use ctr_relay::providers::cyberscan::mapping;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let observable = Observable {
        kind: ObservableType::Ip,
        value: "192.0.2.10".to_owned(),
    };
    let _ = mapping::resolved_ip(body);
    if let Ok(page) = mapping::details_page(body) {
        if let Some(reference) = mapping::reference(&observable, &page) {
            // Only absolute http(s) URLs become links.
            assert!(reference.url.starts_with("http://") || reference.url.starts_with("https://"));
            let answer = serde_json::json!({"data": [reference]});
            let problems = answer_problems(&answer);
            assert!(problems.is_empty(), "{problems:?}");
        }
    }
    if let Ok(found) = mapping::vulnerabilities(body) {
        let count = found.len();
        let Ok(sightings) = mapping::sightings(
            &observable,
            found,
            EntitiesLimit::DEFAULT,
            Utc::now(),
            &Unbounded,
            &mut SequentialIds::default(),
        ) else {
            panic!("an unbounded allowance never runs out");
        };
        assert_eq!(sightings.len(), count.min(EntitiesLimit::DEFAULT.get()));
        for sighting in &sightings {
            let json = serde_json::to_vec(sighting).unwrap_or_default();
            assert!(sighting.json_size() >= json.len());
        }
        let entities = Entities {
            sightings: Docs(sightings),
            ..Entities::default()
        };
        let problems = bundle_problems(&serde_json::to_value(&entities).unwrap_or_default());
        assert!(problems.is_empty(), "{problems:?}");
    }
});
