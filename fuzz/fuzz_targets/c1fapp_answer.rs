//! Any bytes as a C1fApp answer: parsed and mapped to CTIM for each kind of
//! observable, then serialized, never a panic; every answer, alone or two
//! observables' folded into one, is a valid CTIM bundle (`ctim::check`).
#![no_main]

use ctr_relay::ctim::check::bundle_problems;
use ctr_relay::ctim::{Entities, JsonSize, RandomIds};
use ctr_relay::providers::scope::Unbounded;
use ctr_relay::domain::{EntitiesLimit, Observable, ObservableType};
use ctr_relay::providers::c1fapp::{mapping, records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(records) = records::parse_records(body) else {
        return;
    };
    for (kind, value) in [
        (ObservableType::Ip, "192.0.2.10"),
        (ObservableType::Domain, "login.example.net"),
        (
            ObservableType::Url,
            "https://login.example.net/?session=abc",
        ),
    ] {
        let mut answer = Entities::default();
        let observable = Observable {
            kind,
            value: value.to_owned(),
        };
        for limit in [
            EntitiesLimit::DEFAULT,
            EntitiesLimit::parse("1").unwrap_or_default(),
        ] {
            let Ok(entities) = mapping::entities(
                &observable,
                &records,
                limit,
                &Unbounded,
                &mut RandomIds,
            ) else {
                panic!("an unbounded allowance never runs out");
            };
            assert!(entities.sightings.0.len() <= limit.get());
            assert!(serde_json::to_vec(&entities).is_ok());
            // What the answer budget is charged never understates the JSON.
            for sighting in &entities.sightings.0 {
                let json = serde_json::to_vec(sighting).unwrap_or_default();
                assert!(sighting.json_size() >= json.len());
            }
            let problems = bundle_problems(&serde_json::to_value(&entities).unwrap_or_default());
            assert!(problems.is_empty(), "{problems:?}");
            answer.extend(entities);
            let _ = mapping::verdict(&observable, &records, limit);
        }
        // The same records again under another id source, folded into one
        // answer as `enrich::observe` does: still one indicator per feed.
        if let Ok(again) = mapping::entities(
            &observable,
            &records,
            EntitiesLimit::DEFAULT,
            &Unbounded,
            &mut RandomIds,
        ) {
            answer.extend(again);
        }
        answer.fold_shared_indicators();
        let problems = bundle_problems(&serde_json::to_value(&answer).unwrap_or_default());
        assert!(problems.is_empty(), "{problems:?}");
    }
});
