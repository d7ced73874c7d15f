//! The end-to-end scenarios, in order; each prints its counts and returns an
//! error naming what broke.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bus::{BROADCAST, Bus, Collector, DEAD, PUBLISH, collect};
use crate::compare::normalized;
use crate::fleet::{BusRelay, BusRelayConfig, HttpRelay, Mock, env_token, token};

pub const CLIENT: &str = "ctr-relay";
pub const TOPIC: &str = "soar.e2e.ctr-relay.observe";
const REPLY_WAIT: Duration = Duration::from_secs(30);
const BATCH_WAIT: Duration = Duration::from_secs(240);
/// The flood's bound on a relay's resident memory: its baseline (about 15
/// MB) plus what the relay itself holds, never the flood.
const FLOOD_MAX_RSS_MB: f64 = 48.0;

pub struct Settings {
    pub relay: PathBuf,
    pub work: PathBuf,
    pub url: String,
    pub amqps_url: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub broker_stop: String,
    pub broker_start: String,
    /// `rabbitmqctl` for the broker (policies, settings).
    pub broker_ctl: String,
    pub requests: usize,
}

pub struct Run {
    pub settings: Settings,
    pub mock: Mock,
    pub http: HttpRelay,
    pub bus: Bus,
    pub replies: Collector,
    pub notify: Collector,
    pub relays: Vec<BusRelay>,
    /// Every relay process that ran, for the log checks at the end.
    pub logs: Vec<PathBuf>,
    pub totals: Totals,
}

#[derive(Default)]
pub struct Totals {
    pub published: usize,
    pub answered: usize,
    pub duplicates: usize,
    pub lost: usize,
    /// Messages that get no reply by design (unreadable, broadcast, other
    /// traffic).
    pub unanswerable: usize,
}

/// A request in the wire form.
pub fn request(request_id: &str, observables: &Value, extra: &Value) -> Vec<u8> {
    let mut message = json!({"request_id": request_id, "observables": observables});
    if let (Some(message), Some(extra)) = (message.as_object_mut(), extra.as_object()) {
        message.extend(extra.clone());
    }
    serde_json::to_vec(&json!({"topic": TOPIC, "message": message})).unwrap_or_default()
}

/// Ten observables of both kinds both providers look up.
pub fn ten(seed: usize) -> Value {
    Value::Array(
        (0..10)
            .map(|i| {
                if i % 2 == 0 {
                    json!({"type": "ip", "value": format!("198.51.{}.{}", seed % 250, i + 1)})
                } else {
                    json!({"type": "domain", "value": format!("host-{seed}-{i}.example.com")})
                }
            })
            .collect(),
    )
}

pub fn one(seed: usize) -> Value {
    json!([{"type": "domain", "value": format!("host-{seed}.example.com")}])
}

