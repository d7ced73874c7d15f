//! Reading one variable's text into a value, or a [`ConfigError`] naming it.

use std::time::Duration;

use url::Url;

use super::ConfigError;
use crate::domain::JwksHost;

/// A variable that is set must hold something: an empty value is an error
/// rather than a silent default (an empty `SECRET_KEY` is a mistake, not a choice).
pub(super) fn present(
    variable: &'static str,
    value: Option<String>,
) -> Result<Option<String>, ConfigError> {
    match value {
        Some(text) if text.trim().is_empty() => Err(ConfigError::new(
            variable,
            "is set but empty; unset it to use the default",
        )),
        Some(text) => Ok(Some(text.trim().to_owned())),
        None => Ok(None),
    }
}

pub(super) fn positive(
    variable: &'static str,
    value: Option<String>,
    default: usize,
) -> Result<usize, ConfigError> {
    match present(variable, value)? {
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::new(
                variable,
                format!("{text:?} is not a positive integer"),
            )),
        },
        None => Ok(default),
    }
}

pub(super) fn parse_bool(variable: &'static str, text: &str) -> Result<bool, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::new(
            variable,
            format!("{text:?} is neither true nor false"),
        )),
    }
}

pub(super) fn parse_url(variable: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .map_err(|error| ConfigError::new(variable, format!("{text:?} is not a URL: {error}")))?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        _ => Err(ConfigError::new(
            variable,
            format!("{text:?} is not an http(s) URL"),
        )),
    }
}

pub(super) fn parse_seconds(variable: &'static str, text: &str) -> Result<Duration, ConfigError> {
    text.parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0 && *seconds <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            ConfigError::new(
                variable,
                format!("{text:?} is not a number of seconds between 0 and 3600"),
            )
        })
}

pub(super) fn parse_jwks_hosts(text: &str) -> Result<Vec<JwksHost>, String> {
    let hosts = text
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(JwksHost::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.is_empty() {
        return Err("the list is empty".to_owned());
    }
    Ok(hosts)
}
