//! Typed CTIM (Cisco Threat Intelligence Model) entities, as the relay returns them.
//!
//! Each entity struct carries its CTIM `type` through `#[serde(tag = "type")]`
//! and its `schema_version` through the zero-sized [`SchemaVersion`], so neither
//! can be forgotten or misspelt. `count` fields of [`Docs`] are derived.

pub mod check;
mod entities;
mod error;
mod ids;
mod size;
mod values;

pub use entities::{
    ColumnDefinition, Indicator, Judgement, MAX_TAGS, ObservedRelation, ObservedTime, Reference,
    Relationship, Sighting, SightingDataTable, ValidTime, Verdict,
};
pub use error::{CtimError, CtimWarning, ErrorCode, ErrorEnvelope};
pub use ids::{IdSource, RandomIds, SequentialIds, TransientId};
pub use size::{JsonSize, text_size};
pub use values::{Confidence, Disposition, RelationType, SchemaVersion, Severity, Timestamp, Tlp};

use std::collections::HashMap;

use serde::Serialize;
use serde::ser::SerializeStruct;

/// The CTIM release every entity declares.
pub const SCHEMA_VERSION: &str = "1.3.28";

/// The most characters of upstream text copied into one CTIM field (a title,
/// a description, a URI, a tag, a data-table cell): an upstream can send
/// megabytes in one string, and a response repeats it per entity.
pub const MAX_TEXT_CHARS: usize = 4096;

/// The longest URL an answer carries; a longer one is dropped, not cut (a cut
/// URL would lead somewhere else).
pub const MAX_URL_CHARS: usize = 2048;

/// `text` as a link the XDR UI may show: an absolute `http` or `https` URL
/// with a host, at most [`MAX_URL_CHARS`] long, as the URL parser writes it.
/// Anything else (`javascript:`, `data:`, relative, malformed, too long) is
/// `None`: upstream text never becomes another kind of link.
pub fn web_url(text: &str) -> Option<String> {
    if text.len() > MAX_URL_CHARS * 4 {
        return None;
    }
    let url = url::Url::parse(text.trim()).ok()?;
    let web = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|host| !host.is_empty());
    (web && url.as_str().chars().count() <= MAX_URL_CHARS).then(|| url.as_str().to_owned())
}

/// Whether `url`'s host is `domain` or a subdomain of it: case-insensitive,
/// trailing dots ignored, internationalized names compared in their ASCII
/// form. Not a substring test: `https://banana.com/` does not contain `a.co`.
pub fn url_in_domain(url: &str, domain: &str) -> bool {
    let Some(host) = url::Url::parse(url.trim()).ok().and_then(|url| {
        url.host_str()
            .map(|host| host.trim_end_matches('.').to_ascii_lowercase())
    }) else {
        return false;
    };
    let Ok(domain) = url::Host::parse(domain.trim().trim_end_matches('.')) else {
        return false;
    };
    let domain = domain.to_string().to_ascii_lowercase();
    !domain.is_empty()
        && (host == domain
            || host
                .strip_suffix(&domain)
                .is_some_and(|rest| rest.ends_with('.')))
}

/// `text`, cut after [`MAX_TEXT_CHARS`] characters, with `…` added when cut.
/// Copies at most what is kept.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut clipped = String::with_capacity(cut + '…'.len_utf8());
            clipped.push_str(&text[..cut]);
            clipped.push('…');
            clipped
        }
    }
}

/// `{"count": n, "docs": [...]}` where `n` is always the number of docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Docs<T>(pub Vec<T>);

impl<T> Default for Docs<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Docs<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<T: Serialize> Serialize for Docs<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut docs = serializer.serialize_struct("Docs", 2)?;
        docs.serialize_field("count", &self.0.len())?;
        docs.serialize_field("docs", &self.0)?;
        docs.end()
    }
}

