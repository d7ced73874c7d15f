//! Traces over OTLP/HTTP, configured by the OpenTelemetry SDK's own
//! environment variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_MAX_QUEUE_SIZE`,
//! `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and
//! `OTEL_SDK_DISABLED`. No endpoint: no traces, and nothing costs.

use std::time::Duration;

use url::Url;

use super::ConfigError;
use super::parse::{parse_bool, parse_url, present, whole};
use crate::domain::Secret;

/// Which traces are kept (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    AlwaysOn,
    AlwaysOff,
    /// This fraction of new traces (by trace id).
    Ratio(f64),
    /// Follow the caller's `traceparent` decision; a trace that starts here
    /// is decided by the inner choice.
    ParentBased(ParentlessSampling),
}

/// How `ParentBased` decides for a trace without a parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentlessSampling {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

/// Where and how spans are exported. Present only when an endpoint is set.
#[derive(Clone, PartialEq)]
pub struct TraceSettings {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub endpoint: Url,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: sent to the collector (often a token):
    /// secrets, never logged.
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub service_name: String,
    pub resource: Vec<(String, String)>,
    pub sampling: Sampling,
    /// Spans held for export at most; more are dropped and counted.
    pub max_queue: usize,
    pub max_batch: usize,
    pub schedule_delay: Duration,
}

impl std::fmt::Debug for TraceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceSettings")
            .field("endpoint", &self.endpoint.as_str())
            .field("headers", &self.headers.len())
            .field("service_name", &self.service_name)
            .field("sampling", &self.sampling)
            .finish_non_exhaustive()
    }
}

/// The raw values, as read.
#[derive(Debug, Default)]
pub(super) struct RawTrace {
    pub otel_sdk_disabled: Option<String>,
    pub otel_exporter_otlp_endpoint: Option<String>,
    pub otel_exporter_otlp_traces_endpoint: Option<String>,
    pub otel_exporter_otlp_protocol: Option<String>,
    pub otel_exporter_otlp_headers: Option<String>,
    pub otel_exporter_otlp_timeout: Option<String>,
    pub otel_service_name: Option<String>,
    pub otel_resource_attributes: Option<String>,
    pub otel_traces_sampler: Option<String>,
    pub otel_traces_sampler_arg: Option<String>,
    pub otel_bsp_max_queue_size: Option<String>,
    pub otel_bsp_schedule_delay: Option<String>,
    pub otel_bsp_max_export_batch_size: Option<String>,
}

