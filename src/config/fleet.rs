//! What replicas share: upstream quotas (`C1FAPP_QUOTA`, `CYBERSCAN_QUOTA`)
//! and the Redis that counts them for the whole fleet (`REDIS_URL`,
//! `REDIS_HASH_KEY`, `REDIS_TIMEOUT_MS`, `REDIS_KEY_PREFIX`,
//! `REDIS_TLS_CA_FILE`, `QUOTA_WITHOUT_REDIS`).

use std::time::Duration;

use super::ConfigError;
use super::parse::present;
use crate::domain::{Quota, Secret};

/// The shortest `REDIS_HASH_KEY`, in bytes.
pub const MIN_HASH_KEY_BYTES: usize = 32;

/// The operator's quotas and the Redis shared by the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSettings {
    /// The quota of each C1fApp key without one of its own.
    pub c1fapp_quota: Option<Quota>,
    /// The quota of each CyberScan key without one of its own.
    pub cyberscan_quota: Option<Quota>,
    pub redis: Option<RedisSettings>,
    /// While Redis cannot be reached: count quotas locally and go on
    /// (`local`, the default), or refuse calls that need a quota (`refuse`).
    pub refuse_without_redis: bool,
}

/// `REDIS_URL` and how it is used. Not `Debug`-printed with its URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://`, user and password in it: a secret.
    pub url: Secret,
    /// The key of the HMAC-SHA256 that names credentials in Redis.
    pub hash_key: Secret,
    /// Bound on each Redis call.
    pub timeout: Duration,
    /// Every key the relay writes starts with this.
    pub prefix: String,
    /// For `rediss://`: PEM certificates of the CAs to trust (else the
    /// system's store, which the static image does not have).
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The raw values, as read.
#[derive(Debug, Default)]
pub(super) struct RawFleet {
    pub c1fapp_quota: Option<String>,
    pub cyberscan_quota: Option<String>,
    pub redis_url: Option<String>,
    pub redis_hash_key: Option<String>,
    pub redis_timeout_ms: Option<String>,
    pub redis_key_prefix: Option<String>,
    pub redis_tls_ca_file: Option<String>,
    pub quota_without_redis: Option<String>,
}

