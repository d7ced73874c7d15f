//! The C1fApp API: one POST per observable.

use serde::Serialize;

use std::sync::Arc;

use super::mapping;
use super::records::{Record, parse_records};
use crate::config::UpstreamSettings;
use crate::ctim::JsonSize;
use crate::ctim::{Entities, RandomIds, Verdicts};
use crate::domain::{
    C1fAppCredentials, EntitiesLimit, Observable, ObservableType, ProviderName, Secret,
};
use crate::metrics::Metrics;
use crate::outbound::{BuildError, Tls};
use crate::providers::cache::ResultCache;
use crate::providers::quota::{FleetUse, Quotas};
use crate::providers::scope::{Allowance, Metered, Scope, Tenant};
use crate::providers::upstream::{self, Endpoint, Gate};
use crate::providers::{Capability, ProviderError, truncated};

const PROVIDER: ProviderName = ProviderName::C1fApp;

/// The bodies C1fApp answers when it has nothing for a value; not errors.
/// The service's own spelling is "Availiable"; the corrected one is accepted too.
const NOTHING_FOUND: &[&str] = &[
    "Unsupported request ? IPv4/Domain only",
    "Empty Search! Available search: IPv4/URL/Domain",
    "Empty Search! Availiable search: IPv4/URL/Domain",
];

/// The value looked up by /health.
const HEALTH_PROBE: &str = "test.com";

/// What every runtime's C1fApp client shares: built once, no connections.
#[derive(Debug)]
pub struct C1fAppState {
    settings: UpstreamSettings,
    metrics: Arc<Metrics>,
    /// Answers by (API key, value), when the result cache is on.
    cache: ResultCache<(Secret, String), Arc<Vec<u8>>>,
    gate: Gate,
    quotas: Arc<Quotas>,
}

impl C1fAppState {
    pub fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>, quotas: Arc<Quotas>) -> Self {
        Self {
            quotas,
            settings: settings.clone(),
            cache: ResultCache::new(&settings.cache, PROVIDER, metrics.clone()),
            // The operator chose the one endpoint: no places per host.
            gate: Gate::new(settings, false),
            metrics,
        }
    }
}

/// One runtime's C1fApp client: its own connections, the shared state.
#[derive(Debug, Clone)]
pub struct C1fApp {
    http: reqwest::Client,
    state: Arc<C1fAppState>,
}

#[derive(Serialize)]
struct SearchRequest<'a> {
    key: &'a str,
    format: &'static str,
    backend: &'static str,
    request: &'a str,
}

impl C1fApp {
    pub fn new(state: Arc<C1fAppState>, tls: &Tls) -> Result<Self, BuildError> {
        Ok(Self {
            http: upstream::client_builder(tls, &state.settings).build()?,
            state,
        })
    }

    pub fn supports(capability: Capability, kind: ObservableType) -> bool {
        let known = matches!(
            kind,
            ObservableType::Ip | ObservableType::Domain | ObservableType::Url
        );
        known && matches!(capability, Capability::Observe | Capability::Deliberate)
    }

    /// The host C1fApp calls go to (for traces).
    pub fn api_host(&self) -> &str {
        self.state
            .settings
            .c1fapp_api_url
            .host_str()
            .unwrap_or_default()
    }

    pub async fn observe(
        &self,
        credentials: &C1fAppCredentials,
        observable: &Observable,
        limit: EntitiesLimit,
        scope: &Scope,
    ) -> Result<Entities, ProviderError> {
        let body = self.answer(credentials, &observable.value, scope).await?;
        let records = parse(&body)?;
        let allowance = Metered::new(scope.budget(), Some(self.tenant(&credentials.key)));
        mapping::entities(observable, &records, limit, &allowance, &mut RandomIds)
            .map_err(|_| truncated(PROVIDER, &allowance))
    }

    pub async fn deliberate(
        &self,
        credentials: &C1fAppCredentials,
        observable: &Observable,
        limit: EntitiesLimit,
        scope: &Scope,
    ) -> Result<Verdicts, ProviderError> {
        let body = self.answer(credentials, &observable.value, scope).await?;
        let records = parse(&body)?;
        let mut verdicts = Verdicts::default();
        if let Some(verdict) = mapping::verdict(observable, &records, limit) {
            let allowance = Metered::new(scope.budget(), Some(self.tenant(&credentials.key)));
            if !allowance.allow(verdict.json_size()) {
                return Err(truncated(PROVIDER, &allowance));
            }
            verdicts.verdicts.0.push(verdict);
        }
        Ok(verdicts)
    }

    /// What calls with `credentials` share with the fleet.
    fn fleet<'a>(&'a self, credentials: &'a C1fAppCredentials) -> FleetUse<'a> {
        FleetUse {
            quotas: &self.state.quotas,
            secret: &credentials.key,
            own: credentials.quota.as_ref(),
        }
    }

