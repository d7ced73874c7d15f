//! `ctr-relay demo`: the relay's first request, offline. Built-in stand-ins
//! for C1fApp and CyberScan (`upstream`, loopback only, demo data labelled
//! as such), the settings that point the relay at them, and a token for
//! them. `src/main.rs` serves the real HTTP relay (`http::Application`, the
//! same code path as `serve`) with these settings; nothing here is used
//! outside `demo`.

mod upstream;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use url::Url;

use crate::auth::sign;
use crate::config::Settings;
use crate::domain::Secret;

pub use upstream::DemoUpstream;

/// The request body the printed command sends.
pub const OBSERVABLES: &str =
    r#"[{"type":"ip","value":"198.51.100.7"},{"type":"domain","value":"demo.example.net"}]"#;

/// `base` (the environment's settings, so PORT and the rest keep their
/// rules) made safe to try: it listens on loopback unless `HOST` was given
/// (`host_given`), accepts only its own HS256 token (a new `SECRET_KEY`; no
/// key-set host, so no XDR token), asks C1fApp at the demo service, and lets
/// CyberScan reach no private address but the demo service's. Also the key.
pub fn settings(
    mut base: Settings,
    upstream_port: u16,
    host_given: bool,
) -> Result<(Settings, Secret), String> {
    let secret = sign::new_secret_key();
    if !host_given {
        base.host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    }
    base.secret_key = Some(secret.clone());
    base.jwks.hosts = Vec::new();
    base.upstream.c1fapp_api_url =
        Url::parse(&format!("http://127.0.0.1:{upstream_port}/cifapp/api/"))
            .map_err(|error| error.to_string())?;
    base.upstream.allow_private_hosts = false;
    base.upstream.private_allowed = vec![SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        upstream_port,
    )];
    Ok((base, secret))
}

/// A token for both demo services, signed with `secret`.
pub fn token(secret: &Secret, upstream_port: u16) -> Result<String, String> {
    sign::hs256(
        &serde_json::json!({
            "key": upstream::C1FAPP_KEY,
            "api_key": upstream::CYBERSCAN_KEY,
            "host": format!("http://127.0.0.1:{upstream_port}"),
        }),
        secret,
    )
}

/// What `demo` prints: what is running, and a command to paste.
pub fn instructions(relay: &str, token: &str) -> String {
    format!(
        "\nctr-relay demo: the relay serves on {relay}, asking built-in demo services on \
         loopback instead of C1fApp and CyberScan.\n\
         Their answers are DEMO DATA, not threat intelligence. The token below is valid \
         for this run only (a new SECRET_KEY each run). Try:\n\n\
         curl -s -X POST {relay}/observe/observables -H 'Authorization: Bearer {token}' \
         -H 'Content-Type: application/json' -d '{OBSERVABLES}'\n\n\
         Ctrl-C stops it.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_settings_point_at_the_demo_services_with_a_fresh_key() {
        let base = Settings::default();
        let (a, key) = settings(base.clone(), 4000, false).unwrap();
        let (b, _) = settings(base.clone(), 4000, false).unwrap();
        assert_eq!(a.secret_key.as_ref().unwrap().expose(), key.expose());
        assert_eq!(
            a.upstream.c1fapp_api_url.as_str(),
            "http://127.0.0.1:4000/cifapp/api/"
        );
        assert!(!a.upstream.allow_private_hosts, "no private host...");
        assert_eq!(
            a.upstream.private_allowed,
            vec!["127.0.0.1:4000".parse::<SocketAddr>().unwrap()],
            "...but the demo's own services"
        );
        assert!(a.jwks.hosts.is_empty(), "no XDR token is accepted");
        assert_eq!(
            a.host.to_string(),
            "127.0.0.1",
            "loopback unless HOST is given"
        );
        let (given, _) = settings(base, 4000, true).unwrap();
        assert_eq!(given.host.to_string(), "0.0.0.0", "HOST as given");
        assert_ne!(
            a.secret_key.unwrap().expose(),
            b.secret_key.unwrap().expose()
        );
        assert_eq!(a.port, 9090, "the port rules of serve");
    }

    #[test]
    fn the_printed_command_is_one_line_with_the_token() {
        let text = instructions("http://127.0.0.1:9090", "t.o.k");
        let command = text.lines().find(|line| line.starts_with("curl ")).unwrap();
        assert!(command.contains("Bearer t.o.k"));
        assert!(command.contains(OBSERVABLES));
    }
}
