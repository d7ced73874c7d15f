//! Any bytes as a C1fApp answer: parsed and mapped to CTIM for each kind of
//! observable, then serialized, never a panic; every relationship points at
//! entities of the same answer.
#![no_main]

use ctr_relay::ctim::{JsonSize, SequentialIds};
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
                &mut SequentialIds::default(),
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
            for relationship in &entities.relationships.0 {
                let sighting = |s: &&ctr_relay::ctim::Sighting| s.id == relationship.source_ref;
                let indicator = |i: &&ctr_relay::ctim::Indicator| i.id == relationship.target_ref;
                assert!(entities.sightings.0.iter().any(|s| sighting(&s)));
                assert!(entities.indicators.0.iter().any(|i| indicator(&i)));
            }
            let _ = mapping::verdict(&observable, &records, limit);
        }
    }
});
