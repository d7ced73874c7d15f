//! The CyberScan API: a token per (host, API key), reused until the service
//! rejects it, then data calls with `Authorization: Bearer <token>`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use moka::future::Cache;
use moka::ops::compute::Op;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use url::Url;

use super::mapping;
use crate::config::UpstreamSettings;
use crate::ctim::JsonSize;
use crate::ctim::{Entities, RandomIds, Reference};
use crate::domain::{
    CyberScanCredentials, EntitiesLimit, Observable, ObservableType, ProviderName, Secret,
};
use crate::metrics::Metrics;
use crate::outbound::{BuildError, Tls, json_error};
use crate::providers::address::{PublicOnlyResolver, is_public};
use crate::providers::cache::{Coalescer, ResultCache};
use crate::providers::quota::{FleetUse, Quotas};
use crate::providers::scope::{Allowance, Metered, Scope, Tenant};
use crate::providers::upstream::{self, Endpoint, Gate, UpstreamResponse};
use crate::providers::{Capability, ProviderError, truncated};

const PROVIDER: ProviderName = ProviderName::CyberScan;

/// Cached access tokens: bounded, and idle ones dropped, so tokens naming many
/// hosts or keys cannot grow the relay's memory without end.
const TOKEN_CACHE_CAPACITY: u64 = 10_000;
const TOKEN_IDLE_TIME: Duration = Duration::from_secs(3600);

/// A cached access token is keyed by the API address and the API key.
type TokenKey = (Url, Secret);

/// What every runtime's CyberScan client shares: built once, no connections.
pub struct CyberScanState {
    settings: UpstreamSettings,
    tokens: Cache<TokenKey, Secret>,
    /// Token calls in flight: concurrent requests share one.
    token_calls: Coalescer<TokenKey, Secret>,
    metrics: Arc<Metrics>,
    /// GET bodies by (URL, API key), when the result cache is on.
    cache: ResultCache<(Url, Secret), Arc<Vec<u8>>>,
    gate: Gate,
    quotas: Arc<Quotas>,
}

impl std::fmt::Debug for CyberScanState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CyberScanState")
            .field("cached_tokens", &self.tokens.entry_count())
            .finish_non_exhaustive()
    }
}

impl CyberScanState {
    pub fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>, quotas: Arc<Quotas>) -> Self {
        Self {
            quotas,
            settings: settings.clone(),
            tokens: Cache::builder()
                .max_capacity(TOKEN_CACHE_CAPACITY)
                .time_to_idle(TOKEN_IDLE_TIME)
                .build(),
            token_calls: Coalescer::new(PROVIDER, metrics.clone()),
            cache: ResultCache::new(&settings.cache, PROVIDER, metrics.clone()),
            // The caller chooses the host: each host has places of its own.
            gate: Gate::new(settings, true),
            metrics,
        }
    }
}

