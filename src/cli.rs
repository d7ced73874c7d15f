//! The command line: `serve` (the default), `jwt`, `healthcheck` and `threatbus`.

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::auth::sign;
use crate::domain::{EntitiesLimit, Secret};
use crate::outbound::Tls;

#[derive(Debug, Parser)]
#[command(
    name = "ctr-relay",
    version,
    about = "Threat Response relay for C1fApp and CyberScan"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (the default). Configured by environment variables.
    #[command(after_help = SERVE_ENVIRONMENT)]
    Serve,
    /// Try the relay offline: serve it (PORT, HOST and the other variables
    /// as for serve) against built-in demo services on loopback that answer
    /// as C1fApp and CyberScan do, with demo data, and print a curl command
    /// with a token for them.
    Demo,
    /// Print an HS256 JWT carrying provider credentials, for a module's
    /// configuration. Signs with SECRET_KEY from the environment, or prints a
    /// new random SECRET_KEY first when it is unset.
    Jwt(JwtArgs),
    /// Ask the local relay's GET /watchdog (on PORT, default 9090) and exit 0
    /// when it answers correctly, 1 otherwise. For container health checks.
    Healthcheck(HealthcheckArgs),
    /// Enrich indicators from a Threat Bus (ZeroMQ app plugin) and publish a
    /// STIX 2.1 sighting per finding. Provider credentials come from
    /// C1FAPP_KEY, CYBERSCAN_API_KEY and CYBERSCAN_HOST; the other variables
    /// (C1FAPP_API_URL, CTR_ENTITIES_LIMIT, UPSTREAM_TIMEOUT_SECONDS,
    /// LOOKUP_CONCURRENCY, RUST_LOG, …) as for the server.
    Threatbus(ThreatbusArgs),
    /// Answer enrichment requests from a Communications Backbone (RabbitMQ):
    /// read them from <client-id>-inbox, reply on <client-id>-outbox.
    /// Provider credentials of requests without a token come from C1FAPP_KEY,
    /// CYBERSCAN_API_KEY and CYBERSCAN_HOST; the other variables
    /// (SECRET_KEY, JWKS_HOSTS, RELAY_AUDIENCE, C1FAPP_API_URL, limits,
    /// RUST_LOG, …) as for the server.
    Backbone(BackboneArgs),
}

/// `serve --help`: the variables it reads (docs/configuration.md says more).
pub const SERVE_ENVIRONMENT: &str = "\
Environment (docs/configuration.md says more):
  PORT, HOST                      where to listen (9090, 0.0.0.0)
  SECRET_KEY                      HS256 key; unset: HS256 tokens are refused
  JWKS_HOSTS, RELAY_AUDIENCE      RS256 tokens: allowed jwks_host values (none: refused), expected aud
  JWKS_MAX_AGE_SECONDS            how long a fetched key set is trusted (900)
  CTR_ENTITIES_LIMIT              entities of each type per observable and provider (100)
  C1FAPP_API_URL                  the C1fApp endpoint
  UPSTREAM_TIMEOUT_SECONDS        bound on each upstream call (10)
  UPSTREAM_USER_AGENT             User-Agent of upstream calls (ctr-relay/<version>)
  UPSTREAM_MAX_IN_FLIGHT, UPSTREAM_MAX_IN_FLIGHT_PER_HOST, UPSTREAM_MAX_IN_FLIGHT_PER_CREDENTIAL
                                  calls in flight per provider, per host, per credential
  CYBERSCAN_ALLOW_PRIVATE_HOSTS   let tokens point CyberScan at private addresses (false)
  CYBERSCAN_USE_PROXY             send CyberScan calls through HTTPS_PROXY (false)
  MAX_REQUEST_BYTES, MAX_OBSERVABLES, LOOKUP_CONCURRENCY
                                  bounds on one request
  REQUEST_TIMEOUT_SECONDS, REQUEST_MAX_UPSTREAM_BYTES, REQUEST_MAX_RESPONSE_BYTES
                                  one request's deadline and memory budget
  ANSWER_SEND_TIMEOUT_SECONDS     how long a large answer may take to be read (20)
  C1FAPP_QUOTA, CYBERSCAN_QUOTA   each key's quota, e.g. 60/minute,10000/month (none)
  REDIS_URL, REDIS_HASH_KEY       the Redis the fleet shares quotas through (none)
  REDIS_TIMEOUT_MS                bound on each Redis call (50)
  REDIS_KEY_PREFIX                prefix of every Redis key (ctr-relay:)
  REDIS_TLS_CA_FILE               CA certificates (PEM) to trust for rediss:// (none)
  QUOTA_WITHOUT_REDIS             local or refuse, while Redis does not answer (local)
  MAX_HELD_BYTES, MAX_HELD_BYTES_PER_TENANT
                                  what all requests, and one tenant's, may hold together
  MAX_UPSTREAM_RESPONSE_BYTES     largest upstream answer read
  RESULT_CACHE_TTL_SECONDS, RESULT_CACHE_MAX_ENTRIES, RESULT_CACHE_MAX_BYTES
                                  the result cache (off unless a TTL is set)
  WORKERS, SHUTDOWN_GRACE_SECONDS worker threads (one per CPU), grace at SIGTERM (30)
  SHUTDOWN_DELAY_SECONDS          after SIGTERM: /readyz 503, listener still open (0)
  METRICS_PORT                    serve /metrics on this port instead of PORT
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
                                  export traces over OTLP/HTTP (off unless set), with
  OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT,
  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER,
  OTEL_TRACES_SAMPLER_ARG, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY,
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_SDK_DISABLED
  UPSTREAM_TRACEPARENT            send traceparent on to the providers (false)
  RUST_LOG, LOG_FORMAT            log filter (info), json or text (json)";