fn sh(command: &str) -> Result<(), String> {
    let status = std::process::Command::new("sh")
        .args(["-c", command])
        .status()
        .map_err(|error| error.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` failed: {status}"))
    }
}

fn count(data: &Value, kind: &str) -> u64 {
    data[kind]["count"].as_u64().unwrap_or(0)
}

fn error_code(reply: &Value) -> String {
    reply["message"]["errors"][0]["code"]
        .as_str()
        .unwrap_or("(none)")
        .to_owned()
}

impl Run {
    pub async fn start_relay(&mut self, name: &str) -> Result<BusRelay, String> {
        self.start_relay_with(name, &[]).await
    }

    /// [`Self::start_relay`] with more environment variables.
    pub async fn start_relay_with(
        &mut self,
        name: &str,
        extra: &[(&'static str, String)],
    ) -> Result<BusRelay, String> {
        let config = BusRelayConfig {
            name,
            url: &self.settings.url,
            client_id: CLIENT,
            tls_ca_file: None,
            prefetch: 32,
            extra,
        };
        let relay = BusRelay::start(
            &self.settings.relay,
            &self.mock,
            &config,
            &self.settings.work,
        )
        .await?;
        self.logs.push(relay.proc.log.clone());
        Ok(relay)
    }

    fn statuses(&self, status: &str) -> usize {
        self.notify.seen.get(status).map_or(0, |(count, _)| *count)
    }

    async fn await_status(&mut self, status: &str, at_least: usize) -> Result<(), String> {
        let seen = self
            .notify
            .until(REPLY_WAIT, |notify| {
                notify
                    .seen
                    .get(status)
                    .is_some_and(|(count, _)| *count >= at_least)
            })
            .await;
        if seen {
            Ok(())
        } else {
            Err(format!(
                "expected {at_least} `{status}` on {CLIENT}-notify, saw {}",
                self.statuses(status)
            ))
        }
    }

    /// Publishes `n` one-observable requests named `<prefix>-<i>`.
    async fn publish_batch(&mut self, prefix: &str, n: usize) -> Result<Vec<String>, String> {
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        let bodies = ids
            .iter()
            .enumerate()
            .map(|(i, id)| request(id, &one(i), &json!({})));
        self.bus.publish_all(PUBLISH, TOPIC, bodies).await?;
        self.totals.published += n;
        Ok(ids)
    }

    /// Waits until every id has a reply; the line of counts.
    async fn finish_batch(
        &mut self,
        label: &str,
        ids: &[String],
        started: Instant,
    ) -> Result<String, String> {
        let all = self
            .replies
            .until(BATCH_WAIT, |replies| replies.tally(ids).0 == ids.len())
            .await;
        // Late duplicates (a reply published twice) arrive within moments.
        self.replies.drain(Duration::from_millis(500)).await;
        let (answered, duplicates) = self.replies.tally(ids);
        let lost = ids.len() - answered;
        self.totals.answered += answered;
        self.totals.duplicates += duplicates;
        self.totals.lost += lost;
        let line = format!(
            "{label}: published {}, answered {answered}, duplicates {duplicates}, lost {lost}, {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
        println!("   {line}");
        if all { Ok(line) } else { Err(line) }
    }
}

/// The relay comes up and says so.
pub async fn online(run: &mut Run) -> Result<(), String> {
    let relay = run.start_relay("relay-1").await?;
    run.relays.push(relay);
    run.await_status("online", 1).await?;
    let status = &run.notify.seen["online"].1;
    println!(
        "   `online` on {CLIENT}-notify: {}",
        serde_json::to_string(&status["message"]).unwrap_or_default()
    );
    if status["topic"] != "soar.ctr-relay.status" || status["message"]["client_id"] != CLIENT {
        return Err(format!("unexpected status message {status}"));
    }
    Ok(())
}

/// Ten observables through the bus give the data HTTP gives.
pub async fn same_as_http(run: &mut Run) -> Result<(), String> {
    let observables = ten(1);
    run.bus
        .publish(
            PUBLISH,
            TOPIC,
            request("same-as-http", &observables, &json!({})),
        )
        .await?;
    run.totals.published += 1;
    let reply = run
        .replies
        .reply("same-as-http", REPLY_WAIT)
        .await
        .ok_or("no reply to the ten-observable request")?;
    run.totals.answered += 1;
    let reference = run
        .http
        .observe(&env_token(&run.mock), &observables)
        .await?;
    let data = &reply["message"]["data"];
    if count(data, "sightings") == 0 || count(data, "judgements") == 0 {
        return Err(format!(
            "the reply holds no sightings or judgements: {data}"
        ));
    }
    if normalized(data) != normalized(&reference["data"]) {
        let dump = |name: &str, value: &Value| {
            let path = run.settings.work.join(name);
            let _ = std::fs::write(&path, format!("{value:#}"));
            path.display().to_string()
        };
        return Err(format!(
            "the reply's data differs from what /observe/observables answers ({} / {})",
            dump("same-as-http.bus.json", &normalized(data)),
            dump("same-as-http.http.json", &normalized(&reference["data"]))
        ));
    }
    let http_errors = reference.get("errors").cloned().unwrap_or(json!([]));
    if reply["message"]["errors"] != http_errors {
        return Err(format!(
            "errors differ: bus {} / HTTP {http_errors}",
            reply["message"]["errors"]
        ));
    }
    println!(
        "   10 observables: reply data equals /observe/observables ({} sightings, {} indicators, {} judgements, {} verdicts); topic {}",
        count(data, "sightings"),
        count(data, "indicators"),
        count(data, "judgements"),
        count(data, "verdicts"),
        reply["topic"]
    );
    Ok(())
}

/// A token's credentials are used; a bad token gets an error reply.
pub async fn tokens(run: &mut Run) -> Result<(), String> {
    let observables = json!([{"type": "ip", "value": "198.51.100.7"}]);
    let tenant = token(&json!({"key": "tenant-c1fapp-key-records-1"}));
    let forged = {
        let header = jsonwebtoken::Header::default();
        let key = jsonwebtoken::EncodingKey::from_secret(b"someone-else's-secret-key-0123456789");
        jsonwebtoken::encode(&header, &json!({"key": "forged-key"}), &key).unwrap_or_default()
    };
    let bodies = [
        request("own", &observables, &json!({})),
        request(
            "tenant",
            &observables,
            &json!({"token": tenant, "reply_topic": "soar.e2e.tenant.results"}),
        ),
        request("forged", &observables, &json!({"token": forged})),
    ];
    run.bus.publish_all(PUBLISH, TOPIC, bodies).await?;
    run.totals.published += 3;
    let mut replies = Vec::new();
    for id in ["own", "tenant", "forged"] {
        replies.push(
            run.replies
                .reply(id, REPLY_WAIT)
                .await
                .ok_or(format!("no reply to `{id}`"))?,
        );
        run.totals.answered += 1;
    }
    let [own, tenant_reply, forged_reply] = &replies[..] else {
        return Err("three replies expected".to_owned());
    };
    let own_sightings = count(&own["message"]["data"], "sightings");
    let tenant_data = &tenant_reply["message"]["data"];
    let reference = run.http.observe(&tenant, &observables).await?;
    if count(tenant_data, "sightings") != 1
        || normalized(tenant_data) != normalized(&reference["data"])
    {
        return Err(format!(
            "the tenant's token (one C1fApp record, no CyberScan) was not used: {tenant_data}"
        ));
    }
    if tenant_reply["topic"] != "soar.e2e.tenant.results" {
        return Err(format!(
            "the reply topic was not honoured: {}",
            tenant_reply["topic"]
        ));
    }
    if error_code(forged_reply) != "authorization error"
        || forged_reply["message"]["data"] != json!({})
    {
        return Err(format!("a forged token got {forged_reply}"));
    }
    println!(
        "   own credentials: {own_sightings} sightings; the tenant's token: 1 sighting, as over HTTP, on its reply_topic; a forged token: `{}`",
        error_code(forged_reply)
    );
    Ok(())
}

/// Every kind of bad message: an error reply or a counted log line, then
/// dead-lettered; broadcasts and other traffic ignored; then the next good
/// request is answered.
pub async fn malformed(run: &mut Run) -> Result<(), String> {
    let relay = &run.relays[0];
    let (rejected_before, refused_before, ignored_before) = (
        relay.events("rejected").await,
        relay.events("error_reply").await,
        relay.events("ignored").await,
    );
    let dead_before = run.bus.ready(DEAD).await?;
    let envelope = |message: Value| {
        serde_json::to_vec(&json!({"topic": TOPIC, "message": message})).unwrap_or_default()
    };
    let huge = "x".repeat(1536 * 1024);
    let unreadable: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"observables, please".to_vec()),
        ("not UTF-8", vec![0xff, 0xfe, 0x7b, 0x00]),
        ("a JSON array", b"[1, 2, 3]".to_vec()),
        (
            "no message",
            br#"{"topic": "soar.e2e.ctr-relay.observe"}"#.to_vec(),
        ),
        (
            "a message that is a string",
            envelope(json!("observe this")),
        ),
        (
            "a request_id that is a number",
            envelope(json!({"request_id": 7, "observables": []})),
        ),
        (
            "1.5 MiB without a request_id",
            envelope(json!({"observables": [{"type": "domain", "value": huge}]})),
        ),
    ];
    let refused: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "bad-observables",
            "invalid argument",
            envelope(json!({"request_id": "bad-observables", "observables": "192.0.2.1"})),
        ),
        (
            "bad-observable",
            "invalid argument",
            envelope(json!({"request_id": "bad-observable", "observables": [{"type": "ip"}]})),
        ),
        (
            "oversized",
            "payload too large",
            envelope(
                json!({"request_id": "oversized", "observables": [{"type": "domain", "value": huge}]}),
            ),
        ),
        (
            "token-not-a-string",
            "authorization error",
            envelope(json!({"request_id": "token-not-a-string", "observables": [], "token": 42})),
        ),
        (
            "token-not-a-jwt",
            "authorization error",
            envelope(
                json!({"request_id": "token-not-a-jwt", "observables": [], "token": "not.a.jwt"}),
            ),
        ),
    ];
    for (_, body) in &unreadable {
        run.bus.publish(PUBLISH, TOPIC, body.clone()).await?;
    }
    for (_, _, body) in &refused {
        run.bus.publish(PUBLISH, TOPIC, body.clone()).await?;
    }
    // Someone else's traffic on the topic, and a request-shaped broadcast.
    run.bus
        .publish(
            PUBLISH,
            TOPIC,
            envelope(json!({"vehicle": "slocum-1", "position": [50.1, -4.2]})),
        )
        .await?;
    run.bus
        .publish(BROADCAST, "", request("broadcast-1", &one(1), &json!({})))
        .await?;
    run.bus
        .publish(
            PUBLISH,
            TOPIC,
            request("after-malformed", &one(2), &json!({})),
        )
        .await?;
    run.totals.published += refused.len() + 1;
    run.totals.unanswerable += unreadable.len() + 2;

    for (id, code, _) in &refused {
        let reply = run
            .replies
            .reply(id, REPLY_WAIT)
            .await
            .ok_or(format!("no error reply to `{id}`"))?;
        if error_code(&reply) != *code {
            return Err(format!("`{id}`: expected `{code}`, got {reply}"));
        }
    }
    run.replies
        .reply("after-malformed", REPLY_WAIT)
        .await
        .ok_or("the good request after the bad ones was not answered")?;
    run.totals.answered += refused.len() + 1;
    run.replies.drain(Duration::from_secs(1)).await;
    if run.replies.seen.contains_key("broadcast-1") {
        return Err("a broadcast request was answered".to_owned());
    }
    let expected_dead = (unreadable.len() + refused.len()) as u32;
    let dead = run
        .bus
        .settled(DEAD, Duration::from_millis(500), REPLY_WAIT)
        .await?
        - dead_before;
    let relay = &mut run.relays[0];
    let rejected = relay.events("rejected").await - rejected_before;
    let error_replies = relay.events("error_reply").await - refused_before;
    let ignored = relay.events("ignored").await - ignored_before;
    println!(
        "   {} unreadable → {rejected} rejected with a log line; {} refusable → {error_replies} error replies ({}); {dead} dead-lettered; {ignored} ignored (a broadcast, other traffic); the next request answered",
        unreadable.len(),
        refused.len(),
        refused
            .iter()
            .map(|(_, code, _)| *code)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if dead != expected_dead
        || rejected != unreadable.len() as u64
        || error_replies != refused.len() as u64
        || ignored != 2
    {
        return Err(format!(
            "expected {expected_dead} dead-lettered, {} rejected, {} error replies, 2 ignored",
            unreadable.len(),
            refused.len()
        ));
    }
    if !relay.proc.running() {
        return Err("the relay is not running".to_owned());
    }
    Ok(())
}

/// A flood of messages far over the size bound: each is rejected unread
/// (dead-lettered, counted), the relay's memory stays bounded, and the next
/// request is answered.
pub async fn flood(run: &mut Run) -> Result<(), String> {
    // RabbitMQ takes messages of up to 128 MiB by default.
    const COUNT: usize = 3;
    const MIB: usize = 64;
    let relay = &run.relays[0];
    let (oversized_before, dead_before) =
        (relay.events("oversized").await, run.bus.ready(DEAD).await?);
    let pid = relay.proc.pid();
    let peak = Arc::new(AtomicU64::new(rss_kb(pid)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let value = "x".repeat(MIB * 1024 * 1024);
    let bodies = (0..COUNT).map(|i| {
        serde_json::to_vec(&json!({"topic": TOPIC, "message": {
            "request_id": format!("flood-{i}"),
            "observables": [{"type": "domain", "value": value}]
        }}))
        .unwrap_or_default()
    });
    let started = Instant::now();
    run.bus.publish_all(PUBLISH, TOPIC, bodies).await?;
    let dead = run
        .bus
        .settled(DEAD, Duration::from_secs(1), BATCH_WAIT)
        .await?
        - dead_before;
    let seconds = started.elapsed().as_secs_f64();
    run.bus
        .publish(PUBLISH, TOPIC, request("after-flood", &one(3), &json!({})))
        .await?;
    run.totals.published += 1;
    let answered = run.replies.reply("after-flood", REPLY_WAIT).await.is_some();
    run.totals.answered += usize::from(answered);
    sampler.abort();
    run.totals.unanswerable += COUNT;
    run.bus.purge(DEAD).await?;
    let relay = &run.relays[0];
    let oversized = relay.events("oversized").await - oversized_before;
    let peak_mb = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    println!(
        "   {COUNT} messages of {MIB} MiB: {dead} dead-lettered, {oversized} rejected unread (oversized) in {seconds:.1} s; relay peak RSS {peak_mb:.1} MB (bound {FLOOD_MAX_RSS_MB} MB); the next request answered: {answered}"
    );
    if dead != COUNT as u32 || oversized != COUNT as u64 || !answered {
        return Err(format!(
            "expected {COUNT} dead-lettered and counted, and the next request answered"
        ));
    }
    if peak_mb > FLOOD_MAX_RSS_MB {
        return Err(format!(
            "peak RSS {peak_mb:.1} MB over {FLOOD_MAX_RSS_MB} MB"
        ));
    }
    Ok(())
}

/// The relay's resident memory, in KiB (0 when it is gone).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Two relays on one inbox share the work; nothing is lost.
pub async fn two_relays(run: &mut Run) -> Result<(), String> {
    let second = run.start_relay("relay-2").await?;
    run.relays.push(second);
    run.await_status("online", 2).await?;
    let before = [
        run.relays[0].events("replied").await,
        run.relays[1].events("replied").await,
    ];
    let started = Instant::now();
    let ids = run.publish_batch("spread", run.settings.requests).await?;
    let line = run.finish_batch("two relays", &ids, started).await;
    let shares = [
        run.relays[0].events("replied").await - before[0],
        run.relays[1].events("replied").await - before[1],
    ];
    println!(
        "   replies by relay-1: {}, by relay-2: {}",
        shares[0], shares[1]
    );
    line?;
    let tenth = (ids.len() / 10) as u64;
    if shares.iter().any(|share| *share < tenth) {
        return Err(format!(
            "the work was not spread over both relays: {shares:?}"
        ));
    }
    Ok(())
}

/// One of two relays killed (SIGKILL) mid-run: the other answers the rest.
pub async fn one_killed(run: &mut Run) -> Result<(), String> {
    let redelivered_before = run.relays[0].events("redelivered").await;
    let started = Instant::now();
    let ids = run.publish_batch("killed", run.settings.requests).await?;
    run.replies
        .until(BATCH_WAIT, |replies| replies.tally(&ids).0 >= ids.len() / 5)
        .await;
    let at_kill = run.replies.tally(&ids).0;
    let mut killed = run.relays.remove(1);
    killed.proc.signal("KILL")?;
    killed.proc.exited(Duration::from_secs(10)).await;
    println!("   relay-2 killed (SIGKILL) after {at_kill} replies");
    let line = run
        .finish_batch("relay-2 killed mid-run", &ids, started)
        .await;
    let redelivered = run.relays[0].events("redelivered").await - redelivered_before;
    println!("   relay-1 was redelivered {redelivered} requests relay-2 held");
    line?;
    if at_kill >= ids.len() {
        return Err("every request was answered before the kill: not mid-run".to_owned());
    }
    Ok(())
}

/// The broker stopped and started again mid-run: the relay reconnects by
/// itself; nothing acknowledged is lost.
pub async fn broker_restart(run: &mut Run) -> Result<(), String> {
    let reconnects_before = run.relays[0].events("reconnect").await;
    let online_before = run.statuses("online");
    let started = Instant::now();
    let ids = run.publish_batch("restart", run.settings.requests).await?;
    run.replies
        .until(BATCH_WAIT, |replies| replies.tally(&ids).0 >= ids.len() / 5)
        .await;
    let at_stop = run.replies.tally(&ids).0;
    sh(&run.settings.broker_stop)?;
    let down = Instant::now();
    run.replies.drain(Duration::from_millis(200)).await;
    let at_down = run.replies.tally(&ids).0;
    println!("   broker stopped: asked after {at_stop} replies, down after {at_down}");
    sh(&run.settings.broker_start)?;
    println!(
        "   broker up again after {:.1} s",
        down.elapsed().as_secs_f64()
    );
    run.bus = Bus::connect(&run.settings.url, None).await?;
    let line = run
        .finish_batch("broker restarted mid-run", &ids, started)
        .await;
    let reconnects = run.relays[0].events("reconnect").await - reconnects_before;
    println!("   relay-1 reconnected ({reconnects} reconnect events) and announced `online` again");
    line?;
    run.await_status("online", online_before + 1).await?;
    if reconnects == 0 {
        return Err("no reconnect was counted".to_owned());
    }
    if at_down >= ids.len() {
        return Err("every request was answered before the broker stopped: not mid-run".to_owned());
    }
    Ok(())
}

/// SIGTERM with requests in work: they finish, `offline` is sent, exit 0;
/// what was not taken waits in the inbox for the next relay.
pub async fn sigterm(run: &mut Run) -> Result<(), String> {
    let offline_before = run.statuses("offline");
    let started = Instant::now();
    let n = 200;
    let ids = run.publish_batch("sigterm", n).await?;
    run.replies
        .until(BATCH_WAIT, |replies| replies.tally(&ids).0 >= 20)
        .await;
    let mut relay = run.relays.remove(0);
    relay.proc.signal("TERM")?;
    let status = relay.proc.exited(Duration::from_secs(30)).await;
    run.await_status("offline", offline_before + 1).await?;
    run.replies.drain(Duration::from_millis(500)).await;
    let (answered, duplicates) = run.replies.tally(&ids);
    let waiting = run.bus.ready(&format!("{CLIENT}-inbox")).await? as usize;
    let code = status.and_then(|status| status.code());
    println!(
        "   SIGTERM: exit code {code:?}, {answered} answered, {waiting} left in the inbox, `offline` sent"
    );
    if !status.is_some_and(|status| status.success()) {
        return Err(format!(
            "the relay did not exit 0 after SIGTERM:\n{}",
            relay.proc.tail()
        ));
    }
    if answered + waiting != n || duplicates != 0 {
        return Err(format!(
            "{answered} answered + {waiting} waiting != {n} published (duplicates {duplicates}): work in flight was cut"
        ));
    }
    // The next relay answers what waited.
    let next = run.start_relay("relay-3").await?;
    run.relays.push(next);
    run.finish_batch("SIGTERM mid-run, then a new relay", &ids, started)
        .await?;
    let mut last = run.relays.remove(0);
    last.proc.signal("TERM")?;
    let status = last.proc.exited(Duration::from_secs(30)).await;
    run.await_status("offline", offline_before + 2).await?;
    if !status.is_some_and(|status| status.success()) {
        return Err("the last relay did not exit 0 after SIGTERM".to_owned());
    }
    Ok(())
}

/// `amqps://` with the test CA trusted answers; without it, the relay
/// refuses the broker's certificate and keeps retrying.
pub async fn tls(run: &mut Run) -> Result<(), String> {
    let (Some(url), Some(ca)) = (
        run.settings.amqps_url.clone(),
        run.settings.tls_ca_file.clone(),
    ) else {
        println!("   (no amqps:// listener given: skipped)");
        return Ok(());
    };
    let client = "ctr-relay-tls";
    let trusted = BusRelay::start(
        &run.settings.relay,
        &run.mock,
        &BusRelayConfig {
            name: "relay-tls",
            url: &url,
            client_id: client,
            tls_ca_file: Some(&ca),
            prefetch: 8,
            extra: &[],
        },
        &run.settings.work,
    )
    .await?;
    run.logs.push(trusted.proc.log.clone());
    let mut outbox = collect(run.settings.url.clone(), None, format!("{client}-outbox"));
    let mut notify = collect(run.settings.url.clone(), None, format!("{client}-notify"));
    // `online` comes once the inbox is declared and bound.
    notify.reply("online", REPLY_WAIT).await.ok_or(format!(
        "no `online` over amqps://:\n{}",
        trusted.proc.tail()
    ))?;
    let topic = format!("soar.e2e.{client}.observe");
    let body = serde_json::to_vec(&json!({
        "topic": topic,
        "message": {"request_id": "over-tls", "observables": one(7)}
    }))
    .unwrap_or_default();
    run.bus.publish(PUBLISH, &topic, body).await?;
    outbox
        .reply("over-tls", REPLY_WAIT)
        .await
        .ok_or(format!("no reply over amqps://:\n{}", trusted.proc.tail()))?;

    let untrusted = BusRelay::start(
        &run.settings.relay,
        &run.mock,
        &BusRelayConfig {
            name: "relay-tls-untrusted",
            url: &url,
            client_id: "ctr-relay-untrusted",
            tls_ca_file: None,
            prefetch: 8,
            extra: &[],
        },
        &run.settings.work,
    )
    .await?;
    run.logs.push(untrusted.proc.log.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    while untrusted.events("reconnect").await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut untrusted = untrusted;
    let refused = untrusted.events("reconnect").await > 0
        && untrusted.proc.running()
        && untrusted
            .proc
            .log_text()
            .contains("invalid peer certificate");
    println!(
        "   amqps:// with BACKBONE_TLS_CA_FILE: answered; without it: the certificate refused (logged as such), retrying ({})",
        if refused { "yes" } else { "no" }
    );
    if !refused {
        return Err(format!(
            "a broker certificate from an unknown CA was not refused:\n{}",
            untrusted.proc.tail()
        ));
    }
    Ok(())
}

/// No relay log holds a password, key or token.
pub fn secrets_kept(run: &Run, secrets: &[&str]) -> Result<(), String> {
    let mut lines = 0;
    for log in &run.logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        lines += text.lines().count();
        for secret in secrets {
            if !secret.is_empty() && text.contains(secret) {
                return Err(format!("{} holds a secret", log.display()));
            }
        }
    }
    println!(
        "   {} log lines of {} relays: no password, key or token",
        lines,
        run.logs.len()
    );
    Ok(())
}
