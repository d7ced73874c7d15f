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

/// `transient:<kind>-<uuid>`, kept as its two parts: made, copied, compared
/// and hashed without an allocation, and written out only when serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransientId {
    kind: &'static str,
    uuid: Uuid,
}

/// `transient:`, and the hyphenated UUID's length.
const PREFIX: &str = "transient:";
const UUID_CHARS: usize = uuid::fmt::Hyphenated::LENGTH;
/// Room for the longest id: every CTIM entity type is shorter than this.
const MAX_ID_BYTES: usize = 96;

impl TransientId {
    /// `kind` is the CTIM entity type: `sighting`, `indicator`, …
    pub fn new(kind: &'static str, ids: &mut impl IdSource) -> Self {
        Self::of(kind, ids.next_uuid())
    }

    /// `transient:<kind>-<UUIDv5(namespace, name)>`: the same name in the same
    /// namespace gives the same id in every request, process and relay.
    pub fn named(kind: &'static str, namespace: &Uuid, name: &str) -> Self {
        Self::of(kind, Uuid::new_v5(namespace, name.as_bytes()))
    }

    fn of(kind: &'static str, uuid: Uuid) -> Self {
        debug_assert!(
            PREFIX.len() + kind.len() + 1 + UUID_CHARS <= MAX_ID_BYTES
                && kind
                    .bytes()
                    .all(|byte| byte.is_ascii_alphabetic() || byte == b'-'),
            "an entity type: {kind}"
        );
        Self { kind, uuid }
    }

    /// Its length as text: an id is ASCII and needs no JSON escape.
    pub fn len(&self) -> usize {
        PREFIX.len() + self.kind.len() + 1 + UUID_CHARS
    }

    /// Never: every id has a type and a UUID.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The id's text, written into `buffer`.
    fn write<'b>(&self, buffer: &'b mut [u8; MAX_ID_BYTES]) -> &'b str {
        let mut at = 0;
        for part in [PREFIX, self.kind, "-"] {
            buffer[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        let uuid = self
            .uuid
            .hyphenated()
            .encode_lower(&mut buffer[at..at + UUID_CHARS]);
        let end = at + uuid.len();
        // Only ASCII was written.
        std::str::from_utf8(&buffer[..end]).unwrap_or_default()
    }
}

impl fmt::Display for TransientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write(&mut [0; MAX_ID_BYTES]))
    }
}

impl Serialize for TransientId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.write(&mut [0; MAX_ID_BYTES]))
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
        let text = id.to_string();
        let uuid = text.strip_prefix("transient:sighting-").unwrap();
        assert_eq!(Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
    }

    #[test]
    fn named_ids_are_version_5_and_depend_on_namespace_and_name_alone() {
        let a = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://a.example/");
        let b = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://b.example/");
        let id = TransientId::named("indicator", &a, "Phishtank");
        let text = id.to_string();
        let uuid = text.strip_prefix("transient:indicator-").unwrap();
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
    fn an_id_serializes_as_its_text_and_knows_its_length() {
        let id = TransientId::new("relationship", &mut SequentialIds::default());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(
            json,
            "\"transient:relationship-00000000-0000-0000-0000-000000000001\""
        );
        assert_eq!(id.len(), json.len() - 2);
    }

    #[test]
    fn sequential_ids_count_up() {
        let mut ids = SequentialIds::default();
        assert_eq!(
            TransientId::new("indicator", &mut ids).to_string(),
            "transient:indicator-00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(
            TransientId::new("indicator", &mut ids).to_string(),
            "transient:indicator-00000000-0000-0000-0000-000000000002"
        );
    }
}
