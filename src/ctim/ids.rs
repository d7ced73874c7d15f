//! Transient ids: `transient:<type>-<uuid4>`, from a source the caller chooses
//! (random in the service, sequential in unit tests).

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

    #[test]
    fn ids_name_their_type_and_carry_a_uuid4() {
        let id = TransientId::new("sighting", &mut RandomIds);
        let uuid = id.as_str().strip_prefix("transient:sighting-").unwrap();
        assert_eq!(Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
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
