//! Requests per second through the bus, beside the HTTP API in the same run:
//! for 1 and 10 observables, one relay (one thread) against an HTTP relay
//! with one worker, two relays against two workers, each with the same
//! number of requests in work (`--bench-prefetch` per relay, 32 by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Args;
use crate::bus::{Bus, PUBLISH, count};
use crate::fleet::{BusRelay, BusRelayConfig, HttpRelay, Mock, client, env_token};
use crate::scenarios::{CLIENT, TOPIC, one, request, ten};

const WARM_UP: Duration = Duration::from_secs(1);

struct Row {
    label: String,
    http: f64,
    /// CPU seconds per 1000 requests of the HTTP relay.
    http_cpu: f64,
    bus: f64,
    /// CPU seconds per 1000 requests through the bus: the relays, the broker.
    relay_cpu: f64,
    broker_cpu: f64,
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) ends with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// The broker's process: the pid file's, read each time (it restarts).
fn broker_pid(args: &Args) -> Option<u32> {
    let file = args.broker_pid_file.as_ref()?;
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

pub async fn run(args: &Args) -> Result<(), String> {
    let work = &args.work_dir;
    let mock = Mock::start(&args.mock, args.latency_ms, work).await?;
    let bus = Bus::connect(&args.amqp_url, None).await?;
    bus.declare().await?;
    let seconds = Duration::from_secs(args.bench_seconds);
    let prefetch = args.bench_prefetch;
    println!(
        "mock upstream {} ms per call; {} s per measurement after {} s of warm-up; {prefetch} requests in work per relay (BACKBONE_PREFETCH) or HTTP worker",
        args.latency_ms,
        seconds.as_secs(),
        WARM_UP.as_secs()
    );
    let mut rows = Vec::new();
    for observables in [1, 10] {
        for relays in [1, 2] {
            let http = {
                let relay = HttpRelay::start(&args.relay, &mock, work, Some(relays)).await?;
                http_rate(
                    &relay,
                    &mock,
                    observables,
                    relays * prefetch as usize,
                    seconds,
                )
                .await?
            };
            let (http, http_cpu) = http;
            let bus_rate = {
                let mut fleet = Vec::new();
                for i in 0..relays {
                    let config = BusRelayConfig {
                        name: &format!("bench-relay-{i}"),
                        url: &args.amqp_url,
                        client_id: CLIENT,
                        tls_ca_file: None,
                        prefetch,
                        extra: &[],
                    };
                    fleet.push(BusRelay::start(&args.relay, &mock, &config, work).await?);
                }
                let pids: Vec<u32> = fleet.iter().map(|relay| relay.proc.pid()).collect();
                bus_rate(
                    &bus,
                    args,
                    &pids,
                    observables,
                    relays * prefetch as usize,
                    seconds,
                )
                .await?
            };
            let row = Row {
                label: format!(
                    "{observables} observable{}, {relays} relay{}",
                    if observables == 1 { "" } else { "s" },
                    if relays == 1 { "" } else { "s" }
                ),
                http,
                http_cpu,
                bus: bus_rate.rate,
                relay_cpu: bus_rate.relay_cpu,
                broker_cpu: bus_rate.broker_cpu,
            };
            println!(
                "{}: HTTP {:.0} requests/s ({:.2} CPU s / 1000), bus {:.0} requests/s ({:.2} of HTTP); CPU s per 1000 through the bus: relays {:.2}, broker {:.2}",
                row.label,
                row.http,
                row.http_cpu,
                row.bus,
                row.bus / row.http,
                row.relay_cpu,
                row.broker_cpu
            );
            rows.push(row);
        }
    }
    println!(
        "\n| scenario | HTTP requests/s (WORKERS = relays) | HTTP relay CPU s / 1000 | bus requests/s | bus / HTTP | bus relays' CPU s / 1000 | broker CPU s / 1000 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
            row.label,
            row.http,
            row.http_cpu,
            row.bus,
            row.bus / row.http,
            row.relay_cpu,
            row.broker_cpu
        );
    }
    Ok(())
}

