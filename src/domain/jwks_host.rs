//! An allowlisted `jwks_host`: the only hosts the relay will ever fetch a key set from.

use std::fmt;

use url::Url;

/// One entry of `JWKS_HOSTS`. Constructed only from configuration, never from a
/// token: a token can only *select* one of these, by its authority.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwksHost {
    /// `host` or `host:port`, lower case, as a token's `jwks_host` must name it.
    authority: String,
    /// `https://<authority>/.well-known/jwks` (or `http://` when the entry says so).
    jwks_url: Url,
}

impl JwksHost {
    /// Parses an allowlist entry: `host`, `host:port`, or either with an explicit
    /// `https://` or `http://` (plain http is for tests and local setups).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => ("https", rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => ("http", rest),
            Some((scheme, _)) => return Err(format!("unsupported scheme {scheme:?} in {entry:?}")),
            None => ("https", entry),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty()
            || rest.contains(['/', '?', '#', '@'])
            || rest.contains(char::is_whitespace)
        {
            return Err(format!("{entry:?} is not a host name (host or host:port)"));
        }
        let base = Url::parse(&format!("{scheme}://{rest}/"))
            .map_err(|error| format!("{entry:?} is not a host name: {error}"))?;
        let host = base
            .host_str()
            .ok_or_else(|| format!("{entry:?} has no host"))?;
        let authority = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let jwks_url = base
            .join(".well-known/jwks")
            .map_err(|error| format!("{entry:?}: {error}"))?;
        Ok(Self {
            authority,
            jwks_url,
        })
    }

    /// Whether a token's `jwks_host` claim names this entry.
    pub fn matches(&self, claimed: &str) -> bool {
        self.authority.eq_ignore_ascii_case(claimed.trim())
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn jwks_url(&self) -> &Url {
        &self.jwks_url
    }
}

impl fmt::Display for JwksHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_uses_https() {
        let host = JwksHost::parse("visibility.amp.cisco.com").unwrap();
        assert_eq!(host.authority(), "visibility.amp.cisco.com");
        assert_eq!(
            host.jwks_url().as_str(),
            "https://visibility.amp.cisco.com/.well-known/jwks"
        );
    }

    #[test]
    fn an_http_entry_keeps_its_scheme_and_port() {
        let host = JwksHost::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(host.authority(), "127.0.0.1:8080");
        assert_eq!(
            host.jwks_url().as_str(),
            "http://127.0.0.1:8080/.well-known/jwks"
        );
        assert!(host.matches("127.0.0.1:8080"));
        assert!(!host.matches("127.0.0.1"));
    }

    #[test]
    fn matching_is_exact_on_the_authority_and_ignores_case() {
        let host = JwksHost::parse("Visibility.AMP.cisco.com").unwrap();
        assert!(host.matches("visibility.amp.cisco.com"));
        assert!(!host.matches("visibility.amp.cisco.com.evil.example"));
        assert!(!host.matches("evil.example/visibility.amp.cisco.com"));
        assert!(!host.matches("https://visibility.amp.cisco.com"));
    }

    #[test]
    fn entries_with_paths_credentials_or_other_schemes_are_rejected() {
        for entry in [
            "",
            "https://",
            "ftp://example.com",
            "example.com/path",
            "user@example.com",
            "example.com?x=1",
            "exa mple.com",
        ] {
            assert!(JwksHost::parse(entry).is_err(), "{entry:?}");
        }
    }
}
