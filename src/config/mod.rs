//! Configuration: read once from the environment into a validated [`Settings`].
//!
//! Every variable is read as text by `envy` and then parsed here, so that a bad
//! value stops the relay with a message naming the variable.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::domain::{EntitiesLimit, JwksHost, Secret};

mod credentials;
mod fleet;
mod parse;
#[cfg(test)]
mod tests;
mod trace;

pub use credentials::{credentials_from, optional_credentials_from};
pub use fleet::{FleetSettings, RedisSettings};
pub use parse::MAX_USER_AGENT_CHARS;
use parse::{
    parse_bool, parse_jwks_hosts, parse_seconds, parse_url, parse_user_agent, present, whole,
};
pub use trace::{ParentlessSampling, Sampling, TraceSettings};

pub const DEFAULT_C1FAPP_API_URL: &str = "https://www.c1fapp.com/cifapp/api/";
pub const DEFAULT_JWKS_HOSTS: &str =
    "visibility.amp.cisco.com,visibility.eu.amp.cisco.com,visibility.apjc.amp.cisco.com";

/// Upper bounds of the numeric settings: beyond them a semaphore, a thread
/// pool or a cache could not be built (or would take the machine), so a
/// larger value is a configuration error rather than a panic at start-up.
pub const MAX_IN_FLIGHT: usize = 1_000_000;
pub const MAX_LOOKUP_CONCURRENCY: usize = 10_000;
/// actix-web's own limit.
pub const MAX_WORKERS: usize = 512;
pub const MAX_CACHE_ENTRIES: u64 = 10_000_000;
pub const MAX_OBSERVABLES: usize = 100_000;
/// For every byte-size setting: 1 GiB.
pub const MAX_BYTES: usize = 1 << 30;
/// For `MAX_HELD_BYTES`: 64 GiB.
pub const MAX_HELD: usize = 1 << 36;

/// The environment variables the relay reads; used to reject non-UTF-8 values.
pub const VARIABLES: &[&str] = &[
    "PORT",
    "HOST",
    "SECRET_KEY",
    "JWKS_HOSTS",
    "RELAY_AUDIENCE",
    "CTR_ENTITIES_LIMIT",
    "C1FAPP_API_URL",
    "UPSTREAM_TIMEOUT_SECONDS",
    "RUST_LOG",
    "LOG_FORMAT",
    "MAX_REQUEST_BYTES",
    "MAX_OBSERVABLES",
    "LOOKUP_CONCURRENCY",
    "MAX_UPSTREAM_RESPONSE_BYTES",
    "CYBERSCAN_ALLOW_PRIVATE_HOSTS",
    "SHUTDOWN_GRACE_SECONDS",
    "SHUTDOWN_DELAY_SECONDS",
    "WORKERS",
    "RESULT_CACHE_TTL_SECONDS",
    "RESULT_CACHE_MAX_ENTRIES",
    "UPSTREAM_MAX_IN_FLIGHT",
    "CYBERSCAN_USE_PROXY",
    "REQUEST_TIMEOUT_SECONDS",
    "REQUEST_MAX_UPSTREAM_BYTES",
    "REQUEST_MAX_RESPONSE_BYTES",
    "MAX_HELD_BYTES",
    "MAX_HELD_BYTES_PER_TENANT",
    "UPSTREAM_MAX_IN_FLIGHT_PER_HOST",
    "UPSTREAM_MAX_IN_FLIGHT_PER_CREDENTIAL",
    "RESULT_CACHE_MAX_BYTES",
    "UPSTREAM_USER_AGENT",
    "METRICS_PORT",
    "JWKS_MAX_AGE_SECONDS",
    "ANSWER_SEND_TIMEOUT_SECONDS",
    "C1FAPP_QUOTA",
    "CYBERSCAN_QUOTA",
    "REDIS_URL",
    "REDIS_HASH_KEY",
    "REDIS_TIMEOUT_MS",
    "REDIS_KEY_PREFIX",
    "REDIS_TLS_CA_FILE",
    "QUOTA_WITHOUT_REDIS",
    "UPSTREAM_TRACEPARENT",
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
    /// `LOG_FORMAT` unset: text when stdout is a terminal (someone reading),
    /// JSON otherwise (a collector).
    Auto,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// An `EnvFilter` directive such as `info` or `ctr_relay=debug,info`.
    pub filter: String,
    pub format: LogFormat,
    /// Spans exported over OTLP; `None` (no endpoint): none, at no cost.
    pub trace: Option<TraceSettings>,
}

