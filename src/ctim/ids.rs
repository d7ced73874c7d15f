//! Transient ids: `transient:<type>-<uuid4>`, from a source the caller chooses
//! (random in the service, sequential in unit tests); and name-based ones,
//! `transient:<type>-<uuid5>`, for what keeps one id everywhere (indicators).

use std::fmt;

use serde::Serialize;
use uuid::Uuid;

pub trait IdSource {
    fn next_uuid(&mut self) -> Uuid;
}

/// Random version-4 UUIDs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_uuid(&mut self) -> Uuid {
        Uuid::new_v4()
    }
}

/// `00000000-0000-0000-0000-000000000001`, `…002`, …: predictable ids for tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct SequentialIds(u128);

impl IdSource for SequentialIds {
    fn next_uuid(&mut self) -> Uuid {
        self.0 += 1;
        Uuid::from_u128(self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TransientId(String);

impl TransientId {
    /// `kind` is the CTIM entity type: `sighting`, `indicator`, …
    pub fn new(kind: &str, ids: &mut impl IdSource) -> Self {
        Self(format!("transient:{kind}-{}", ids.next_uuid()))
    }

    /// `transient:<kind>-<UUIDv5(namespace, name)>`: the same name in the same
    /// namespace gives the same id in every request, process and relay.
    pub fn named(kind: &str, namespace: &Uuid, name: &str) -> Self {
        Self(format!(
            "transient:{kind}-{}",
            Uuid::new_v5(namespace, name.as_bytes())
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `python3 -c 'import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, "https://www.c1fapp.com/"))'`
    const PYTHON_UUID5_C1FAPP: &str = "38123f3a-3f27-5f1b-b431-b999b4885918";

    #[test]
    fn ids_name_their_type_and_carry_a_uuid4() {
        let id = TransientId::new("sighting", &mut RandomIds);
        let uuid = id.as_str().strip_prefix("transient:sighting-").unwrap();
        assert_eq!(Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
    }

    #[test]
    fn named_ids_are_version_5_and_depend_on_namespace_and_name_alone() {
        let a = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://a.example/");
        let b = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://b.example/");
        let id = TransientId::named("indicator", &a, "Phishtank");
        let uuid = id.as_str().strip_prefix("transient:indicator-").unwrap();
        assert_eq!(Uuid::parse_str(uuid).unwrap().get_version_num(), 5);
        assert_eq!(id, TransientId::named("indicator", &a, "Phishtank"));
        assert_ne!(id, TransientId::named("indicator", &a, "phishtank"));
        assert_ne!(id, TransientId::named("indicator", &b, "Phishtank"));
        // RFC 9562's algorithm, checked against Python's uuid.uuid5 for the
        // same namespace and name.
        assert_eq!(
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://www.c1fapp.com/").to_string(),
            PYTHON_UUID5_C1FAPP
        );
    }

    #[test]
    fn sequential_ids_count_up() {
        let mut ids = SequentialIds::default();
        assert_eq!(
            TransientId::new("indicator", &mut ids).as_str(),
            "transient:indicator-00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(
            TransientId::new("indicator", &mut ids).as_str(),
            "transient:indicator-00000000-0000-0000-0000-000000000002"
        );
    }
}
