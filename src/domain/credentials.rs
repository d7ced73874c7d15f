//! Provider credentials, whoever supplies them: a verified token (HTTP, Backbone)
//! or the environment (Threat Bus, Backbone).

use url::Url;

use super::limit::EntitiesLimit;
use super::quota::Quota;
use super::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C1fAppCredentials {
    pub key: Secret,
    /// The caller's own quota for this key (its token's `c1fapp_quota`);
    /// `None`: the operator's `C1FAPP_QUOTA`, if any.
    pub quota: Option<Quota>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CyberScanCredentials {
    pub api_key: Secret,
    /// `https://<host>/api/v1`, from the `host` the caller gave.
    pub api: Url,
    /// The caller's own quota for this key (its token's `cyberscan_quota`);
    /// `None`: the operator's `CYBERSCAN_QUOTA`, if any.
    pub quota: Option<Quota>,
}

impl CyberScanCredentials {
    /// Credentials for the CyberScan API at `host` (see [`api_base_url`]).
    pub fn new(api_key: impl Into<String>, host: &str) -> Result<Self, String> {
        Ok(Self {
            api_key: Secret::new(api_key),
            api: api_base_url(host)?,
            quota: None,
        })
    }
}

/// The provider credentials and options of one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub c1fapp: Option<C1fAppCredentials>,
    pub cyberscan: Option<CyberScanCredentials>,
    /// The caller's own `CTR_ENTITIES_LIMIT`, when it gave a usable one.
    pub entities_limit: Option<EntitiesLimit>,
}

/// The API address for a CyberScan `host`: `api.cyberscan.io` →
/// `https://api.cyberscan.io/api/v1`. A value with an explicit `http://` or
/// `https://` keeps its scheme, port and path, and gets `/api/v1` appended
/// unless it already ends with it.
pub fn api_base_url(host: &str) -> Result<Url, String> {
    let host = host.trim();
    let with_scheme = match host.split_once("://") {
        Some(_) => host.to_owned(),
        None => format!("https://{host}"),
    };
    let mut url =
        Url::parse(&with_scheme).map_err(|error| format!("{host:?} is not a host: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{host:?}: only http and https are supported"));
    }
    if !url.has_host() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{host:?} must name a host, without credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{host:?} must not carry a query or fragment"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/api/v1") {
        url.set_path(&format!("{path}/api/v1"));
    } else {
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(host: &str) -> String {
        api_base_url(host).unwrap().to_string()
    }

    #[test]
    fn a_bare_host_is_reached_over_https() {
        assert_eq!(base("api.cyberscan.io"), "https://api.cyberscan.io/api/v1");
        assert_eq!(
            base("api.cyberscan.io:8443"),
            "https://api.cyberscan.io:8443/api/v1"
        );
        assert_eq!(
            base(" api.cyberscan.io/ "),
            "https://api.cyberscan.io/api/v1"
        );
    }

    #[test]
    fn an_explicit_scheme_is_kept() {
        assert_eq!(
            base("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/api/v1"
        );
        assert_eq!(
            base("https://cs.example/prefix/"),
            "https://cs.example/prefix/api/v1"
        );
        assert_eq!(
            base("http://127.0.0.1:8080/api/v1/"),
            "http://127.0.0.1:8080/api/v1"
        );
    }

    #[test]
    fn values_that_are_not_hosts_are_refused() {
        for host in [
            "",
            "ftp://x.example",
            "https://user:pw@x.example",
            "x.example?a=1",
            "http://",
        ] {
            assert!(api_base_url(host).is_err(), "{host:?}");
        }
    }
}
