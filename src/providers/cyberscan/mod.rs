//! CyberScan, the vulnerability scanner / OSINT portal: observable types `ip`
//! and `domain`.

mod client;
pub mod mapping;

pub use client::CyberScan;

use url::Url;

/// The API address for a `host` claim: `api.cyberscan.io` →
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