pub(super) fn parse(raw: RawFleet) -> Result<FleetSettings, ConfigError> {
    let quota = |variable: &'static str, value: Option<String>| {
        present(variable, value)?
            .map(|text| Quota::parse(&text).map_err(|message| ConfigError::new(variable, message)))
            .transpose()
    };
    let redis = match present("REDIS_URL", raw.redis_url)? {
        None => {
            if raw.redis_hash_key.is_some() {
                return Err(ConfigError::new(
                    "REDIS_HASH_KEY",
                    "is set without REDIS_URL; set both or neither",
                ));
            }
            None
        }
        Some(url) => {
            // Never echoed: the URL holds a password.
            if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                || redis::Client::open(url.as_str()).is_err()
            {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "not a redis:// or rediss:// URL (redis://:password@host:6379/0)",
                ));
            }
            let hash_key = present("REDIS_HASH_KEY", raw.redis_hash_key)?.ok_or_else(|| {
                ConfigError::new(
                    "REDIS_HASH_KEY",
                    "is needed with REDIS_URL: at least 32 bytes, the same on every replica",
                )
            })?;
            if hash_key.len() < MIN_HASH_KEY_BYTES {
                return Err(ConfigError::new(
                    "REDIS_HASH_KEY",
                    format!("is shorter than {MIN_HASH_KEY_BYTES} bytes"),
                ));
            }
            let timeout_ms = match present("REDIS_TIMEOUT_MS", raw.redis_timeout_ms)? {
                Some(text) => text
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (1..=10_000).contains(ms))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "REDIS_TIMEOUT_MS",
                            "is not a whole number from 1 to 10000",
                        )
                    })?,
                None => 50,
            };
            let prefix = present("REDIS_KEY_PREFIX", raw.redis_key_prefix)?
                .unwrap_or_else(|| "ctr-relay:".to_owned());
            if prefix.len() > 64 || prefix.chars().any(char::is_whitespace) {
                return Err(ConfigError::new(
                    "REDIS_KEY_PREFIX",
                    "is longer than 64 bytes or holds a space",
                ));
            }
            let tls_ca_pem = match present("REDIS_TLS_CA_FILE", raw.redis_tls_ca_file)? {
                None => None,
                Some(path) => {
                    let pem = std::fs::read(&path).map_err(|error| {
                        ConfigError::new("REDIS_TLS_CA_FILE", format!("{path}: {error}"))
                    })?;
                    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                        return Err(ConfigError::new(
                            "REDIS_TLS_CA_FILE",
                            format!("{path}: no PEM certificate in it"),
                        ));
                    }
                    Some(pem)
                }
            };
            Some(RedisSettings {
                tls_ca_pem,
                url: Secret::new(url),
                hash_key: Secret::new(hash_key),
                timeout: Duration::from_millis(timeout_ms),
                prefix,
            })
        }
    };
    let refuse_without_redis =
        match present("QUOTA_WITHOUT_REDIS", raw.quota_without_redis)?.as_deref() {
            None | Some("local") => false,
            Some("refuse") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "QUOTA_WITHOUT_REDIS",
                    format!("{other:?} is neither \"local\" nor \"refuse\""),
                ));
            }
        };
    Ok(FleetSettings {
        c1fapp_quota: quota("C1FAPP_QUOTA", raw.c1fapp_quota)?,
        cyberscan_quota: quota("CYBERSCAN_QUOTA", raw.cyberscan_quota)?,
        redis,
        refuse_without_redis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawFleet {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        RawFleet {
            c1fapp_quota: get("C1FAPP_QUOTA"),
            cyberscan_quota: get("CYBERSCAN_QUOTA"),
            redis_url: get("REDIS_URL"),
            redis_hash_key: get("REDIS_HASH_KEY"),
            redis_timeout_ms: get("REDIS_TIMEOUT_MS"),
            redis_key_prefix: get("REDIS_KEY_PREFIX"),
            redis_tls_ca_file: get("REDIS_TLS_CA_FILE"),
            quota_without_redis: get("QUOTA_WITHOUT_REDIS"),
        }
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn nothing_set_is_no_quota_and_no_redis() {
        assert_eq!(parse(raw(&[])).unwrap(), FleetSettings::default());
    }

    #[test]
    fn quotas_and_redis_are_read_and_checked() {
        let fleet = parse(raw(&[
            ("C1FAPP_QUOTA", "60/minute,10000/month"),
            ("REDIS_URL", "redis://:pw@127.0.0.1:6379/0"),
            ("REDIS_HASH_KEY", KEY),
        ]))
        .unwrap();
        assert_eq!(fleet.c1fapp_quota.unwrap().buckets().len(), 2);
        let redis = fleet.redis.unwrap();
        assert_eq!(redis.timeout, Duration::from_millis(50));
        assert_eq!(redis.prefix, "ctr-relay:");
        assert!(!format!("{redis:?}").contains("pw"));
        for (pairs, variable) in [
            (vec![("C1FAPP_QUOTA", "10/fortnight")], "C1FAPP_QUOTA"),
            (vec![("REDIS_URL", "redis://h/0")], "REDIS_HASH_KEY"),
            (
                vec![("REDIS_URL", "redis://h/0"), ("REDIS_HASH_KEY", "short")],
                "REDIS_HASH_KEY",
            ),
            (
                vec![
                    ("REDIS_URL", "http://:secret-pw@h/0"),
                    ("REDIS_HASH_KEY", KEY),
                ],
                "REDIS_URL",
            ),
            (vec![("REDIS_HASH_KEY", KEY)], "REDIS_HASH_KEY"),
            (
                vec![("QUOTA_WITHOUT_REDIS", "maybe")],
                "QUOTA_WITHOUT_REDIS",
            ),
        ] {
            let error = parse(raw(&pairs)).unwrap_err();
            assert_eq!(error.variable, variable, "{pairs:?}");
            assert!(!error.message.contains("secret-pw"));
        }
    }
}
