//! Replies that cannot be delivered, and replies large enough to span many
//! reads while the guard rejects oversized deliveries on the same channel.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bus::{DEAD, PUBLISH, collect};
use crate::fleet::{BusRelay, BusRelayConfig, token};
use crate::scenarios::{CLIENT, Run, TOPIC, request, ten};

const WAIT: Duration = Duration::from_secs(30);

fn ctl(run: &Run, args: &str) -> Result<(), String> {
    let command = format!("{} {args}", run.settings.broker_ctl);
    let status = std::process::Command::new("sh")
        .args(["-c", &command])
        .status()
        .map_err(|error| error.to_string())?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("`{command}` failed: {status}")),
    }
}

/// Polls `event` of `relay` until it reaches `at_least`; its value.
async fn wait_event(relay: &BusRelay, event: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = relay.events(event).await;
        if now >= at_least || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An outbox that refuses every publish (`max-length` 0, `reject-publish`,
/// by policy): the request is tried twice — its reply refused and requeued
/// once, then an error reply refused too — and dead-lettered, never looped;
/// with the policy gone, the next request is answered.
pub async fn outbox_full(run: &mut Run) -> Result<(), String> {
    let relay = &run.relays[0];
    let events = [
        "received",
        "reply_refused",
        "redelivered_after_failure",
        "dead_lettered",
    ];
    let mut before = Vec::new();
    for event in events {
        before.push(relay.events(event).await);
    }
    let dead_before = run.bus.ready(DEAD).await?;
    ctl(
        run,
        &format!(
            "set_policy -p / outbox-full '^{CLIENT}-outbox$' \
             '{{\"max-length\":0,\"overflow\":\"reject-publish\"}}' --apply-to queues"
        ),
    )?;
    // Policies apply within moments.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.bus
        .publish(PUBLISH, TOPIC, request("outbox-full", &ten(40), &json!({})))
        .await?;
    let relay = &run.relays[0];
    wait_event(relay, "dead_lettered", before[3] + 1).await;
    // Anything more would show within moments: a loop keeps receiving.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut delta = Vec::new();
    for (event, before) in events.iter().zip(&before) {
        delta.push(relay.events(event).await - before);
    }
    let dead = run
        .bus
        .settled(DEAD, Duration::from_millis(500), WAIT)
        .await?
        - dead_before;
    ctl(run, "clear_policy -p / outbox-full")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.bus
        .publish(
            PUBLISH,
            TOPIC,
            request("after-outbox-full", &ten(41), &json!({})),
        )
        .await?;
    let answered = run.replies.reply("after-outbox-full", WAIT).await.is_some();
    let replied_to_refused = run.replies.seen.contains_key("outbox-full");
    run.totals.published += 1;
    run.totals.answered += usize::from(answered);
    run.totals.unanswerable += 1;
    println!(
        "   an outbox refusing publishes: received {} times, {} reply refused, {} redelivered after the failure (its error reply refused too), {} dead-lettered (dead-letter queue +{dead}); with the policy cleared the next request answered: {answered}",
        delta[0], delta[1], delta[2], delta[3]
    );
    if delta != [2, 1, 1, 1] || dead != 1 || !answered || replied_to_refused {
        return Err(format!(
            "expected received 2, reply refused 1, redelivered after failure 1 (its error reply refused too), dead-lettered 1 (queue +1), then an answer; got {delta:?}, +{dead}, answered {answered}"
        ));
    }
    Ok(())
}

/// A reply larger than the broker takes: with BACKBONE_MAX_MESSAGE_BYTES
/// set, an error reply naming it at once; with the broker's
/// `max_message_size` lowered behind the relay's back, the broker closes the
/// channel, the request comes back and gets an error reply naming the
/// broker's limit — once, never a loop.
pub async fn reply_over_max_size(run: &mut Run) -> Result<(), String> {
    let client = "ctr-relay-size";
    let topic = format!("soar.e2e.{client}.observe");
    let mut outbox = collect(run.settings.url.clone(), None, format!("{client}-outbox"));
    let ask = |id: &str| {
        serde_json::to_vec(&json!({"topic": topic, "message": {
            "request_id": id, "observables": ten(42)
        }}))
        .unwrap_or_default()
    };

    let told = start(run, "relay-size-told", client, Some(16 * 1024), &[]).await?;
    run.bus
        .publish(PUBLISH, &topic, ask("too-large-told"))
        .await?;
    let reply = outbox
        .reply("too-large-told", WAIT)
        .await
        .ok_or("no reply to a request whose answer is over BACKBONE_MAX_MESSAGE_BYTES")?;
    let message = error_message(&reply);
    // Stopped cleanly: its reject of the request reaches the broker.
    let mut told = told;
    told.proc.signal("TERM")?;
    told.proc.exited(WAIT).await;
    if error_code(&reply) != "payload too large" || !message.contains("16384") {
        return Err(format!(
            "expected `payload too large` naming 16384: {reply}"
        ));
    }
    println!("   BACKBONE_MAX_MESSAGE_BYTES=16384: `payload too large`: {message}");

    // The broker's limit, lowered for channels opened from now on.
    ctl(
        run,
        "eval 'application:set_env(rabbit, max_message_size, 16384).'",
    )?;
    let untold = start(run, "relay-size-untold", client, None, &[]).await;
    let outcome = match untold {
        Ok(untold) => {
            run.bus
                .publish(PUBLISH, &topic, ask("too-large-untold"))
                .await?;
            let reply = outbox.reply("too-large-untold", WAIT).await;
            let reconnects = untold.events("reconnect").await;
            let received = untold.events("received").await;
            Ok((reply, reconnects, received))
        }
        Err(error) => Err(error),
    };
    ctl(
        run,
        "eval 'application:set_env(rabbit, max_message_size, 134217728).'",
    )?;
    let (reply, reconnects, received) = outcome?;
    let reply = reply.ok_or("no reply to a request whose answer is over the broker's limit")?;
    let message = error_message(&reply);
    println!(
        "   the broker's max_message_size 16384, the relay not told: the channel closed {reconnects} times, the request received {received} times (answered twice, then an error reply): {message}"
    );
    if error_code(&reply) != "unknown" || !message.contains("16384") || received != 3 {
        return Err(format!(
            "expected the answer tried twice, then an error reply naming the broker's limit: {reply}"
        ));
    }
    run.totals.published += 2;
    run.totals.answered += 2;
    Ok(())
}

/// Replies of over 1 MiB (many frames, over many reads of the guard) while
/// the guard keeps rejecting oversized deliveries on the same channel: a
/// relay with MAX_REQUEST_BYTES 16 KiB (so deliveries over 32 KiB are
/// rejected unread) gets twelve requests with large answers and, until they
/// are all answered, a delivery of 40 KiB every few milliseconds. Every reply
/// arrives and the connection is never cut (a reject inside a publish is a
/// framing error: the broker closes the connection).
pub async fn large_replies_beside_rejects(run: &mut Run) -> Result<(), String> {
    const COUNT: usize = 12;
    let client = "ctr-relay-frames";
    let topic = format!("soar.e2e.{client}.observe");
    // Room for twelve answers of 2 MiB at once, whoever asks.
    let extra = [
        ("MAX_REQUEST_BYTES", "16384".to_owned()),
        ("MAX_HELD_BYTES", (256u64 << 20).to_string()),
        ("MAX_HELD_BYTES_PER_TENANT", (128u64 << 20).to_string()),
    ];
    let relay = start(run, "relay-frames", client, None, &extra).await?;
    let mut outbox = collect(run.settings.url.clone(), None, format!("{client}-outbox"));
    let big_token =
        token(&json!({"key": "tenant-c1fapp-key-records-100", "CTR_ENTITIES_LIMIT": 100}));
    let observables = Value::Array(
        (0..20)
            .map(|i| json!({"type": "domain", "value": format!("large-{i}.example.com")}))
            .collect(),
    );
    let ids: Vec<String> = (0..COUNT).map(|n| format!("large-{n}")).collect();
    let bodies = ids.iter().map(|id| {
        serde_json::to_vec(&json!({"topic": topic, "message": {
            "request_id": id, "observables": observables, "token": big_token
        }}))
        .unwrap_or_default()
    });
    run.bus.publish_all(PUBLISH, &topic, bodies).await?;
    // The stream of oversized deliveries, on a connection of its own.
    let flood_bus = crate::bus::Bus::connect(&run.settings.url, None).await?;
    let flood_topic = topic.clone();
    let flood = tokio::spawn(async move {
        let filler = "x".repeat(40 * 1024);
        let mut sent = 0u64;
        loop {
            let body = serde_json::to_vec(&json!({"topic": flood_topic, "message": {
                "observables": [{"type": "domain", "value": filler}]
            }}))
            .unwrap_or_default();
            if flood_bus
                .publish(PUBLISH, &flood_topic, body)
                .await
                .is_err()
            {
                return sent;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    let started = Instant::now();
    let all = outbox
        .until(Duration::from_secs(120), |replies| {
            ids.iter().all(|id| replies.seen.contains_key(id))
        })
        .await;
    flood.abort();
    let seconds = started.elapsed().as_secs_f64();
    let sizes: Vec<usize> = ids
        .iter()
        .filter_map(|id| outbox.seen.get(id))
        .map(|(_, reply)| reply.to_string().len())
        .collect();
    let smallest = sizes.iter().min().copied().unwrap_or(0);
    // The last rejects settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reconnects = relay.events("reconnect").await;
    let oversized = relay.events("oversized").await;
    let invalid = outbox.invalid.len();
    run.totals.published += COUNT;
    run.totals.answered += sizes.len();
    println!(
        "   {COUNT} replies of at least {:.2} MiB while deliveries of 40 KiB were rejected unread: {} replied in {seconds:.1} s, {oversized} rejected meanwhile, {reconnects} reconnects",
        smallest as f64 / 1048576.0,
        sizes.len(),
    );
    if !all || oversized < 50 || reconnects != 0 || smallest < 1024 * 1024 || invalid != 0 {
        return Err(format!(
            "expected {COUNT} replies over 1 MiB, at least 50 rejected unread meanwhile and no reconnect; {invalid} invalid replies"
        ));
    }

    // The inbox deleted under the relay: the broker ends its consumer, and
    // the log says so (not "refused"); the relay declares it again.
    ctl(run, &format!("delete_queue {client}-inbox"))?;
    let ended = wait_event(&relay, "reconnect", 1).await >= 1;
    let logged = relay
        .proc
        .log_text()
        .contains("the broker ended the consumer");
    println!(
        "   the inbox deleted: the consumer's end logged as such: {logged}; reconnected: {ended}"
    );
    if !ended || !logged {
        return Err("the end of the consumer was not logged as such".to_owned());
    }
    Ok(())
}

async fn start(
    run: &mut Run,
    name: &str,
    client: &str,
    max_message_bytes: Option<u64>,
    more: &[(&'static str, String)],
) -> Result<BusRelay, String> {
    let mut extra: Vec<(&'static str, String)> = max_message_bytes
        .map(|bytes| ("BACKBONE_MAX_MESSAGE_BYTES", bytes.to_string()))
        .into_iter()
        .collect();
    extra.extend(more.iter().cloned());
    let relay = BusRelay::start(
        &run.settings.relay,
        &run.mock,
        &BusRelayConfig {
            name,
            url: &run.settings.url,
            client_id: client,
            tls_ca_file: None,
            prefetch: 8,
            extra: &extra,
        },
        &run.settings.work,
    )
    .await?;
    run.logs.push(relay.proc.log.clone());
    // Up once it has said `online` (its queues declared and bound).
    let mut notify = collect(run.settings.url.clone(), None, format!("{client}-notify"));
    notify.drain(Duration::from_millis(10)).await;
    let deadline = Instant::now() + WAIT;
    while relay.events("received").await == 0
        && !notify.seen.contains_key("online")
        && Instant::now() < deadline
    {
        notify.drain(Duration::from_millis(200)).await;
    }
    Ok(relay)
}

fn error_code(reply: &Value) -> String {
    reply["message"]["errors"][0]["code"]
        .as_str()
        .unwrap_or("(none)")
        .to_owned()
}

fn error_message(reply: &Value) -> String {
    reply["message"]["errors"][0]["message"]
        .as_str()
        .unwrap_or("(none)")
        .to_owned()
}
