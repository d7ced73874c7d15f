//! Provider credentials from the environment, for the modes without a token
//! per request (Threat Bus; Communications Backbone messages without one):
//! `C1FAPP_KEY`, and `CYBERSCAN_API_KEY` with `CYBERSCAN_HOST`.

use super::ConfigError;
use crate::domain::{C1fAppCredentials, Credentials, CyberScanCredentials, Secret};

/// At least one provider must be configured, and CyberScan completely or not
/// at all; an empty value is an error naming its variable.
pub fn credentials_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, ConfigError> {
    optional_credentials_from(lookup)?.ok_or_else(|| {
        ConfigError::new(
            "C1FAPP_KEY",
            "no provider is configured: set C1FAPP_KEY, or CYBERSCAN_API_KEY and \
             CYBERSCAN_HOST, or both",
        )
    })
}

/// As [`credentials_from`], but no provider at all is `None` (Backbone mode,
/// where requests may bring their own token).
pub fn optional_credentials_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, ConfigError> {
    let value = |name: &'static str| match lookup(name) {
        Some(text) if text.trim().is_empty() => Err(ConfigError::new(
            name,
            "is set but empty; unset it to leave the provider out",
        )),
        Some(text) => Ok(Some(text.trim().to_owned())),
        None => Ok(None),
    };
    // The environment's credentials take the operator's quota
    // (`C1FAPP_QUOTA`, `CYBERSCAN_QUOTA`), applied where calls are made.
    let c1fapp = value("C1FAPP_KEY")?.map(|key| C1fAppCredentials {
        key: Secret::new(key),
        quota: None,
    });
    let cyberscan = match (value("CYBERSCAN_API_KEY")?, value("CYBERSCAN_HOST")?) {
        (Some(api_key), Some(host)) => Some(
            CyberScanCredentials::new(api_key, &host)
                .map_err(|message| ConfigError::new("CYBERSCAN_HOST", message))?,
        ),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "CYBERSCAN_HOST",
                "is needed with CYBERSCAN_API_KEY",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "CYBERSCAN_API_KEY",
                "is needed with CYBERSCAN_HOST",
            ));
        }
    };
    if c1fapp.is_none() && cyberscan.is_none() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        c1fapp,
        cyberscan,
        entities_limit: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn credentials(vars: &[(&str, &str)]) -> Result<Credentials, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        credentials_from(|name| vars.get(name).cloned())
    }

    #[test]
    fn credentials_come_from_the_environment() {
        let both = credentials(&[
            ("C1FAPP_KEY", "c1"),
            ("CYBERSCAN_API_KEY", "cs"),
            ("CYBERSCAN_HOST", "api.cyberscan.io"),
        ])
        .unwrap();
        assert_eq!(both.c1fapp.unwrap().key, Secret::new("c1"));
        let cyberscan = both.cyberscan.unwrap();
        assert_eq!(cyberscan.api.as_str(), "https://api.cyberscan.io/api/v1");
        let alone = credentials(&[("C1FAPP_KEY", "c1")]).unwrap();
        assert!(alone.cyberscan.is_none());
    }

    #[test]
    fn missing_or_half_credentials_name_the_variable() {
        let variable = |vars: &[(&str, &str)]| credentials(vars).unwrap_err().variable;
        assert_eq!(variable(&[]), "C1FAPP_KEY");
        assert_eq!(variable(&[("C1FAPP_KEY", " ")]), "C1FAPP_KEY");
        assert_eq!(variable(&[("CYBERSCAN_API_KEY", "cs")]), "CYBERSCAN_HOST");
        assert_eq!(
            variable(&[("CYBERSCAN_HOST", "api.cyberscan.io")]),
            "CYBERSCAN_API_KEY"
        );
        assert_eq!(
            variable(&[("CYBERSCAN_API_KEY", "cs"), ("CYBERSCAN_HOST", "ftp://x")]),
            "CYBERSCAN_HOST"
        );
    }
}