fn observables_for(observables: usize, seed: usize) -> Value {
    if observables == 1 {
        one(seed)
    } else {
        ten(seed)
    }
}

/// `concurrency` callers in a closed loop; answers per second after warm-up.
async fn http_rate(
    relay: &HttpRelay,
    mock: &Mock,
    observables: usize,
    concurrency: usize,
    seconds: Duration,
) -> Result<(f64, f64), String> {
    let http = client()?;
    let token = env_token(mock);
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + WARM_UP + seconds;
    let mut callers = Vec::new();
    for caller in 0..concurrency {
        let (http, token, answered, url) =
            (http.clone(), token.clone(), answered.clone(), relay.url());
        callers.push(tokio::spawn(async move {
            let mut seed = caller * 1_000_000;
            while Instant::now() < stop {
                seed += 1;
                let body = observables_for(observables, seed);
                let sent = http.post(&url).bearer_auth(&token).json(&body).send().await;
                if let Ok(response) = sent
                    && response.status().is_success()
                    && response.bytes().await.is_ok()
                {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let (start, cpu_start) = (
        answered.load(Ordering::Relaxed),
        cpu_seconds(relay.proc.pid()),
    );
    tokio::time::sleep(seconds).await;
    let (end, cpu_end) = (
        answered.load(Ordering::Relaxed),
        cpu_seconds(relay.proc.pid()),
    );
    for caller in callers {
        let _ = caller.await;
    }
    let done = (end - start) as f64;
    Ok((
        done / seconds.as_secs_f64(),
        (cpu_end - cpu_start) * 1000.0 / done.max(1.0),
    ))
}

struct BusRate {
    rate: f64,
    relay_cpu: f64,
    broker_cpu: f64,
}

/// Keeps `window` requests published and unanswered; replies per second
/// after warm-up, and the CPU the relays (`pids`) and the broker spent.
async fn bus_rate(
    bus: &Bus,
    args: &Args,
    pids: &[u32],
    observables: usize,
    window: usize,
    seconds: Duration,
) -> Result<BusRate, String> {
    let cpu = || {
        (
            pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>(),
            broker_pid(args).map_or(0.0, cpu_seconds),
        )
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut replies = count(
        args.amqp_url.clone(),
        format!("{CLIENT}-outbox"),
        format!("bench-{run}-"),
    );
    // Twice the prefetch in the queue: the relays never wait for the driver.
    let window = window * 2;
    let started = Instant::now();
    let mut published = 0usize;
    let mut measured_from = None;
    loop {
        let answered = replies.replies;
        if measured_from.is_none() && started.elapsed() >= WARM_UP {
            measured_from = Some((Instant::now(), answered, cpu()));
        }
        if let Some((from, base, (relay_cpu, broker_cpu))) = measured_from
            && from.elapsed() >= seconds
        {
            let done = (answered - base) as f64;
            let (relay_now, broker_now) = cpu();
            let rate = BusRate {
                rate: done / from.elapsed().as_secs_f64(),
                relay_cpu: (relay_now - relay_cpu) * 1000.0 / done.max(1.0),
                broker_cpu: (broker_now - broker_cpu) * 1000.0 / done.max(1.0),
            };
            // Leave the queue empty for the next row.
            replies
                .until(Duration::from_secs(60), |replies| {
                    replies.replies >= published
                })
                .await;
            return Ok(rate);
        }
        let missing = window.saturating_sub(published.saturating_sub(answered));
        if missing > 0 {
            let bodies = (published..published + missing).map(|i| {
                request(
                    &format!("bench-{run}-{i}"),
                    &observables_for(observables, i),
                    &json!({}),
                )
            });
            bus.publish_all(PUBLISH, TOPIC, bodies).await?;
            published += missing;
        }
        replies.until(Duration::from_millis(20), |_| false).await;
    }
}