    /// Whose share of the memory pool the answers for `key` take.
    fn tenant(&self, key: &Secret) -> Tenant {
        Tenant {
            credential: self.state.gate.credential(key),
            machine: None,
        }
    }

    /// C1fApp's answer for `value`, from the result cache when it is on (the
    /// cache keeps only answers that parse). Records are parsed from it by the
    /// caller, borrowing their text from the body.
    async fn answer(
        &self,
        credentials: &C1fAppCredentials,
        value: &str,
        scope: &Scope,
    ) -> Result<Arc<Vec<u8>>, ProviderError> {
        self.state
            .cache
            .get_or_fetch((credentials.key.clone(), value.to_owned()), scope, async {
                let fleet = self.fleet(credentials);
                if let Some(ttl) = self.state.settings.cache.ttl {
                    let tenant = self.tenant(&credentials.key);
                    let usable = |body: &[u8]| parse(body).is_ok();
                    if let Some(body) = fleet.cached(PROVIDER, value, scope, tenant, usable).await?
                    {
                        return Ok(Arc::new(body));
                    }
                    let body = self.search(credentials, value, "search", scope).await?;
                    // The caches keep only answers that parse.
                    parse(&body)?;
                    fleet.keep(PROVIDER, value, &body, ttl).await;
                    return Ok(Arc::new(body));
                }
                let body = self.search(credentials, value, "search", scope).await?;
                Ok(Arc::new(body))
            })
            .await
    }

    /// One lookup of `test.com` (never from the cache): healthy when it does
    /// not fail and its answer parses.
    pub async fn health(
        &self,
        credentials: &C1fAppCredentials,
        scope: &Scope,
    ) -> Result<(), ProviderError> {
        let body = self
            .search(credentials, HEALTH_PROBE, "health", scope)
            .await?;
        parse(&body).map(drop)
    }

    /// The body C1fApp answers for `value` (`[]` for its "nothing found"
    /// texts), or the error its status means.
    async fn search(
        &self,
        credentials: &C1fAppCredentials,
        value: &str,
        operation: &'static str,
        scope: &Scope,
    ) -> Result<Vec<u8>, ProviderError> {
        let key = &credentials.key;
        let state = &*self.state;
        let url = &state.settings.c1fapp_api_url;
        let request = self.http.post(url.clone()).json(&SearchRequest {
            key: key.expose(),
            format: "json",
            backend: "es",
            request: value,
        });
        let endpoint = Endpoint {
            provider: PROVIDER,
            metrics: &state.metrics,
            gate: &state.gate,
            credential: state.gate.credential(key),
            configured: url,
            operation,
            scope,
            fleet: self.fleet(credentials),
        };
        let response = upstream::send(endpoint, request, &state.settings).await?;
        if is_nothing_found(&response.body) {
            return Ok(b"[]".to_vec());
        }
        if !response.status.is_success() {
            return Err(ProviderError::UnexpectedStatus {
                provider: PROVIDER,
                status: response.status.as_u16(),
                body: response.body_text(&[key.expose()]),
            });
        }
        Ok(response.body)
    }
}

/// The records of an answer, newest first.
fn parse(body: &[u8]) -> Result<Vec<Record<'_>>, ProviderError> {
    parse_records(body).map_err(|detail| ProviderError::Malformed {
        provider: PROVIDER,
        detail,
    })
}

fn is_nothing_found(body: &[u8]) -> bool {
    // Records are longer than any of the texts (with room for whitespace
    // and quotes): no need to read them as text.
    if body.len() > 256 {
        return false;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let text = text.trim();
    // Tolerate the text arriving as a JSON string.
    let text = text
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(text);
    NOTHING_FOUND.contains(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nothing_found_texts_are_recognised() {
        assert!(is_nothing_found(b"Unsupported request ? IPv4/Domain only"));
        assert!(is_nothing_found(
            b"Empty Search! Available search: IPv4/URL/Domain\n"
        ));
        assert!(is_nothing_found(
            b"Empty Search! Availiable search: IPv4/URL/Domain"
        ));
        assert!(is_nothing_found(
            b"\"Unsupported request ? IPv4/Domain only\""
        ));
        assert!(!is_nothing_found(b"[]"));
        assert!(!is_nothing_found(b"Invalid API key"));
        let padded = format!("{:>200}", "Unsupported request ? IPv4/Domain only");
        assert!(is_nothing_found(padded.as_bytes()));
    }

    #[test]
    fn c1fapp_observes_and_deliberates_all_three_types_but_has_no_refer() {
        for kind in [
            ObservableType::Ip,
            ObservableType::Domain,
            ObservableType::Url,
        ] {
            assert!(C1fApp::supports(Capability::Observe, kind));
            assert!(C1fApp::supports(Capability::Deliberate, kind));
            assert!(!C1fApp::supports(Capability::Refer, kind));
        }
    }
}
