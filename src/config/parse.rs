//! Reading one variable's text into a value, or a [`ConfigError`] naming it.

use std::ops::RangeInclusive;
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

/// A whole number within `range`: the default when unset, else an error
/// naming the variable and the range (text, signs, fractions, exponents and
/// numbers too large for any integer type are all refused).
pub(super) fn whole(
    variable: &'static str,
    value: Option<String>,
    default: usize,
    range: RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    match present(variable, value)? {
        Some(text) => match text.parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ConfigError::new(
                variable,
                format!(
                    "{text:?} is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        },
        None => Ok(default),
    }
}

/// The most characters of `UPSTREAM_USER_AGENT`.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// A `User-Agent` value: printable ASCII (spaces allowed, no control
/// characters, so it cannot split or forge a header), at most
/// [`MAX_USER_AGENT_CHARS`].
pub(super) fn parse_user_agent(text: &str) -> Result<String, ConfigError> {
    const VARIABLE: &str = "UPSTREAM_USER_AGENT";
    if text.len() > MAX_USER_AGENT_CHARS {
        return Err(ConfigError::new(
            VARIABLE,
            format!("is longer than {MAX_USER_AGENT_CHARS} characters"),
        ));
    }
    if !text.bytes().all(|byte| (b' '..=b'~').contains(&byte)) {
        return Err(ConfigError::new(
            VARIABLE,
            format!("{text:?} holds characters other than printable ASCII"),
        ));
    }
    Ok(text.to_owned())
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

/// The shortest duration a setting may have: a timeout of less cannot be met.
const MIN_SECONDS: f64 = 0.001;
/// The longest: an hour.
const MAX_SECONDS: f64 = 3600.0;

/// A number of seconds (decimals allowed) from a millisecond to an hour.
pub(super) fn parse_seconds(variable: &'static str, text: &str) -> Result<Duration, ConfigError> {
    text.parse::<f64>()
        .ok()
        .filter(|seconds| (MIN_SECONDS..=MAX_SECONDS).contains(seconds))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            ConfigError::new(
                variable,
                format!("{text:?} is not a number of seconds from {MIN_SECONDS} to {MAX_SECONDS}"),
            )
        })
}

/// `none` (any case): no host, and RS256 tokens are refused.
pub(super) fn parse_jwks_hosts(text: &str) -> Result<Vec<JwksHost>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
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