#[derive(Debug, Clone, Args)]
pub struct BackboneArgs {
    /// The broker: amqp://user:pass@host:5672/vhost (the default vhost is
    /// %2f) or amqps://… Never logged.
    #[arg(long, env = "BACKBONE_AMQP_URL", hide_env_values = true)]
    pub amqp_url: String,
    /// The relay's client id on the Backbone: its queues are <id>-inbox,
    /// <id>-outbox and <id>-notify. Relays with the same id share the inbox.
    #[arg(long, env = "BACKBONE_CLIENT_ID", default_value = "ctr-relay")]
    pub client_id: String,
    /// Topic patterns (comma-separated) the inbox is bound to on the
    /// soar-publish exchange.
    #[arg(
        long,
        env = "BACKBONE_SUBSCRIBE",
        default_value = "soar.*.ctr-relay.observe",
        value_delimiter = ','
    )]
    pub subscribe: Vec<String>,
    /// The topic of replies to requests that name no reply_topic.
    #[arg(
        long,
        env = "BACKBONE_REPLY_TOPIC",
        default_value = "soar.ctr-relay.observe.result"
    )]
    pub reply_topic: String,
    /// Requests delivered and not yet acknowledged, at most.
    #[arg(long, env = "BACKBONE_PREFETCH", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// The largest message the broker takes (RabbitMQ's max_message_size,
    /// 128 MiB unless set): a larger answer becomes an error reply naming it.
    #[arg(long, env = "BACKBONE_MAX_MESSAGE_BYTES", default_value_t = 134_217_728,
          value_parser = clap::value_parser!(u64).range(4096..=536_870_912))]
    pub max_message_bytes: u64,
    /// A PEM file of CA certificates to trust for amqps://, besides the
    /// bundled public roots.
    #[arg(long, env = "BACKBONE_TLS_CA_FILE")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Serve GET /metrics and GET /watchdog on this port (HOST as for the server).
    #[arg(long, env = "BACKBONE_METRICS_PORT")]
    pub metrics_port: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct ThreatbusArgs {
    /// Threat Bus's manage endpoint (its ZeroMQ app plugin).
    #[arg(
        long,
        env = "THREATBUS_MANAGE",
        default_value = "tcp://127.0.0.1:13370"
    )]
    pub manage: String,
    /// A Threat Bus topic to subscribe to (stix2/<type>); repeat it, or
    /// separate topics by commas, for several in one subscription.
    #[arg(
        long = "topic",
        env = "THREATBUS_TOPICS",
        value_delimiter = ',',
        default_value = "stix2/indicator"
    )]
    pub topics: Vec<String>,
    /// Ask Threat Bus to replay this many days of indicators at subscription.
    #[arg(long, env = "THREATBUS_SNAPSHOT_DAYS", default_value_t = 0)]
    pub snapshot: u32,
    /// Serve GET /metrics and GET /watchdog on this port (HOST as for the server).
    #[arg(long, env = "THREATBUS_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Indicators waiting for a lookup; indicators arriving to a full queue
    /// are dropped and counted (`dropped`).
    #[arg(long, env = "THREATBUS_QUEUE", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue: u32,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

/// The address `healthcheck` asks: the relay's own port on the loopback
/// address of the listen address's family (a specific listen address as is).
pub fn watchdog_url(host: std::net::IpAddr, port: u16) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let host = match host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    match host {
        IpAddr::V4(ip) => format!("http://{ip}:{port}/watchdog"),
        IpAddr::V6(ip) => format!("http://[{ip}]:{port}/watchdog"),
    }
}