/// Bounds on what one request may ask of the relay.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest accepted number of observables in one request.
    pub max_observables: usize,
    /// Upstream lookups of one request that may be in flight at once.
    pub lookup_concurrency: usize,
    /// The deadline every upstream call of one request shares.
    pub request_timeout: Duration,
    /// Upstream answer bytes one request may read, all its calls together.
    pub max_upstream_bytes: usize,
    /// The largest answer (its entities, estimated as JSON) of one request.
    pub max_response_bytes: usize,
    /// What all requests in flight may hold together (their upstream bytes
    /// and answers), process-wide.
    pub max_held_bytes: usize,
    /// What one tenant account (a credential; a machine a caller chose) may
    /// hold of `max_held_bytes`, so the others always have room.
    pub max_held_bytes_per_tenant: usize,
    /// How long a large answer may take to be read by its caller before the
    /// connection is closed (`ANSWER_SEND_TIMEOUT_SECONDS`).
    pub answer_send_timeout: Duration,
}

/// How the relay talks to its upstreams.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub c1fapp_api_url: Url,
    /// Bound on each upstream call, from sending the request to the last body byte.
    pub timeout: Duration,
    /// Largest upstream response body the relay reads.
    pub max_response_bytes: usize,
    /// Whether a token may point CyberScan at loopback, private or link-local
    /// addresses (off: only public addresses are contacted).
    pub allow_private_hosts: bool,
    /// Whether calls to CyberScan (whose host the caller chooses) go through
    /// the proxy of `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`. Off: they never
    /// do, since a proxy resolves and connects for the relay and the address
    /// guard could not see where a call goes.
    pub cyberscan_use_proxy: bool,
    /// The short-lived cache of upstream answers.
    pub cache: ResultCacheSettings,
    /// Most calls in flight to one provider at once, over all requests; more
    /// wait (within the upstream timeout). Each costs one connection.
    pub max_in_flight: usize,
    /// Most calls in flight to one host a caller chose (CyberScan's), so a
    /// host that stalls holds only these places.
    pub max_in_flight_per_host: usize,
    /// Most calls in flight with one credential, so one tenant cannot take
    /// every place.
    pub max_in_flight_per_credential: usize,
    /// Private `address:port`s a caller-chosen host may still name when
    /// `allow_private_hosts` is off: `ctr-relay demo`'s own services, and
    /// nothing otherwise (no variable sets it).
    pub private_allowed: Vec<std::net::SocketAddr>,
    /// The `User-Agent` of calls to the providers and JWKS hosts
    /// (`ctr-relay/<version>` unless set): some upstream operators allowlist
    /// by it.
    pub user_agent: String,
    /// Quotas, and the Redis replicas share.
    pub fleet: FleetSettings,
    /// Send the request's `traceparent` on to the providers
    /// (`UPSTREAM_TRACEPARENT`; off: they are third parties).
    pub traceparent: bool,
}

/// Upstream answers kept per provider, credential and observable; off unless a
/// TTL is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultCacheSettings {
    /// How long an answer is reused; `None`: no cache.
    pub ttl: Option<Duration>,
    /// Most answers kept per provider.
    pub max_entries: u64,
    /// Most bytes of answers kept per provider.
    pub max_bytes: u64,
}