/// What one provider found for one observable, or what a whole request found:
/// the `data` object of /observe/observables.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Entities {
    #[serde(skip_serializing_if = "Docs::is_empty")]
    pub sightings: Docs<Sighting>,
    #[serde(skip_serializing_if = "Docs::is_empty")]
    pub indicators: Docs<Indicator>,
    #[serde(skip_serializing_if = "Docs::is_empty")]
    pub relationships: Docs<Relationship>,
    #[serde(skip_serializing_if = "Docs::is_empty")]
    pub judgements: Docs<Judgement>,
    #[serde(skip_serializing_if = "Docs::is_empty")]
    pub verdicts: Docs<Verdict>,
}

impl Entities {
    pub fn is_empty(&self) -> bool {
        self.sightings.is_empty()
            && self.indicators.is_empty()
            && self.relationships.is_empty()
            && self.judgements.is_empty()
            && self.verdicts.is_empty()
    }

    /// Appends `other`'s docs after this one's, keeping both orders.
    pub fn extend(&mut self, other: Entities) {
        self.sightings.0.extend(other.sightings.0);
        self.indicators.0.extend(other.indicators.0);
        self.relationships.0.extend(other.relationships.0);
        self.judgements.0.extend(other.judgements.0);
        self.verdicts.0.extend(other.verdicts.0);
    }

    /// Keeps each indicator once: one held again (the same id: the same feed,
    /// found for another observable) is folded into its first appearance
    /// ([`Indicator::absorb`]), so every relationship naming it still resolves.
    pub fn fold_shared_indicators(&mut self) {
        let mut first: HashMap<TransientId, usize> = HashMap::new();
        let mut kept: Vec<Indicator> = Vec::with_capacity(self.indicators.len());
        for indicator in std::mem::take(&mut self.indicators.0) {
            match first.get(&indicator.id) {
                Some(&at) => {
                    kept[at].absorb(indicator);
                }
                None => {
                    first.insert(indicator.id, kept.len());
                    kept.push(indicator);
                }
            }
        }
        self.indicators.0 = kept;
    }
}

/// The `data` object of /deliberate/observables.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdicts {
    #[serde(skip_serializing_if = "Docs::is_empty")]
    pub verdicts: Docs<Verdict>,
}

impl Verdicts {
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }

    pub fn extend(&mut self, other: Verdicts) {
        self.verdicts.0.extend(other.verdicts.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_clipped_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let exact = "é".repeat(MAX_TEXT_CHARS);
        assert_eq!(clip(&exact), exact);
        let long = "é".repeat(MAX_TEXT_CHARS + 10);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_TEXT_CHARS + 1);
        assert!(clipped.ends_with("é…"));
    }

    #[test]
    fn only_absolute_http_urls_are_links() {
        assert_eq!(
            web_url("https://a.example/x?y=1").as_deref(),
            Some("https://a.example/x?y=1")
        );
        assert_eq!(
            web_url(" HTTP://A.example ").as_deref(),
            Some("http://a.example/")
        );
        for text in [
            "javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "JaVaScRiPt:alert(1)",
            "//a.example/x",
            "a.example",
            "file:///etc/passwd",
            "https://",
            "",
        ] {
            assert_eq!(web_url(text), None, "{text}");
        }
        let long = format!("https://a.example/{}", "x".repeat(MAX_URL_CHARS));
        assert_eq!(web_url(&long), None, "too long: dropped, not cut");
    }

    #[test]
    fn a_url_is_in_a_domain_when_its_host_is_the_domain_or_under_it() {
        assert!(url_in_domain("https://a.co/x", "a.co"));
        assert!(url_in_domain("https://login.A.CO./x", "a.co."));
        assert!(url_in_domain(
            "https://bücher.example/",
            "xn--bcher-kva.example"
        ));
        assert!(url_in_domain(
            "https://xn--bcher-kva.example/",
            "BÜCHER.example"
        ));
        assert!(!url_in_domain("https://banana.com/x", "a.co"));
        assert!(!url_in_domain("https://evila.co/x", "a.co"));
        assert!(!url_in_domain("https://a.co.evil.example/", "a.co"));
        assert!(!url_in_domain("https://x.example/a.co", "a.co"));
        assert!(!url_in_domain("not a url", "a.co"));
        assert!(!url_in_domain("https://a.co/", ""));
    }
}
