//! `ctr-relay backbone` end to end, against a real RabbitMQ (started by
//! `scripts/backbone-e2e.sh`) and the repo's mock upstream: the scenarios of
//! the Backbone contract, their counts, and (with `--bench`) requests per
//! second through the bus beside the HTTP API in the same run.
//!
//! ```sh
//! scripts/backbone-e2e.sh          # the scenarios
//! bench/backbone.sh                # the benchmark
//! ```

mod bench;
mod bus;
mod compare;
mod fleet;
mod scenarios;
mod traces;
mod undeliverable;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use bus::{Bus, collect};
use fleet::{ENV_C1FAPP_KEY, ENV_CYBERSCAN_KEY, HttpRelay, Mock, env_token};
use scenarios::{CLIENT, Run, Settings, Totals};

#[derive(Debug, Parser)]
#[command(about = "ctr-relay backbone, end to end on a real RabbitMQ")]
struct Args {
    /// The relay binary.
    #[arg(long)]
    relay: PathBuf,
    /// The mock upstream binary (examples/mock_upstream.rs).
    #[arg(long)]
    mock: PathBuf,
    /// Logs of every process go here.
    #[arg(long)]
    work_dir: PathBuf,
    /// The broker, with a user allowed to configure, write and read.
    #[arg(long)]
    amqp_url: String,
    /// An amqps:// listener of the same broker, with a certificate from
    /// --tls-ca-file's CA.
    #[arg(long)]
    amqps_url: Option<String>,
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// A shell command that stops the broker (cleanly) and returns once it
    /// is down.
    #[arg(long, default_value = "false")]
    broker_stop: String,
    /// A shell command that starts the broker again and returns once it is up.
    #[arg(long, default_value = "false")]
    broker_start: String,
    /// `rabbitmqctl` for the broker, options included (policies, settings).
    #[arg(long, default_value = "false")]
    broker_ctl: String,
    /// The broker's pid file (the benchmark reports its CPU time).
    #[arg(long)]
    broker_pid_file: Option<PathBuf>,
    /// Requests per batch in the scale-out, kill and restart scenarios.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// The mock's delay per upstream call, in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Stop after the first scenario whose name contains this (the earlier
    /// ones set up what later ones use).
    #[arg(long)]
    until: Option<String>,
    /// Measure throughput instead of running the scenarios.
    #[arg(long)]
    bench: bool,
    /// The relays' BACKBONE_PREFETCH in the benchmark (and the HTTP
    /// callers per worker).
    #[arg(long, default_value_t = 32)]
    bench_prefetch: u16,
    /// Seconds per benchmark row.
    #[arg(long, default_value_t = 10)]
    bench_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if args.bench {
        bench::run(&args).await
    } else {
        scenarios_run(args).await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("FAIL: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn scenarios_run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    let mock = Mock::start(&args.mock, args.latency_ms, &args.work_dir).await?;
    let http = HttpRelay::start(&args.relay, &mock, &args.work_dir, None).await?;
    let bus = Bus::connect(&args.amqp_url, None).await?;
    bus.declare().await?;
    let replies = collect(args.amqp_url.clone(), None, format!("{CLIENT}-outbox"));
    let notify = collect(args.amqp_url.clone(), None, format!("{CLIENT}-notify"));
    let password = args
        .amqp_url
        .parse::<lapin::uri::AMQPUri>()
        .map(|uri| uri.authority.userinfo.password)
        .unwrap_or_default();
    let secrets = [
        password,
        ENV_C1FAPP_KEY.to_owned(),
        ENV_CYBERSCAN_KEY.to_owned(),
        "tenant-c1fapp-key-records-1".to_owned(),
        env_token(&mock),
    ];
    let until = args.until.clone();
    let logs = vec![http.proc.log.clone()];
    let mut run = Run {
        settings: Settings {
            relay: args.relay,
            work: args.work_dir,
            url: args.amqp_url,
            amqps_url: args.amqps_url,
            tls_ca_file: args.tls_ca_file,
            broker_stop: args.broker_stop,
            broker_start: args.broker_start,
            broker_ctl: args.broker_ctl,
            requests: args.requests,
        },
        mock,
        http,
        bus,
        replies,
        notify,
        relays: Vec::new(),
        logs,
        totals: Totals::default(),
    };

    type Step =
        for<'a> fn(&'a mut Run) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;
    let steps: [(&str, Step); 14] = [
        ("the relay starts and announces `online`", |run| {
            Box::pin(scenarios::online(run))
        }),
        ("a ten-observable request: the same data as HTTP", |run| {
            Box::pin(scenarios::same_as_http(run))
        }),
        ("a token's credentials; a forged token", |run| {
            Box::pin(scenarios::tokens(run))
        }),
        ("malformed messages, broadcasts, other traffic", |run| {
            Box::pin(scenarios::malformed(run))
        }),
        ("messages of 64 MiB", |run| Box::pin(scenarios::flood(run))),
        ("an outbox that refuses publishes", |run| {
            Box::pin(undeliverable::outbox_full(run))
        }),
        ("replies over the broker's maximum message size", |run| {
            Box::pin(undeliverable::reply_over_max_size(run))
        }),
        ("1 MiB replies beside rejected deliveries", |run| {
            Box::pin(undeliverable::large_replies_beside_rejects(run))
        }),
        ("two relays on one inbox", |run| {
            Box::pin(scenarios::two_relays(run))
        }),
        ("one of them killed mid-run", |run| {
            Box::pin(scenarios::one_killed(run))
        }),
        ("the broker restarted mid-run", |run| {
            Box::pin(scenarios::broker_restart(run))
        }),
        ("amqps://", |run| Box::pin(scenarios::tls(run))),
        ("SIGTERM with requests in work", |run| {
            Box::pin(scenarios::sigterm(run))
        }),
        (
            "traces: a traceparent in the AMQP headers is continued",
            |run| Box::pin(traces::traces(run)),
        ),
    ];
    for (name, step) in steps {
        println!("-- {name}");
        if let Err(error) = step(&mut run).await {
            for relay in &run.relays {
                eprintln!("--- {} log tail:\n{}", relay.proc.name, relay.proc.tail());
            }
            return Err(format!("{name}: {error}"));
        }
        if until.as_deref().is_some_and(|until| name.contains(until)) {
            break;
        }
    }
    println!("-- logs");
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    scenarios::secrets_kept(&run, &secrets)?;
    let totals = &run.totals;
    println!(
        "backbone e2e: published {} requests (and {} messages that get no reply), answered {}, duplicates {}, lost {}, {:.1} s",
        totals.published,
        totals.unanswerable,
        totals.answered,
        totals.duplicates,
        totals.lost,
        started.elapsed().as_secs_f64()
    );
    if totals.lost != 0 {
        return Err(format!("{} requests lost", totals.lost));
    }
    println!(
        "backbone e2e: {} replies checked as CTIM answers, {} problems",
        run.replies.checked,
        run.replies.invalid.len()
    );
    if let Some(problem) = run.replies.invalid.first() {
        return Err(format!("a reply is not valid CTIM: {problem}"));
    }
    Ok(())
}