/// Where RS256 keys may come from, and how often they are fetched.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// `JWKS_HOSTS`: the only hosts a key set is ever fetched from.
    pub hosts: Vec<JwksHost>,
    /// Least time between fetches of one host's key set for an unknown `kid`
    /// (one minute; not configurable from the environment).
    pub refetch_interval: Duration,
    /// After a failed fetch, how long requests fail at once without trying
    /// again (five seconds; not configurable from the environment).
    pub failure_backoff: Duration,
    /// `JWKS_MAX_AGE_SECONDS`: how long a fetched key set is trusted before
    /// the next token refetches it (shorter if the host's `Cache-Control`
    /// says so), so a key the host withdrew stops being accepted.
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub secret_key: Option<Secret>,
    pub jwks: JwksSettings,
    pub relay_audience: Option<String>,
    pub entities_limit: EntitiesLimit,
    pub upstream: UpstreamSettings,
    pub limits: RequestLimits,
    pub log: LogSettings,
    /// How long requests in flight may run on after SIGTERM / SIGINT.
    pub shutdown_grace: Duration,
    /// After SIGTERM / SIGINT, how long the listener stays open (and
    /// requests are served as before) while `/readyz` answers 503, so that
    /// load balancers stop sending new connections before any is refused.
    pub shutdown_delay: Duration,
    /// HTTP worker threads; `None`: one per CPU.
    pub workers: Option<usize>,
    /// When set, `/metrics` is served on this port (on `host`) and no longer
    /// on the API's port.
    pub metrics_port: Option<u16>,
}

impl Default for Settings {
    /// The documented defaults: what the relay runs with when nothing is set.
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 9090,
            secret_key: None,
            jwks: JwksSettings {
                hosts: default_jwks_hosts(),
                refetch_interval: Duration::from_secs(60),
                failure_backoff: Duration::from_secs(5),
                max_age: Duration::from_secs(900),
            },
            relay_audience: None,
            entities_limit: EntitiesLimit::DEFAULT,
            upstream: UpstreamSettings {
                c1fapp_api_url: default_c1fapp_api_url(),
                timeout: Duration::from_secs(10),
                max_response_bytes: 10 * 1024 * 1024,
                allow_private_hosts: false,
                cyberscan_use_proxy: false,
                cache: ResultCacheSettings {
                    ttl: None,
                    max_entries: 10_000,
                    max_bytes: 32 * 1024 * 1024,
                },
                max_in_flight: 1024,
                max_in_flight_per_host: 128,
                max_in_flight_per_credential: 256,
                user_agent: crate::domain::USER_AGENT.to_owned(),
                private_allowed: Vec::new(),
                fleet: FleetSettings::default(),
                traceparent: false,
            },
            limits: RequestLimits {
                max_body_bytes: 1024 * 1024,
                max_observables: 1000,
                lookup_concurrency: 32,
                request_timeout: Duration::from_secs(25),
                max_upstream_bytes: 32 * 1024 * 1024,
                max_response_bytes: 16 * 1024 * 1024,
                max_held_bytes: 64 * 1024 * 1024,
                max_held_bytes_per_tenant: 16 * 1024 * 1024,
                answer_send_timeout: Duration::from_secs(20),
            },
            log: LogSettings {
                filter: "info".to_owned(),
                format: LogFormat::Auto,
                trace: None,
            },
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            workers: None,
            metrics_port: None,
        }
    }
}

/// Refuses limits that contradict each other: each must leave room for one
/// largest upstream answer (`MAX_UPSTREAM_RESPONSE_BYTES`), or every large
/// answer would be refused for ever, and a tenant's share fits in the pool.
fn agree(limits: &RequestLimits, max_response_bytes: usize) -> Result<(), ConfigError> {
    let room = [
        ("REQUEST_MAX_UPSTREAM_BYTES", limits.max_upstream_bytes),
        ("MAX_HELD_BYTES", limits.max_held_bytes),
        (
            "MAX_HELD_BYTES_PER_TENANT",
            limits.max_held_bytes_per_tenant,
        ),
    ];
    for (variable, bytes) in room {
        if bytes < max_response_bytes {
            return Err(ConfigError::new(
                variable,
                format!(
                    "{bytes} is less than MAX_UPSTREAM_RESPONSE_BYTES ({max_response_bytes}): \
                     no answer of the largest size could ever be read; raise {variable} or \
                     lower MAX_UPSTREAM_RESPONSE_BYTES"
                ),
            ));
        }
    }
    if limits.max_held_bytes_per_tenant > limits.max_held_bytes {
        return Err(ConfigError::new(
            "MAX_HELD_BYTES_PER_TENANT",
            format!(
                "{} is more than MAX_HELD_BYTES ({}): a tenant's share is part of the pool",
                limits.max_held_bytes_per_tenant, limits.max_held_bytes
            ),
        ));
    }
    Ok(())
}