/// One GET of `url` with a fresh `Health-Check` value; `Ok` when the relay
/// echoes it back.
pub async fn healthcheck(url: &str, timeout: std::time::Duration) -> Result<(), String> {
    let probe = uuid::Uuid::new_v4().to_string();
    // The relay's own loopback port: never through a proxy.
    let client = Tls::new()
        .and_then(|tls| Ok(tls.client_builder(timeout).no_proxy().build()?))
        .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
    let response = client
        .get(url)
        .header("Health-Check", &probe)
        .send()
        .await
        .map_err(|error| format!("{url}: {error}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|error| format!("{url}: HTTP {status}, not JSON: {error}"))?;
    if status.is_success()
        && body.get("data").and_then(|data| data.as_str()) == Some(probe.as_str())
    {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {status}: {body}"))
    }
}

#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// C1fApp API key (the `key` claim).
    #[arg(long)]
    pub c1fapp_key: Option<String>,
    /// CyberScan API key (the `api_key` claim); needs --cyberscan-host.
    #[arg(long, requires = "cyberscan_host")]
    pub cyberscan_api_key: Option<String>,
    /// CyberScan API host, e.g. api.cyberscan.io (the `host` claim).
    #[arg(long, requires = "cyberscan_api_key")]
    pub cyberscan_host: Option<String>,
    /// Entities of each type per observable and provider (CTR_ENTITIES_LIMIT claim).
    #[arg(long, value_parser = parse_limit)]
    pub entities_limit: Option<usize>,
    /// Make the token expire after this many days (default: no expiry).
    #[arg(long)]
    pub expires_in_days: Option<u32>,
}

fn parse_limit(text: &str) -> Result<usize, String> {
    EntitiesLimit::parse(text)
        .map(EntitiesLimit::get)
        .ok_or_else(|| format!("{text:?} is not a positive integer"))
}

#[derive(Serialize)]
struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(rename = "CTR_ENTITIES_LIMIT", skip_serializing_if = "Option::is_none")]
    entities_limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
}

/// What `ctr-relay jwt` prints.
#[derive(Debug)]
pub struct Minted {
    /// Set when the key was generated here and must be given to the relay.
    pub new_secret_key: Option<Secret>,
    pub token: String,
}

impl Minted {
    /// `SECRET_KEY=…` (only when generated) and `JWT=…`, one per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(secret) = &self.new_secret_key {
            out.push_str(&format!("SECRET_KEY={}\n", secret.expose()));
        }
        out.push_str(&format!("JWT={}\n", self.token));
        out
    }
}

/// Signs the credentials of `args` with `secret_key`, or with a new key.
pub fn mint(args: &JwtArgs, secret_key: Option<Secret>) -> Result<Minted, String> {
    check(args)?;
    let (secret, new_secret_key) = match secret_key {
        Some(secret) => (secret, None),
        None => {
            let secret = sign::new_secret_key();
            (secret.clone(), Some(secret))
        }
    };
    let payload = Payload {
        key: args.c1fapp_key.as_deref(),
        api_key: args.cyberscan_api_key.as_deref(),
        host: args.cyberscan_host.as_deref(),
        entities_limit: args.entities_limit,
        exp: args
            .expires_in_days
            .map(|days| chrono::Utc::now().timestamp() + i64::from(days) * 86_400),
    };
    let token = sign::hs256(&payload, &secret)?;
    Ok(Minted {
        new_secret_key,
        token,
    })
}

