//! Threat Bus mode against a fake Threat Bus written here: its manage (REP),
//! pub (PUB) and sub (SUB) sockets on loopback, as the real one binds them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ctr_relay::config::{RequestLimits, Settings};
use ctr_relay::domain::{C1fAppCredentials, Credentials, EntitiesLimit, Secret};
use ctr_relay::metrics::Metrics;
use ctr_relay::outbound::Tls;
use ctr_relay::providers::scope::MemoryPool;
use ctr_relay::providers::{ProviderState, Providers};
use ctr_relay::threatbus::bus::ManageEndpoint;
use ctr_relay::threatbus::{Counts, ThreatBusSettings, run};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use url::Url;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use zeromq::{Endpoint, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::helpers::{C1FAPP_KEY, C1FAPP_PATH, c1fapp_record};

const WAIT: Duration = Duration::from_secs(15);

fn port_of(endpoint: &Endpoint) -> u16 {
    match endpoint {
        Endpoint::Tcp(_, port) => *port,
        other => panic!("not tcp: {other}"),
    }
}

/// A Threat Bus stand-in. Manage requests are answered as Threat Bus does and
/// passed on to the test; `publish` sends on its PUB socket; `next` reads what
/// apps published on its SUB socket.
struct FakeBus {
    ports: (u16, u16, u16),
    /// When set, the next heartbeat is refused (as if the topic were lost).
    refuse_heartbeat: Arc<std::sync::atomic::AtomicBool>,
    topic: String,
    requests: mpsc::UnboundedReceiver<Value>,
    publisher: zeromq::PubSocket,
    received: mpsc::UnboundedReceiver<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeBus {
    /// Binds the three sockets, on the given ports or on free ones.
    async fn start(ports: Option<(u16, u16, u16)>, topic: &str) -> Self {
        let (manage, publish, subscribe) = ports.unwrap_or((0, 0, 0));
        let mut rep = zeromq::RepSocket::new();
        let manage = port_of(
            &rep.bind(&format!("tcp://127.0.0.1:{manage}"))
                .await
                .unwrap(),
        );
        let mut publisher = zeromq::PubSocket::new();
        let publish = port_of(
            &publisher
                .bind(&format!("tcp://127.0.0.1:{publish}"))
                .await
                .unwrap(),
        );
        let mut sub = zeromq::SubSocket::new();
        let subscribe = port_of(
            &sub.bind(&format!("tcp://127.0.0.1:{subscribe}"))
                .await
                .unwrap(),
        );
        sub.subscribe("").await.unwrap();

        let (requests_tx, requests) = mpsc::unbounded_channel();
        let known = topic.to_owned();
        let refuse_heartbeat = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = refuse_heartbeat.clone();
        let manager = tokio::spawn(async move {
            while let Ok(message) = rep.recv().await {
                let request: Value =
                    serde_json::from_slice(message.get(0).unwrap()).unwrap_or(Value::Null);
                let refused =
                    request["action"] == "heartbeat" && refuse.swap(false, Ordering::SeqCst);
                let reply = match request["action"].as_str() {
                    _ if refused => json!({"status": "error"}),
                    Some("subscribe") => json!({
                        "topic": known, "pub_port": publish, "sub_port": subscribe, "status": "success"
                    }),
                    Some("heartbeat" | "unsubscribe") if request["topic"] == known.as_str() => {
                        json!({"status": "success"})
                    }
                    _ => json!({"status": "error"}),
                };
                let _ = requests_tx.send(request);
                if rep.send(ZmqMessage::from(reply.to_string())).await.is_err() {
                    return;
                }
            }
        });
        let (received_tx, received) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Ok(message) = sub.recv().await {
                let frame = String::from_utf8_lossy(message.get(0).unwrap()).into_owned();
                let _ = received_tx.send(frame);
            }
        });
        Self {
            ports: (manage, publish, subscribe),
            refuse_heartbeat,
            topic: topic.to_owned(),
            requests,
            publisher,
            received,
            tasks: vec![manager, reader],
        }
    }

    fn manage(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.ports.0)
    }

    /// The next manage request with this action.
    async fn request(&mut self, action: &str) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                let request = self.requests.recv().await.unwrap();
                if request["action"] == action {
                    return request;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {action} request"))
    }

    /// The manage requests up to and including the next one with this action.
    async fn requests_until(&mut self, action: &str) -> Vec<Value> {
        tokio::time::timeout(WAIT, async {
            let mut seen = Vec::new();
            loop {
                let request = self.requests.recv().await.unwrap();
                let done = request["action"] == action;
                seen.push(request);
                if done {
                    return seen;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {action} request"))
    }

    /// Sends `object` on the app's p2p topic until a sighting of it arrives
    /// (a PUB socket drops what it sends before the subscriber has joined);
    /// returns the sighting.
    async fn sighting_for(&mut self, object: &Value) -> Value {
        let frame = format!("{}indicator {object}", self.topic);
        let id = object["id"].as_str().unwrap().to_owned();
        tokio::time::timeout(WAIT, async {
            loop {
                self.publisher
                    .send(ZmqMessage::from(frame.clone()))
                    .await
                    .unwrap();
                let deadline = tokio::time::sleep(Duration::from_millis(300));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        Some(received) = self.received.recv() => {
                            let (topic, body) = received.split_once(' ').unwrap();
                            assert_eq!(topic, "stix2/sighting", "one frame, the topic first");
                            let sighting: Value = serde_json::from_str(body).unwrap();
                            if sighting["sighting_of_ref"] == id.as_str() {
                                let context = &sighting["x_threatbus_sighting_context"];
                                let problems = ctr_relay::ctim::check::sighting_problems(context);
                                assert!(problems.is_empty(), "not valid CTIM: {problems:?}");
                                return sighting;
                            }
                        }
                        () = &mut deadline => break,
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no sighting of {id}"))
    }

    async fn send_raw(&mut self, frame: String) {
        self.publisher.send(ZmqMessage::from(frame)).await.unwrap();
    }

    fn stop(self) -> (u16, u16, u16) {
        for task in &self.tasks {
            task.abort();
        }
        self.ports
    }
}

fn indicator(id: &str, pattern: &str) -> Value {
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": id,
        "created": "2026-11-23T12:00:00.000Z",
        "modified": "2026-11-23T12:00:00.000Z",
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2026-11-23T12:00:00Z"
    })
}

struct Relay {
    counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start_relay(manage: &str, c1fapp: &MockServer) -> Relay {
    start_relay_with(manage, c1fapp, |_| {}).await
}

/// As [`start_relay`], with `configure` applied to the settings last.
async fn start_relay_with(
    manage: &str,
    c1fapp: &MockServer,
    configure: impl FnOnce(&mut ThreatBusSettings),
) -> Relay {
    let mut upstream = Settings::default().upstream;
    upstream.c1fapp_api_url = Url::parse(&format!("{}{C1FAPP_PATH}", c1fapp.uri())).unwrap();
    upstream.timeout = Duration::from_secs(2);
    let metrics = Arc::new(Metrics::new().unwrap());
    let state = ProviderState::new(&upstream, Tls::new().unwrap(), metrics.clone());
    let providers = Providers::new(&state).unwrap();
    let settings = ThreatBusSettings {
        manage: ManageEndpoint::parse(manage).unwrap(),
        topics: vec![ctr_relay::threatbus::INDICATOR_TOPIC.to_owned()],
        snapshot_days: 0,
        heartbeat: Duration::from_millis(200),
        report_every: Duration::from_secs(1),
        limits: RequestLimits {
            lookup_concurrency: 4,
            ..Settings::default().limits
        },
        pool: Arc::new(MemoryPool::new(64 * 1024 * 1024, 16 * 1024 * 1024)),
        queue: 1024,
        credentials: Credentials {
            c1fapp: Some(C1fAppCredentials {
                key: Secret::new(C1FAPP_KEY),
                quota: None,
            }),
            cyberscan: None,
            entities_limit: None,
        },
        entities_limit: EntitiesLimit::DEFAULT,
        shutdown_grace: Duration::from_secs(2),
    };
    let mut settings = settings;
    configure(&mut settings);
    let counts = Arc::new(Counts::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(settings, providers, metrics, counts.clone(), async {
        let _ = stopped.await;
    }));
    Relay {
        counts,
        stop: Some(stop),
        task,
    }
}

impl Relay {
    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the loop ends after shutdown")
            .unwrap();
    }
}

async fn c1fapp_finds(server: &MockServer, value: &str, records: Value) {
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(body_partial_json(
            json!({"key": C1FAPP_KEY, "request": value}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(records))
        .mount(server)
        .await;
}

const FIRST: &str = "indicator--11111111-1111-4111-8111-111111111111";
const SECOND: &str = "indicator--22222222-2222-4222-8222-222222222222";
const THIRD: &str = "indicator--33333333-3333-4333-8333-333333333333";

#[tokio::test]
async fn indicators_become_sightings_and_a_restart_is_survived() {
    let c1fapp = MockServer::start().await;
    c1fapp_finds(&c1fapp, "evil.example", json!([c1fapp_record(json!({}))])).await;
    c1fapp_finds(&c1fapp, "192.0.2.10", json!([c1fapp_record(json!({}))])).await;
    c1fapp_finds(
        &c1fapp,
        "http://evil.example/a",
        json!([c1fapp_record(json!({}))]),
    )
    .await;

    let mut bus = FakeBus::start(None, "abcdefghijklmnopqrstuvwxyzabcdef").await;
    let relay = start_relay(&bus.manage(), &c1fapp).await;
    let subscribe = bus.request("subscribe").await;
    assert_eq!(
        subscribe,
        json!({"action": "subscribe", "topic": "stix2/indicator", "snapshot": 0})
    );

    let sighting = bus
        .sighting_for(&indicator(FIRST, "[domain-name:value = 'evil.example']"))
        .await;
    assert_eq!(sighting["type"], "sighting");
    assert_eq!(sighting["spec_version"], "2.1");
    assert!(sighting["id"].as_str().unwrap().starts_with("sighting--"));
    assert_eq!(sighting["sighting_of_ref"], FIRST);
    assert_eq!(sighting["x_threatbus_indicator_value"], "evil.example");
    assert_eq!(sighting["count"], 1);
    assert_eq!(sighting["last_seen"], "2020-04-12T00:00:00.000Z");
    let context = &sighting["x_threatbus_sighting_context"];
    assert_eq!(context["source"], "C1fApp");
    assert_eq!(context["type"], "sighting");
    assert_eq!(context["observables"][0]["value"], "evil.example");

    // Messages that are not point indicators are skipped, and do not stop
    // it: the next indicator (sent on the same connection, so after them)
    // still gets its sighting.
    let topic = bus.topic.clone();
    bus.send_raw(format!("{topic}indicator {{not json")).await;
    bus.send_raw(format!("{topic}indicator")).await;
    let mut removal = indicator(FIRST, "[domain-name:value = 'evil.example']");
    removal["x_threatbus_update"] = json!("REMOVE");
    bus.send_raw(format!("{topic}indicator {removal}")).await;
    let compound = indicator(
        FIRST,
        "[domain-name:value = 'a.example'] OR [domain-name:value = 'b.example']",
    );
    bus.send_raw(format!("{topic}indicator {compound}")).await;

    let sighting = bus
        .sighting_for(&indicator(THIRD, "[url:value = 'http://evil.example/a']"))
        .await;
    assert_eq!(
        sighting["x_threatbus_indicator_value"],
        "http://evil.example/a"
    );

    let counts = relay.counts.snapshot();
    assert!(counts.skipped >= 4, "{counts:?}");
    assert!(counts.received >= 5, "{counts:?}");
    assert!(
        counts.enriched >= 1 && counts.sightings_sent >= 1,
        "{counts:?}"
    );
    assert_eq!(counts.errors, 0, "{counts:?}");

    // Threat Bus restarts on the same ports and no longer knows the topic:
    // the heartbeat fails, and the relay subscribes again.
    let ports = bus.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bus = FakeBus::start(Some(ports), "zyxwvutsrqponmlkjihgfedcbazyxwvu").await;
    bus.request("subscribe").await;
    let sighting = bus
        .sighting_for(&indicator(SECOND, "[ipv4-addr:value = '192.0.2.10']"))
        .await;
    assert_eq!(sighting["sighting_of_ref"], SECOND);
    assert_eq!(sighting["x_threatbus_indicator_value"], "192.0.2.10");

    // On shutdown it unsubscribes its current topic.
    relay.shut_down().await;
    let unsubscribe = bus.request("unsubscribe").await;
    assert_eq!(unsubscribe["topic"], "zyxwvutsrqponmlkjihgfedcbazyxwvu");
}

#[tokio::test]
async fn a_failing_provider_is_counted_and_the_loop_goes_on() {
    let c1fapp = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(body_partial_json(json!({"request": "broken.example"})))
        .respond_with(ResponseTemplate::new(500).set_body_string("down"))
        .mount(&c1fapp)
        .await;
    c1fapp_finds(&c1fapp, "evil.example", json!([c1fapp_record(json!({}))])).await;
    let mut bus = FakeBus::start(None, "abcdefghijklmnopqrstuvwxyzabcdef").await;
    let relay = start_relay(&bus.manage(), &c1fapp).await;
    bus.request("subscribe").await;

    // Let the broken lookup be received first (sent until one gets through).
    let topic = bus.topic.clone();
    let broken = indicator(FIRST, "[domain-name:value = 'broken.example']");
    tokio::time::timeout(WAIT, async {
        while relay.counts.errors.load(Ordering::Relaxed) == 0 {
            bus.send_raw(format!("{topic}indicator {broken}")).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the failed lookup is counted");

    let sighting = bus
        .sighting_for(&indicator(SECOND, "[domain-name:value = 'evil.example']"))
        .await;
    assert_eq!(sighting["sighting_of_ref"], SECOND);
    relay.shut_down().await;
}

#[tokio::test]
async fn several_topics_are_one_subscription_with_one_heartbeat() {
    let c1fapp = MockServer::start().await;
    let mut bus = FakeBus::start(None, "abcdefghijklmnopqrstuvwxyzabcdef").await;
    let topics = ["stix2/indicator", "stix2/sighting"].map(str::to_owned);
    let relay = start_relay_with(&bus.manage(), &c1fapp, |settings| {
        settings.topics = topics.to_vec();
    })
    .await;
    assert_eq!(
        bus.request("subscribe").await,
        json!({"action": "subscribe", "topic": topics, "snapshot": 0})
    );
    // Then heartbeats of the one point-to-point topic, and no other subscription.
    for _ in 0..3 {
        let next = bus.requests.recv().await.unwrap();
        assert_eq!(
            next,
            json!({"action": "heartbeat", "topic": "abcdefghijklmnopqrstuvwxyzabcdef"})
        );
    }
    relay.shut_down().await;
    assert_eq!(bus.request("unsubscribe").await["topic"], bus.topic);
}

#[tokio::test]
async fn without_a_threat_bus_it_keeps_trying_and_stops_on_request() {
    let c1fapp = MockServer::start().await;
    let port = crate::helpers::closed_port();
    let relay = start_relay(&format!("tcp://127.0.0.1:{port}"), &c1fapp).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!relay.task.is_finished(), "it does not give up");
    relay.shut_down().await;
}

/// Waits until `counter` of the relay's counts reaches `at_least`.
async fn wait_for(counts: &Counts, at_least: u64, counter: impl Fn(&Counts) -> u64) {
    tokio::time::timeout(WAIT, async {
        while counter(counts) < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the count stayed at {}", counter(counts)));
}

#[tokio::test]
async fn a_flood_of_indicators_is_bounded_and_queued_lookups_are_not_started_at_shutdown() {
    let c1fapp = MockServer::start().await;
    c1fapp_finds(&c1fapp, "probe.example", json!([c1fapp_record(json!({}))])).await;
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&c1fapp)
        .await;
    let mut bus = FakeBus::start(None, "floodtopic").await;
    let relay = start_relay_with(&bus.manage(), &c1fapp, |settings| {
        settings.limits.lookup_concurrency = 1;
        settings.queue = 4;
    })
    .await;
    bus.request("subscribe").await;
    // Connected: a first indicator comes back as a sighting.
    bus.sighting_for(&indicator(FIRST, "[domain-name:value = 'probe.example']"))
        .await;
    let received = relay.counts.received.load(Ordering::SeqCst);

    // 50 indicators of a slow provider: one lookup at a time, four waiting.
    for n in 0..50 {
        let id = format!("indicator--{:08x}-0000-4000-8000-000000000000", n + 100);
        let object = indicator(&id, &format!("[domain-name:value = 'slow{n}.example']"));
        bus.send_raw(format!("{}indicator {object}", bus.topic))
            .await;
    }
    wait_for(&relay.counts, received + 50, |counts| {
        counts.received.load(Ordering::SeqCst)
    })
    .await;
    let counts = relay.counts.clone();
    relay.shut_down().await;

    let slow_lookups = c1fapp
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|request| String::from_utf8_lossy(&request.body).contains("slow"))
        .count();
    assert_eq!(
        slow_lookups, 1,
        "one lookup ran; none was started at shutdown"
    );
    assert_eq!(
        counts.dropped.load(Ordering::SeqCst),
        49,
        "every indicator not looked up is counted"
    );
    bus.stop();
}

#[tokio::test]
async fn an_oversized_message_is_cut_and_counted_and_the_relay_goes_on() {
    let c1fapp = MockServer::start().await;
    c1fapp_finds(&c1fapp, "evil.example", json!([c1fapp_record(json!({}))])).await;
    let mut bus = FakeBus::start(None, "bigtopic").await;
    let relay = start_relay(&bus.manage(), &c1fapp).await;
    bus.request("subscribe").await;
    bus.sighting_for(&indicator(FIRST, "[domain-name:value = 'evil.example']"))
        .await;
    let huge = format!(
        "{}indicator {{\"type\": \"indicator\", \"padding\": \"{}\"}}",
        bus.topic,
        "x".repeat(2 * 1024 * 1024)
    );
    bus.send_raw(huge).await;
    wait_for(&relay.counts, 1, |counts| {
        counts.oversized.load(Ordering::SeqCst)
    })
    .await;
    // The socket reconnects through the guard; the next indicator is served.
    bus.sighting_for(&indicator(SECOND, "[domain-name:value = 'evil.example']"))
        .await;
    relay.shut_down().await;
    bus.stop();
}

#[tokio::test]
async fn a_refused_heartbeat_gives_the_old_topic_up_before_subscribing_again() {
    let c1fapp = MockServer::start().await;
    let mut bus = FakeBus::start(None, "steadytopic").await;
    let relay = start_relay(&bus.manage(), &c1fapp).await;
    bus.request("subscribe").await;
    bus.refuse_heartbeat.store(true, Ordering::SeqCst);
    let before = bus.requests_until("subscribe").await;
    let actions: Vec<&str> = before
        .iter()
        .filter_map(|request| request["action"].as_str())
        .collect();
    assert!(
        actions.ends_with(&["heartbeat", "unsubscribe", "subscribe"]),
        "{actions:?}"
    );
    assert_eq!(before[before.len() - 2]["topic"], "steadytopic");
    relay.shut_down().await;
    bus.stop();
}

#[tokio::test]
async fn a_quota_holds_in_threat_bus_mode_too() {
    let c1fapp = MockServer::start().await;
    c1fapp_finds(&c1fapp, "evil.example", json!([c1fapp_record(json!({}))])).await;
    // Past the quota: never asked (the mock fails the test on a call).
    Mock::given(method("POST"))
        .and(path(C1FAPP_PATH))
        .and(body_partial_json(json!({"request": "later.example"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(0)
        .mount(&c1fapp)
        .await;
    let mut bus = FakeBus::start(None, "qrstuvwxyzabcdefghijklmnopqrstuv").await;
    let relay = start_relay_with(&bus.manage(), &c1fapp, |settings| {
        if let Some(c1fapp) = &mut settings.credentials.c1fapp {
            c1fapp.quota = Some(ctr_relay::domain::Quota::parse("1/day").unwrap());
        }
    })
    .await;
    bus.request("subscribe").await;
    bus.sighting_for(&indicator(FIRST, "[domain-name:value = 'evil.example']"))
        .await;
    let topic = bus.topic.clone();
    let later = indicator(SECOND, "[domain-name:value = 'later.example']");
    tokio::time::timeout(WAIT, async {
        while relay.counts.errors.load(Ordering::Relaxed) == 0 {
            bus.send_raw(format!("{topic}indicator {later}")).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the lookup past the quota is counted as an error");
    relay.shut_down().await;
}
