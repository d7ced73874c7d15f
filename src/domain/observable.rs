//! Observables: what the relay is asked about, and reading them from a request.

use std::fmt;

use serde::Serialize;

/// The observable types the relay knows; any other type in a request is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservableType {
    Ip,
    Domain,
    Url,
}

impl ObservableType {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ip" => Some(ObservableType::Ip),
            "domain" => Some(ObservableType::Domain),
            "url" => Some(ObservableType::Url),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ObservableType::Ip => "ip",
            ObservableType::Domain => "domain",
            ObservableType::Url => "url",
        }
    }
}

impl fmt::Display for ObservableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"type": "ip", "value": "192.0.2.1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Observable {
    #[serde(rename = "type")]
    pub kind: ObservableType,
    pub value: String,
}

impl Observable {
    pub fn new(kind: ObservableType, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

impl fmt::Display for Observable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The longest observable value accepted, in characters. A value is copied
/// into every entity made for it (each sighting, relation, judgement), so its
/// length multiplies the size of an answer; no IP, domain or URL in real use
/// comes near it.
pub const MAX_VALUE_CHARS: usize = 4096;