// The two defaults below parse constants; the unit tests prove they parse.
#[allow(clippy::expect_used)]
fn default_c1fapp_api_url() -> Url {
    Url::parse(DEFAULT_C1FAPP_API_URL).expect("the default C1fApp URL is valid")
}

#[allow(clippy::expect_used)]
fn default_jwks_hosts() -> Vec<JwksHost> {
    parse_jwks_hosts(DEFAULT_JWKS_HOSTS).expect("the default JWKS hosts are valid")
}

/// Every variable as the environment holds it; `envy` maps `PORT` to `port`.
#[derive(Debug, Default, Deserialize)]
struct RawSettings {
    port: Option<String>,
    host: Option<String>,
    secret_key: Option<String>,
    jwks_hosts: Option<String>,
    relay_audience: Option<String>,
    ctr_entities_limit: Option<String>,
    c1fapp_api_url: Option<String>,
    upstream_timeout_seconds: Option<String>,
    rust_log: Option<String>,
    log_format: Option<String>,
    max_request_bytes: Option<String>,
    max_observables: Option<String>,
    lookup_concurrency: Option<String>,
    max_upstream_response_bytes: Option<String>,
    cyberscan_allow_private_hosts: Option<String>,
    cyberscan_use_proxy: Option<String>,
    shutdown_grace_seconds: Option<String>,
    shutdown_delay_seconds: Option<String>,
    workers: Option<String>,
    result_cache_ttl_seconds: Option<String>,
    result_cache_max_entries: Option<String>,
    upstream_max_in_flight: Option<String>,
    request_timeout_seconds: Option<String>,
    request_max_upstream_bytes: Option<String>,
    request_max_response_bytes: Option<String>,
    max_held_bytes: Option<String>,
    max_held_bytes_per_tenant: Option<String>,
    upstream_max_in_flight_per_host: Option<String>,
    upstream_max_in_flight_per_credential: Option<String>,
    result_cache_max_bytes: Option<String>,
    upstream_user_agent: Option<String>,
    upstream_traceparent: Option<String>,
    otel_sdk_disabled: Option<String>,
    otel_exporter_otlp_endpoint: Option<String>,
    otel_exporter_otlp_traces_endpoint: Option<String>,
    otel_exporter_otlp_protocol: Option<String>,
    otel_exporter_otlp_headers: Option<String>,
    otel_exporter_otlp_timeout: Option<String>,
    otel_service_name: Option<String>,
    otel_resource_attributes: Option<String>,
    otel_traces_sampler: Option<String>,
    otel_traces_sampler_arg: Option<String>,
    otel_bsp_max_queue_size: Option<String>,
    otel_bsp_schedule_delay: Option<String>,
    otel_bsp_max_export_batch_size: Option<String>,
    metrics_port: Option<String>,
    jwks_max_age_seconds: Option<String>,
    answer_send_timeout_seconds: Option<String>,
    c1fapp_quota: Option<String>,
    cyberscan_quota: Option<String>,
    redis_url: Option<String>,
    redis_hash_key: Option<String>,
    redis_timeout_ms: Option<String>,
    redis_key_prefix: Option<String>,
    redis_tls_ca_file: Option<String>,
    quota_without_redis: Option<String>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        for name in VARIABLES {
            if let Some(value) = std::env::var_os(name) {
                if value.to_str().is_none() {
                    return Err(ConfigError::new(name, "the value is not valid UTF-8"));
                }
            }
        }
        // Other variables of the process may hold anything; skip the ones that
        // are not UTF-8 rather than letting them stop the relay.
        Self::from_vars(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// Reads settings from `(NAME, value)` pairs; what [`Settings::from_env`]
    /// uses, and what the tests call instead of touching the environment.
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let raw: RawSettings = envy::from_iter(vars)
            .map_err(|error| ConfigError::new("environment", error.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawSettings) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let fleet = fleet::parse(fleet::RawFleet {
            c1fapp_quota: raw.c1fapp_quota.clone(),
            cyberscan_quota: raw.cyberscan_quota.clone(),
            redis_url: raw.redis_url.clone(),
            redis_hash_key: raw.redis_hash_key.clone(),
            redis_timeout_ms: raw.redis_timeout_ms.clone(),
            redis_key_prefix: raw.redis_key_prefix.clone(),
            redis_tls_ca_file: raw.redis_tls_ca_file.clone(),
            quota_without_redis: raw.quota_without_redis.clone(),
        })?;
        let host = match present("HOST", raw.host)? {
            Some(text) => text
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::new("HOST", format!("{text:?} is not an IP address")))?,
            None => defaults.host,
        };
        let port = match present("PORT", raw.port)? {
            Some(text) => text.parse::<u16>().map_err(|_| {
                ConfigError::new("PORT", format!("{text:?} is not a port number (0-65535)"))
            })?,
            None => defaults.port,
        };
        let metrics_port = match present("METRICS_PORT", raw.metrics_port)? {
            Some(text) => match text.parse::<u16>() {
                Ok(metrics_port) if metrics_port != 0 && metrics_port != port => Some(metrics_port),
                _ => {
                    return Err(ConfigError::new(
                        "METRICS_PORT",
                        format!("{text:?} is not a port number (1-65535) other than PORT"),
                    ));
                }
            },
            None => None,
        };
        let secret_key = present("SECRET_KEY", raw.secret_key)?.map(Secret::new);
        let jwks_hosts = match present("JWKS_HOSTS", raw.jwks_hosts)? {
            Some(text) => parse_jwks_hosts(&text)
                .map_err(|message| ConfigError::new("JWKS_HOSTS", message))?,
            None => defaults.jwks.hosts,
        };
        let relay_audience = present("RELAY_AUDIENCE", raw.relay_audience)?;
        let entities_limit = match present("CTR_ENTITIES_LIMIT", raw.ctr_entities_limit)? {
            Some(text) => EntitiesLimit::parse(&text).ok_or_else(|| {
                ConfigError::new(
                    "CTR_ENTITIES_LIMIT",
                    format!("{text:?} is not a positive integer"),
                )
            })?,
            None => defaults.entities_limit,
        };
        let c1fapp_api_url = match present("C1FAPP_API_URL", raw.c1fapp_api_url)? {
            Some(text) => parse_url("C1FAPP_API_URL", &text)?,
            None => defaults.upstream.c1fapp_api_url,
        };
        let timeout = match present("UPSTREAM_TIMEOUT_SECONDS", raw.upstream_timeout_seconds)? {
            Some(text) => parse_seconds("UPSTREAM_TIMEOUT_SECONDS", &text)?,
            None => defaults.upstream.timeout,
        };
        let traceparent = match present("UPSTREAM_TRACEPARENT", raw.upstream_traceparent)? {
            Some(text) => parse_bool("UPSTREAM_TRACEPARENT", &text)?,
            None => false,
        };
        let trace = trace::parse(trace::RawTrace {
            otel_sdk_disabled: raw.otel_sdk_disabled,
            otel_exporter_otlp_endpoint: raw.otel_exporter_otlp_endpoint,
            otel_exporter_otlp_traces_endpoint: raw.otel_exporter_otlp_traces_endpoint,
            otel_exporter_otlp_protocol: raw.otel_exporter_otlp_protocol,
            otel_exporter_otlp_headers: raw.otel_exporter_otlp_headers,
            otel_exporter_otlp_timeout: raw.otel_exporter_otlp_timeout,
            otel_service_name: raw.otel_service_name,
            otel_resource_attributes: raw.otel_resource_attributes,
            otel_traces_sampler: raw.otel_traces_sampler,
            otel_traces_sampler_arg: raw.otel_traces_sampler_arg,
            otel_bsp_max_queue_size: raw.otel_bsp_max_queue_size,
            otel_bsp_schedule_delay: raw.otel_bsp_schedule_delay,
            otel_bsp_max_export_batch_size: raw.otel_bsp_max_export_batch_size,
        })?;
        let user_agent = match present("UPSTREAM_USER_AGENT", raw.upstream_user_agent)? {
            Some(text) => parse_user_agent(&text)?,
            None => defaults.upstream.user_agent,
        };
        let max_response_bytes = whole(
            "MAX_UPSTREAM_RESPONSE_BYTES",
            raw.max_upstream_response_bytes,
            defaults.upstream.max_response_bytes,
            1..=MAX_BYTES,
        )?;
        let allow_private_hosts = match present(
            "CYBERSCAN_ALLOW_PRIVATE_HOSTS",
            raw.cyberscan_allow_private_hosts,
        )? {
            Some(text) => parse_bool("CYBERSCAN_ALLOW_PRIVATE_HOSTS", &text)?,
            None => defaults.upstream.allow_private_hosts,
        };
        let cyberscan_use_proxy = match present("CYBERSCAN_USE_PROXY", raw.cyberscan_use_proxy)? {
            Some(text) => parse_bool("CYBERSCAN_USE_PROXY", &text)?,
            None => defaults.upstream.cyberscan_use_proxy,
        };
        let cache = ResultCacheSettings {
            ttl: match present("RESULT_CACHE_TTL_SECONDS", raw.result_cache_ttl_seconds)? {
                Some(text) if text == "0" => None,
                Some(text) => Some(parse_seconds("RESULT_CACHE_TTL_SECONDS", &text)?),
                None => defaults.upstream.cache.ttl,
            },
            max_entries: whole(
                "RESULT_CACHE_MAX_ENTRIES",
                raw.result_cache_max_entries,
                defaults.upstream.cache.max_entries as usize,
                1..=MAX_CACHE_ENTRIES as usize,
            )? as u64,
            max_bytes: whole(
                "RESULT_CACHE_MAX_BYTES",
                raw.result_cache_max_bytes,
                defaults.upstream.cache.max_bytes as usize,
                1..=MAX_BYTES,
            )? as u64,
        };
        let max_held_bytes = whole(
            "MAX_HELD_BYTES",
            raw.max_held_bytes,
            defaults.limits.max_held_bytes,
            1..=MAX_HELD,
        )?;
        let limits = RequestLimits {
            max_body_bytes: whole(
                "MAX_REQUEST_BYTES",
                raw.max_request_bytes,
                defaults.limits.max_body_bytes,
                1..=MAX_BYTES,
            )?,
            max_observables: whole(
                "MAX_OBSERVABLES",
                raw.max_observables,
                defaults.limits.max_observables,
                1..=MAX_OBSERVABLES,
            )?,
            lookup_concurrency: whole(
                "LOOKUP_CONCURRENCY",
                raw.lookup_concurrency,
                defaults.limits.lookup_concurrency,
                1..=MAX_LOOKUP_CONCURRENCY,
            )?,
            request_timeout: match present("REQUEST_TIMEOUT_SECONDS", raw.request_timeout_seconds)?
            {
                Some(text) => parse_seconds("REQUEST_TIMEOUT_SECONDS", &text)?,
                None => defaults.limits.request_timeout,
            },
            max_upstream_bytes: whole(
                "REQUEST_MAX_UPSTREAM_BYTES",
                raw.request_max_upstream_bytes,
                defaults.limits.max_upstream_bytes,
                1..=MAX_BYTES,
            )?,
            max_response_bytes: whole(
                "REQUEST_MAX_RESPONSE_BYTES",
                raw.request_max_response_bytes,
                defaults.limits.max_response_bytes,
                1..=MAX_BYTES,
            )?,
            max_held_bytes,
            max_held_bytes_per_tenant: whole(
                "MAX_HELD_BYTES_PER_TENANT",
                raw.max_held_bytes_per_tenant,
                // A quarter of the pool, and room for one largest answer.
                (max_held_bytes / 4).max(max_response_bytes),
                1..=MAX_HELD,
            )?,
            answer_send_timeout: match present(
                "ANSWER_SEND_TIMEOUT_SECONDS",
                raw.answer_send_timeout_seconds,
            )? {
                Some(text) => parse_seconds("ANSWER_SEND_TIMEOUT_SECONDS", &text)?,
                None => defaults.limits.answer_send_timeout,
            },
        };
        agree(&limits, max_response_bytes)?;
        let shutdown_grace = Duration::from_secs(whole(
            "SHUTDOWN_GRACE_SECONDS",
            raw.shutdown_grace_seconds,
            defaults.shutdown_grace.as_secs() as usize,
            0..=3600,
        )? as u64);
        let shutdown_delay = Duration::from_secs(whole(
            "SHUTDOWN_DELAY_SECONDS",
            raw.shutdown_delay_seconds,
            0,
            0..=3600,
        )? as u64);
        let filter = match present("RUST_LOG", raw.rust_log)? {
            Some(text) => {
                tracing_subscriber::EnvFilter::try_new(&text)
                    .map_err(|error| ConfigError::new("RUST_LOG", error.to_string()))?;
                text
            }
            None => defaults.log.filter,
        };
        let format = match present("LOG_FORMAT", raw.log_format)?.as_deref() {
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("{other:?} is neither \"json\" nor \"text\""),
                ));
            }
            None => defaults.log.format,
        };
        Ok(Self {
            host,
            port,
            secret_key,
            jwks: JwksSettings {
                hosts: jwks_hosts,
                max_age: match present("JWKS_MAX_AGE_SECONDS", raw.jwks_max_age_seconds)? {
                    Some(text) => parse_seconds("JWKS_MAX_AGE_SECONDS", &text)?,
                    None => defaults.jwks.max_age,
                },
                ..defaults.jwks
            },
            relay_audience,
            entities_limit,
            upstream: UpstreamSettings {
                c1fapp_api_url,
                timeout,
                max_response_bytes,
                allow_private_hosts,
                cyberscan_use_proxy,
                cache,
                max_in_flight: whole(
                    "UPSTREAM_MAX_IN_FLIGHT",
                    raw.upstream_max_in_flight,
                    defaults.upstream.max_in_flight,
                    1..=MAX_IN_FLIGHT,
                )?,
                max_in_flight_per_host: whole(
                    "UPSTREAM_MAX_IN_FLIGHT_PER_HOST",
                    raw.upstream_max_in_flight_per_host,
                    defaults.upstream.max_in_flight_per_host,
                    1..=MAX_IN_FLIGHT,
                )?,
                max_in_flight_per_credential: whole(
                    "UPSTREAM_MAX_IN_FLIGHT_PER_CREDENTIAL",
                    raw.upstream_max_in_flight_per_credential,
                    defaults.upstream.max_in_flight_per_credential,
                    1..=MAX_IN_FLIGHT,
                )?,
                user_agent,
                private_allowed: Vec::new(),
                fleet,
                traceparent,
            },
            limits,
            log: LogSettings {
                filter,
                format,
                trace,
            },
            shutdown_grace,
            shutdown_delay,
            workers: match present("WORKERS", raw.workers)? {
                Some(text) => Some(whole("WORKERS", Some(text), 1, 1..=MAX_WORKERS)?),
                None => None,
            },
            metrics_port,
        })
    }
}