/// One runtime's CyberScan client: its own connections, the shared state.
#[derive(Debug, Clone)]
pub struct CyberScan {
    http: reqwest::Client,
    state: Arc<CyberScanState>,
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    key: &'a str,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

impl CyberScan {
    /// Builds this runtime's client. The host comes from the caller, so unless
    /// the operator says otherwise it connects only to public addresses, and
    /// never through an environment proxy (which would resolve and connect
    /// where the address guard cannot see).
    pub fn new(state: Arc<CyberScanState>, tls: &Tls) -> Result<Self, BuildError> {
        let mut builder = upstream::client_builder(tls, &state.settings);
        if !state.settings.allow_private_hosts {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        if !state.settings.cyberscan_use_proxy {
            builder = builder.no_proxy();
        }
        Ok(Self {
            http: builder.build()?,
            state,
        })
    }

    pub fn supports(capability: Capability, kind: ObservableType) -> bool {
        let known = matches!(kind, ObservableType::Ip | ObservableType::Domain);
        known && matches!(capability, Capability::Observe | Capability::Refer)
    }

    /// A sighting per vulnerability of the observable's IP (a domain's IP is
    /// resolved by CyberScan first).
    pub async fn observe(
        &self,
        credentials: &CyberScanCredentials,
        observable: &Observable,
        limit: EntitiesLimit,
        scope: &Scope,
    ) -> Result<Entities, ProviderError> {
        let Some(ip) = self.ip_of(credentials, observable, scope).await? else {
            return Ok(Entities::default());
        };
        let body = self
            .get(
                credentials,
                &["vulnerabilities", "ip", &ip],
                "vulnerabilities",
                scope,
                |body| mapping::vulnerabilities(body).map(drop),
            )
            .await?;
        let found = mapping::vulnerabilities(&body).map_err(malformed)?;
        let allowance = Metered::new(scope.budget(), Some(self.tenant(credentials)));
        let mut entities = Entities::default();
        entities.sightings.0 = mapping::sightings(
            observable,
            found,
            limit,
            Utc::now(),
            &allowance,
            &mut RandomIds,
        )
        .map_err(|_| truncated(PROVIDER, &allowance))?;
        Ok(entities)
    }

    /// The link to CyberScan's page for the observable.
    pub async fn refer(
        &self,
        credentials: &CyberScanCredentials,
        observable: &Observable,
        scope: &Scope,
    ) -> Result<Vec<Reference>, ProviderError> {
        let Some(segment) = path_segment(observable) else {
            return Ok(Vec::new());
        };
        let kind = observable.kind.as_str();
        let body = self
            .get(credentials, &[kind, segment], "details", scope, |body| {
                mapping::details_page(body).map(drop)
            })
            .await?;
        let page = mapping::details_page(&body).map_err(malformed)?;
        let Some(reference) = mapping::reference(observable, &page) else {
            tracing::debug!("CyberScan's details page is no http(s) URL: no link");
            return Ok(Vec::new());
        };
        let allowance = Metered::new(scope.budget(), Some(self.tenant(credentials)));
        if !allowance.allow(reference.json_size()) {
            return Err(truncated(PROVIDER, &allowance));
        }
        Ok(vec![reference])
    }

    /// Healthy when the token call succeeds; always asks for a new token.
    pub async fn health(
        &self,
        credentials: &CyberScanCredentials,
        scope: &Scope,
    ) -> Result<(), ProviderError> {
        let token = self.authenticate(credentials, scope).await?;
        self.state
            .tokens
            .insert(token_key(credentials), token)
            .await;
        Ok(())
    }

    /// The IP to ask about: the observable itself, or the domain's IP.
    async fn ip_of(
        &self,
        credentials: &CyberScanCredentials,
        observable: &Observable,
        scope: &Scope,
    ) -> Result<Option<String>, ProviderError> {
        let Some(segment) = path_segment(observable) else {
            return Ok(None);
        };
        match observable.kind {
            ObservableType::Domain => {
                let body = self
                    .get(credentials, &["domain", segment], "domain", scope, |body| {
                        mapping::resolved_ip(body).map(drop)
                    })
                    .await?;
                mapping::resolved_ip(&body).map_err(malformed)
            }
            _ => Ok(Some(segment.to_owned())),
        }
    }

    /// The body of a GET, from the result cache when it holds it. The cache
    /// keeps only answers that pass `check` (the caller's own reading of
    /// them): a malformed answer is an error each time, never a cached one.
    async fn get(
        &self,
        credentials: &CyberScanCredentials,
        segments: &[&str],
        operation: &'static str,
        scope: &Scope,
        check: fn(&[u8]) -> Result<(), String>,
    ) -> Result<Arc<Vec<u8>>, ProviderError> {
        let url = endpoint_url(&credentials.api, segments);
        let key = (url.clone(), credentials.api_key.clone());
        self.state
            .cache
            .get_or_fetch(key, scope, async {
                if let Some(ttl) = self.state.settings.cache.ttl {
                    let fleet = self.fleet(credentials);
                    let tenant = self.tenant(credentials);
                    let usable = |body: &[u8]| check(body).is_ok();
                    let asked = url.as_str();
                    if let Some(body) = fleet.cached(PROVIDER, asked, scope, tenant, usable).await?
                    {
                        return Ok(Arc::new(body));
                    }
                    let body = self.fetch(credentials, &url, operation, scope).await?;
                    // The caches keep only answers that pass `check`.
                    check(&body).map_err(malformed)?;
                    fleet.keep(PROVIDER, asked, &body, ttl).await;
                    return Ok(Arc::new(body));
                }
                let body = self.fetch(credentials, &url, operation, scope).await?;
                Ok(Arc::new(body))
            })
            .await
    }

    /// A GET with the cached token; when the service rejects the token (401 or
    /// 403), one new token and one more try.
    async fn fetch(
        &self,
        credentials: &CyberScanCredentials,
        url: &Url,
        operation: &'static str,
        scope: &Scope,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut token = self.token(credentials, scope).await?;
        let mut response = self
            .send_get(credentials, url, &token, operation, scope)
            .await?;
        if matches!(
            response.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            self.forget(credentials, &token).await;
            token = self.token(credentials, scope).await?;
            response = self
                .send_get(credentials, url, &token, operation, scope)
                .await?;
        }
        check(credentials, Some(&token), response)
    }

    async fn send_get(
        &self,
        credentials: &CyberScanCredentials,
        url: &Url,
        token: &Secret,
        operation: &'static str,
        scope: &Scope,
    ) -> Result<UpstreamResponse, ProviderError> {
        self.refuse_internal_literal(credentials)?;
        let request = self
            .http
            .request(Method::GET, url.clone())
            .bearer_auth(token.expose());
        upstream::send(
            self.endpoint(credentials, operation, scope),
            request,
            &self.state.settings,
        )
        .await
    }

    /// The cached token for these credentials, or a new one. Concurrent
    /// requests for the same credentials share one token call; one whose
    /// leader met its own request's limits makes its own.
    async fn token(
        &self,
        credentials: &CyberScanCredentials,
        scope: &Scope,
    ) -> Result<Secret, ProviderError> {
        let key = token_key(credentials);
        if let Some(token) = self.state.tokens.get(&key).await {
            return Ok(token);
        }
        // Boxed: the token call's future is large and rarely needed.
        Box::pin(self.state.token_calls.run(key.clone(), scope, async {
            // A leader that missed the cache just before the last leader
            // filled it and landed: no second call.
            if let Some(token) = self.state.tokens.get(&key).await {
                return Ok(token);
            }
            let token = self.authenticate(credentials, scope).await?;
            self.state.tokens.insert(key, token.clone()).await;
            Ok(token)
        }))
        .await
    }

    /// Drops `rejected` from the cache, unless another request already
    /// replaced it with a newer token.
    async fn forget(&self, credentials: &CyberScanCredentials, rejected: &Secret) {
        self.state
            .tokens
            .entry(token_key(credentials))
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if entry.value() == rejected => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// `POST /token` with the API key.
    async fn authenticate(
        &self,
        credentials: &CyberScanCredentials,
        scope: &Scope,
    ) -> Result<Secret, ProviderError> {
        self.refuse_internal_literal(credentials)?;
        let url = endpoint_url(&credentials.api, &["token"]);
        let request = self.http.post(url).json(&TokenRequest {
            key: credentials.api_key.expose(),
        });
        let response = upstream::send(
            self.endpoint(credentials, "token", scope),
            request,
            &self.state.settings,
        )
        .await?;
        let body = check(credentials, None, response)?;
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|error| malformed(format!("the token answer {}", json_error(&error))))?;
        if token.access_token.trim().is_empty() {
            return Err(malformed("the access token is empty".to_owned()));
        }
        Ok(Secret::new(token.access_token))
    }

    /// An API address written as a non-public IP literal is refused before any
    /// request (names are checked by the resolver).
    fn refuse_internal_literal(
        &self,
        credentials: &CyberScanCredentials,
    ) -> Result<(), ProviderError> {
        if self.state.settings.allow_private_hosts {
            return Ok(());
        }
        let literal = match credentials.api.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        let port = credentials.api.port_or_known_default().unwrap_or(0);
        let excepted = |ip: IpAddr| {
            self.state
                .settings
                .private_allowed
                .contains(&std::net::SocketAddr::new(ip, port))
        };
        match literal {
            Some(ip) if !is_public(ip) && !excepted(ip) => {
                tracing::warn!(%ip, "refused: the CyberScan host is not a public address");
                Err(ProviderError::NotPublic {
                    provider: PROVIDER,
                    host: credentials.api.host_str().unwrap_or_default().to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whose share of the memory pool the answers for `credentials` take
    /// (the machine's share is charged as the bytes are read).
    fn tenant(&self, credentials: &CyberScanCredentials) -> Tenant {
        Tenant {
            credential: self.state.gate.credential(&credentials.api_key),
            machine: None,
        }
    }

    /// What calls with `credentials` share with the fleet.
    fn fleet<'a>(&'a self, credentials: &'a CyberScanCredentials) -> FleetUse<'a> {
        FleetUse {
            quotas: &self.state.quotas,
            secret: &credentials.api_key,
            own: credentials.quota.as_ref(),
        }
    }

    fn endpoint<'a>(
        &'a self,
        credentials: &'a CyberScanCredentials,
        operation: &'static str,
        scope: &'a Scope,
    ) -> Endpoint<'a> {
        Endpoint {
            provider: PROVIDER,
            metrics: &self.state.metrics,
            gate: &self.state.gate,
            credential: self.state.gate.credential(&credentials.api_key),
            configured: &credentials.api,
            operation,
            scope,
            fleet: self.fleet(credentials),
        }
    }
}

/// A 2xx answer's body, or the error its status means (with the API key and
/// the access token it was asked with masked in the upstream's text).
fn check(
    credentials: &CyberScanCredentials,
    token: Option<&Secret>,
    response: UpstreamResponse,
) -> Result<Vec<u8>, ProviderError> {
    match response.status {
        status if status.is_success() => Ok(response.body),
        StatusCode::FORBIDDEN => Err(ProviderError::WrongApiKey { provider: PROVIDER }),
        status => {
            let token = token.map_or("", Secret::expose);
            Err(ProviderError::UnexpectedStatus {
                provider: PROVIDER,
                status: status.as_u16(),
                body: response.body_text(&[credentials.api_key.expose(), token]),
            })
        }
    }
}

fn token_key(credentials: &CyberScanCredentials) -> TokenKey {
    (credentials.api.clone(), credentials.api_key.clone())
}

fn malformed(detail: String) -> ProviderError {
    ProviderError::Malformed {
        provider: PROVIDER,
        detail,
    }
}

/// `<api>/<segment>/…`, each segment percent-encoded (a `/` or `?` in an
/// observable cannot change the path).
fn endpoint_url(api: &Url, segments: &[&str]) -> Url {
    let mut url = api.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// The observable as a path segment: IPs must be IP addresses, and `.` or `..`
/// (which would walk the path) are never sent. `None` means nothing to ask.
fn path_segment(observable: &Observable) -> Option<&str> {
    let value = observable.value.trim();
    let usable = match observable.kind {
        ObservableType::Ip => value.parse::<IpAddr>().is_ok(),
        _ => !value.is_empty() && value != "." && value != "..",
    };
    usable.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Url {
        Url::parse("https://api.cyberscan.io/api/v1").unwrap()
    }

    #[test]
    fn segments_are_encoded_into_the_path() {
        assert_eq!(
            endpoint_url(&api(), &["domain", "a.example/../../token?x=1"]).as_str(),
            "https://api.cyberscan.io/api/v1/domain/a.example%2F..%2F..%2Ftoken%3Fx=1"
        );
        assert_eq!(
            endpoint_url(&api(), &["vulnerabilities", "ip", "192.0.2.1"]).as_str(),
            "https://api.cyberscan.io/api/v1/vulnerabilities/ip/192.0.2.1"
        );
    }

    #[test]
    fn only_real_ips_and_harmless_domains_are_asked_about() {
        let ip = |value: &str| Observable::new(ObservableType::Ip, value);
        let domain = |value: &str| Observable::new(ObservableType::Domain, value);
        assert_eq!(path_segment(&ip("192.0.2.1")), Some("192.0.2.1"));
        assert_eq!(path_segment(&ip("2001:db8::1")), Some("2001:db8::1"));
        assert_eq!(path_segment(&ip("not-an-ip")), None);
        assert_eq!(path_segment(&ip("../token")), None);
        assert_eq!(path_segment(&domain("a.example")), Some("a.example"));
        assert_eq!(path_segment(&domain("..")), None);
        assert_eq!(path_segment(&domain(".")), None);
    }

    #[test]
    fn cyberscan_observes_and_refers_ips_and_domains() {
        for kind in [ObservableType::Ip, ObservableType::Domain] {
            assert!(CyberScan::supports(Capability::Observe, kind));
            assert!(CyberScan::supports(Capability::Refer, kind));
            assert!(!CyberScan::supports(Capability::Deliberate, kind));
        }
        assert!(!CyberScan::supports(
            Capability::Observe,
            ObservableType::Url
        ));
    }
}
