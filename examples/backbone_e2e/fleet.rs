//! The processes of a run: the mock upstream, an HTTP relay (the reference
//! answers), Backbone relays; their logs, signals and metrics.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

/// The HS256 key the relays verify tokens with.
pub const SECRET: &str = "backbone-e2e-secret-key-0123456789";
/// The relays' own credentials (requests without a token).
pub const ENV_C1FAPP_KEY: &str = "env-c1fapp-key-7f3a";
pub const ENV_CYBERSCAN_KEY: &str = "env-cyberscan-key-91c2";

pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[&str],
        envs: &[(&str, String)],
        work: &Path,
    ) -> Result<Proc, String> {
        let log = work.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|error| error.to_string())?;
        let err = file.try_clone().map_err(|error| error.to_string())?;
        let child = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(envs.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|error| format!("{}: {error}", binary.display()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .map_err(|error| error.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {} failed", self.name))
        }
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn exited(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log, for a failure message.
    pub fn tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or(0)
}

pub async fn listening(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

pub struct Mock {
    /// Held for its `Drop`: the mock stops with the run.
    _proc: Proc,
    pub port: u16,
}

impl Mock {
    pub async fn start(binary: &Path, latency_ms: u64, work: &Path) -> Result<Mock, String> {
        let port = free_port();
        let proc = Proc::spawn(
            "mock-upstream",
            binary,
            &[
                "--port",
                &port.to_string(),
                "--latency-ms",
                &latency_ms.to_string(),
            ],
            &[],
            work,
        )?;
        if !listening(port, Duration::from_secs(10)).await {
            return Err("the mock upstream did not start".to_owned());
        }
        Ok(Mock { _proc: proc, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Settings every relay of a run shares: the mock as both providers.
fn common(mock: &Mock) -> Vec<(&'static str, String)> {
    vec![
        ("HOST", "127.0.0.1".to_owned()),
        ("SECRET_KEY", SECRET.to_owned()),
        ("C1FAPP_API_URL", format!("{}/cifapp/api/", mock.url())),
        ("CYBERSCAN_ALLOW_PRIVATE_HOSTS", "true".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

pub struct HttpRelay {
    pub proc: Proc,
    pub port: u16,
}

impl HttpRelay {
    /// `workers`: its WORKERS (None: one per CPU).
    pub async fn start(
        binary: &Path,
        mock: &Mock,
        work: &Path,
        workers: Option<usize>,
    ) -> Result<HttpRelay, String> {
        let port = free_port();
        let mut envs = common(mock);
        envs.push(("PORT", port.to_string()));
        if let Some(workers) = workers {
            envs.push(("WORKERS", workers.to_string()));
        }
        let proc = Proc::spawn("http-relay", binary, &["serve"], &envs, work)?;
        if !listening(port, Duration::from_secs(10)).await {
            return Err(format!("the HTTP relay did not start:\n{}", proc.tail()));
        }
        Ok(HttpRelay { proc, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/observe/observables", self.port)
    }

    /// `POST /observe/observables`, as the reference answer.
    pub async fn observe(&self, token: &str, observables: &Value) -> Result<Value, String> {
        let response = client()?
            .post(self.url())
            .bearer_auth(token)
            .json(observables)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        response.json().await.map_err(|error| error.to_string())
    }
}

pub struct BusRelay {
    pub proc: Proc,
    pub metrics_port: u16,
}

/// How a Backbone relay is started.
pub struct BusRelayConfig<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub client_id: &'a str,
    pub tls_ca_file: Option<&'a Path>,
    pub prefetch: u16,
    /// More environment variables.
    pub extra: &'a [(&'static str, String)],
}

impl BusRelay {
    pub async fn start(
        binary: &Path,
        mock: &Mock,
        config: &BusRelayConfig<'_>,
        work: &Path,
    ) -> Result<BusRelay, String> {
        let metrics_port = free_port();
        let mut envs = common(mock);
        envs.extend([
            ("BACKBONE_AMQP_URL", config.url.to_owned()),
            ("BACKBONE_CLIENT_ID", config.client_id.to_owned()),
            (
                "BACKBONE_SUBSCRIBE",
                format!("soar.*.{}.observe", config.client_id),
            ),
            ("BACKBONE_METRICS_PORT", metrics_port.to_string()),
            ("BACKBONE_PREFETCH", config.prefetch.to_string()),
            ("C1FAPP_KEY", ENV_C1FAPP_KEY.to_owned()),
            ("CYBERSCAN_API_KEY", ENV_CYBERSCAN_KEY.to_owned()),
            ("CYBERSCAN_HOST", mock.url()),
            ("SHUTDOWN_GRACE_SECONDS", "20".to_owned()),
        ]);
        if let Some(file) = config.tls_ca_file {
            envs.push(("BACKBONE_TLS_CA_FILE", file.display().to_string()));
        }
        envs.extend(config.extra.iter().cloned());
        let proc = Proc::spawn(config.name, binary, &["backbone"], &envs, work)?;
        if !listening(metrics_port, Duration::from_secs(10)).await {
            return Err(format!("{} did not start:\n{}", config.name, proc.tail()));
        }
        Ok(BusRelay { proc, metrics_port })
    }

    /// `ctr_relay_backbone_events_total{event="<event>"}` (0 when absent).
    pub async fn events(&self, event: &str) -> u64 {
        metric(
            self.metrics_port,
            &format!("ctr_relay_backbone_events_total{{event=\"{event}\"}}"),
        )
        .await
    }
}

pub async fn metric(port: u16, series: &str) -> u64 {
    let Ok(client) = client() else { return 0 };
    let Ok(response) = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// An HTTP client (the relay's TLS policy: reqwest here has no default
/// crypto provider).
pub fn client() -> Result<reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            ctr_relay::outbound::Tls::new()
                .and_then(|tls| tls.client(Duration::from_secs(60)))
                .map_err(|error| error.to_string())
        })
        .clone()
}

pub fn token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_default()
}

/// A token carrying the same credentials as the relays' environment.
pub fn env_token(mock: &Mock) -> String {
    token(&json!({
        "key": ENV_C1FAPP_KEY,
        "api_key": ENV_CYBERSCAN_KEY,
        "host": mock.url(),
    }))
}