pub(super) fn parse(raw: RawTrace) -> Result<Option<TraceSettings>, ConfigError> {
    let disabled = present("OTEL_SDK_DISABLED", raw.otel_sdk_disabled)?
        .map(|text| parse_bool("OTEL_SDK_DISABLED", &text))
        .transpose()?
        .unwrap_or(false);
    let traces = present(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        raw.otel_exporter_otlp_traces_endpoint,
    )?;
    let base = present(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        raw.otel_exporter_otlp_endpoint,
    )?;
    // The signal's own endpoint is used as given; the base one gains
    // `/v1/traces`, as the OTLP specification says.
    let endpoint = match (traces, base) {
        (Some(text), _) => parse_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &text)?,
        (None, Some(text)) => {
            let base = parse_url("OTEL_EXPORTER_OTLP_ENDPOINT", &text)?;
            let joined = format!("{}/v1/traces", base.as_str().trim_end_matches('/'));
            parse_url("OTEL_EXPORTER_OTLP_ENDPOINT", &joined)?
        }
        (None, None) => return Ok(None),
    };
    if let Some(protocol) = present(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        raw.otel_exporter_otlp_protocol,
    )? {
        if protocol != "http/protobuf" {
            return Err(ConfigError::new(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                format!("{protocol:?}: only http/protobuf is spoken"),
            ));
        }
    }
    let headers = match present("OTEL_EXPORTER_OTLP_HEADERS", raw.otel_exporter_otlp_headers)? {
        Some(text) => pairs("OTEL_EXPORTER_OTLP_HEADERS", &text)?
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value)))
            .collect(),
        None => Vec::new(),
    };
    let timeout_ms = whole(
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        raw.otel_exporter_otlp_timeout,
        10_000,
        1..=600_000,
    )?;
    let mut resource = match present("OTEL_RESOURCE_ATTRIBUTES", raw.otel_resource_attributes)? {
        Some(text) => pairs("OTEL_RESOURCE_ATTRIBUTES", &text)?,
        None => Vec::new(),
    };
    // `OTEL_SERVICE_NAME` wins over a `service.name` among the attributes.
    let named = resource
        .iter()
        .position(|(key, _)| key == "service.name")
        .map(|at| resource.remove(at).1);
    let service_name = present("OTEL_SERVICE_NAME", raw.otel_service_name)?
        .or(named)
        .unwrap_or_else(|| "ctr-relay".to_owned());
    let sampling = sampling(raw.otel_traces_sampler, raw.otel_traces_sampler_arg)?;
    let max_queue = whole(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        raw.otel_bsp_max_queue_size,
        2048,
        1..=1_000_000,
    )?;
    let max_batch = whole(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        raw.otel_bsp_max_export_batch_size,
        512,
        1..=1_000_000,
    )?;
    if max_batch > max_queue {
        return Err(ConfigError::new(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            format!("{max_batch} is more than OTEL_BSP_MAX_QUEUE_SIZE ({max_queue})"),
        ));
    }
    let delay_ms = whole(
        "OTEL_BSP_SCHEDULE_DELAY",
        raw.otel_bsp_schedule_delay,
        5000,
        1..=600_000,
    )?;
    if disabled {
        return Ok(None);
    }
    Ok(Some(TraceSettings {
        endpoint,
        headers,
        timeout: Duration::from_millis(timeout_ms as u64),
        service_name,
        resource,
        sampling,
        max_queue,
        max_batch,
        schedule_delay: Duration::from_millis(delay_ms as u64),
    }))
}

/// `key=value,key=value`, values percent-decoded (the W3C Baggage form
/// both `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS` use).
/// The error never repeats a value: a header may hold a token.
fn pairs(variable: &'static str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut found = Vec::new();
    for (at, item) in text.split(',').enumerate() {
        if item.trim().is_empty() {
            continue;
        }
        let (key, value) = item.split_once('=').ok_or_else(|| {
            ConfigError::new(variable, format!("item {} is not key=value", at + 1))
        })?;
        let key = key.trim();
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| {
                ConfigError::new(
                    variable,
                    format!("item {} is not UTF-8 once decoded", at + 1),
                )
            })?
            .into_owned();
        if key.is_empty() || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(ConfigError::new(
                variable,
                format!("item {} has no usable key", at + 1),
            ));
        }
        found.push((key.to_owned(), value));
    }
    Ok(found)
}

fn sampling(sampler: Option<String>, arg: Option<String>) -> Result<Sampling, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        match present("OTEL_TRACES_SAMPLER_ARG", arg.clone())? {
            None => Ok(1.0),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .ok_or_else(|| {
                    ConfigError::new(
                        "OTEL_TRACES_SAMPLER_ARG",
                        format!("{text:?} is not a ratio from 0 to 1"),
                    )
                }),
        }
    };
    let name = present("OTEL_TRACES_SAMPLER", sampler)?;
    Ok(match name.as_deref().unwrap_or("parentbased_always_on") {
        "always_on" => Sampling::AlwaysOn,
        "always_off" => Sampling::AlwaysOff,
        "traceidratio" => Sampling::Ratio(ratio()?),
        "parentbased_always_on" => Sampling::ParentBased(ParentlessSampling::AlwaysOn),
        "parentbased_always_off" => Sampling::ParentBased(ParentlessSampling::AlwaysOff),
        "parentbased_traceidratio" => Sampling::ParentBased(ParentlessSampling::Ratio(ratio()?)),
        other => {
            return Err(ConfigError::new(
                "OTEL_TRACES_SAMPLER",
                format!(
                    "{other:?} is not one of always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ),
            ));
        }
    })
}