/// What would make a token the relay cannot use: no provider, a blank
/// value, half of CyberScan's pair, a host the relay cannot make an API
/// address of, an expiry of 0 days.
fn check(args: &JwtArgs) -> Result<(), String> {
    let blank = |value: &Option<String>| value.as_deref().is_some_and(|v| v.trim().is_empty());
    for (option, value) in [
        ("--c1fapp-key", &args.c1fapp_key),
        ("--cyberscan-api-key", &args.cyberscan_api_key),
        ("--cyberscan-host", &args.cyberscan_host),
    ] {
        if blank(value) {
            return Err(format!("{option} is empty"));
        }
    }
    match (&args.cyberscan_api_key, &args.cyberscan_host) {
        (Some(_), None) => return Err("--cyberscan-api-key needs --cyberscan-host".to_owned()),
        (None, Some(_)) => return Err("--cyberscan-host needs --cyberscan-api-key".to_owned()),
        (Some(_), Some(host)) => {
            crate::domain::api_base_url(host)
                .map_err(|error| format!("--cyberscan-host: {error}"))?;
        }
        (None, None) if args.c1fapp_key.is_none() => {
            return Err(
                "give the credentials of at least one provider: --c1fapp-key, or \
                 --cyberscan-api-key with --cyberscan-host"
                    .to_owned(),
            );
        }
        (None, None) => {}
    }
    if args.expires_in_days == Some(0) {
        return Err("--expires-in-days 0 would make a token that has already expired".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::{Value, json};

    fn args() -> JwtArgs {
        JwtArgs {
            c1fapp_key: Some("c1f".to_owned()),
            cyberscan_api_key: None,
            cyberscan_host: None,
            entities_limit: Some(5),
            expires_in_days: None,
        }
    }

    fn claims(token: &str, secret: &Secret) -> Value {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_secret(secret.expose().as_bytes()),
            &validation,
        )
        .unwrap()
        .claims
    }

    #[test]
    fn without_a_key_a_new_one_is_made_and_printed() {
        let minted = mint(&args(), None).unwrap();
        let secret = minted.new_secret_key.clone().unwrap();
        assert_eq!(secret.expose().len(), 43);
        assert_eq!(
            claims(&minted.token, &secret),
            json!({"key": "c1f", "CTR_ENTITIES_LIMIT": 5})
        );
        let printed = minted.render();
        assert!(printed.starts_with(&format!("SECRET_KEY={}\nJWT=", secret.expose())));
    }

    #[test]
    fn an_existing_key_signs_and_is_not_printed() {
        let secret = Secret::new("existing");
        let mut args = args();
        args.cyberscan_api_key = Some("cs".to_owned());
        args.cyberscan_host = Some("api.cyberscan.io".to_owned());
        args.entities_limit = None;
        let minted = mint(&args, Some(secret.clone())).unwrap();
        assert!(minted.new_secret_key.is_none());
        assert!(!minted.render().contains("existing"));
        assert_eq!(
            claims(&minted.token, &secret),
            json!({"key": "c1f", "api_key": "cs", "host": "api.cyberscan.io"})
        );
    }

    #[test]
    fn expiry_is_optional() {
        let mut args = args();
        args.expires_in_days = Some(1);
        let secret = Secret::new("s");
        let minted = mint(&args, Some(secret.clone())).unwrap();
        let exp = claims(&minted.token, &secret)["exp"].as_i64().unwrap();
        assert!((exp - chrono::Utc::now().timestamp() - 86_400).abs() < 60);
    }

    #[test]
    fn some_credentials_are_required() {
        let mut args = args();
        args.c1fapp_key = None;
        assert!(mint(&args, None).is_err());
    }

    #[test]
    fn what_the_relay_could_not_use_is_refused() {
        type Change = fn(&mut JwtArgs);
        let cases: [(&str, Change); 8] = [
            ("--c1fapp-key is empty", |a| {
                a.c1fapp_key = Some(String::new())
            }),
            ("--c1fapp-key is empty", |a| {
                a.c1fapp_key = Some("  ".into())
            }),
            ("--cyberscan-api-key is empty", |a| {
                a.cyberscan_api_key = Some(" ".into());
                a.cyberscan_host = Some("api.cyberscan.io".into());
            }),
            ("--cyberscan-host needs --cyberscan-api-key", |a| {
                a.cyberscan_host = Some("api.cyberscan.io".into())
            }),
            ("--cyberscan-api-key needs --cyberscan-host", |a| {
                a.cyberscan_api_key = Some("cs".into())
            }),
            ("--cyberscan-host: ", |a| {
                a.cyberscan_api_key = Some("cs".into());
                a.cyberscan_host = Some("not a host".into());
            }),
            ("--cyberscan-host: ", |a| {
                a.cyberscan_api_key = Some("cs".into());
                a.cyberscan_host = Some("ftp://api.cyberscan.io".into());
            }),
            ("--expires-in-days 0", |a| a.expires_in_days = Some(0)),
        ];
        for (expected, change) in cases {
            let mut args = args();
            change(&mut args);
            let error = mint(&args, None).map(|_| ()).unwrap_err();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn healthcheck_asks_the_loopback_address_of_the_listen_family() {
        assert_eq!(
            watchdog_url("0.0.0.0".parse().unwrap(), 9090),
            "http://127.0.0.1:9090/watchdog"
        );
        assert_eq!(
            watchdog_url("::".parse().unwrap(), 80),
            "http://[::1]:80/watchdog"
        );
        assert_eq!(
            watchdog_url("10.0.0.5".parse().unwrap(), 9090),
            "http://10.0.0.5:9090/watchdog"
        );
    }

    #[test]
    fn serve_help_names_every_variable_the_relay_reads() {
        for variable in crate::config::VARIABLES {
            assert!(SERVE_ENVIRONMENT.contains(variable), "{variable}");
        }
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["ctr-relay", "jwt", "--c1fapp-key", "k"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Jwt(_))));
        let cli = Cli::try_parse_from(["ctr-relay", "healthcheck", "--timeout", "1"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Healthcheck(HealthcheckArgs { timeout: 1 }))
        ));
        assert!(Cli::try_parse_from(["ctr-relay", "jwt", "--cyberscan-api-key", "k"]).is_err());
        assert!(Cli::try_parse_from(["ctr-relay", "jwt", "--entities-limit", "0"]).is_err());
    }
}
