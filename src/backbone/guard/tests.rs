use super::*;

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![kind];
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame.push(FRAME_END);
    frame
}

fn deliver(channel: u16, tag: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&BASIC.to_be_bytes());
    payload.extend_from_slice(&DELIVER.to_be_bytes());
    let consumer = b"ctr-relay-1";
    payload.push(consumer.len() as u8);
    payload.extend_from_slice(consumer);
    payload.extend_from_slice(&tag.to_be_bytes());
    payload.push(0); // redelivered
    payload.extend_from_slice(b"\x0csoar-publish\x05topic");
    frame(METHOD, channel, &payload)
}

fn header(channel: u16, size: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&BASIC.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.extend_from_slice(&size.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes()); // no properties
    frame(HEADER, channel, &payload)
}

fn body(channel: u16, bytes: usize) -> Vec<u8> {
    frame(BODY, channel, &vec![b'x'; bytes])
}

fn heartbeat() -> Vec<u8> {
    frame(8, 0, &[])
}

#[test]
fn a_stream_is_cut_into_whole_frames_in_any_chunking() {
    let mut bytes = b"AMQP\x00\x00\x09\x01".to_vec();
    let frames = [deliver(1, 7), header(1, 10), body(1, 10), heartbeat()];
    for frame in &frames {
        bytes.extend_from_slice(frame);
    }
    for chunk in [1, 2, 7, 8, 13, 100, bytes.len()] {
        let mut splitter = Splitter::new(PROTOCOL_HEADER);
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            splitter.push(piece);
            while let Some(frame) = splitter.next().unwrap() {
                out.push(frame.to_vec());
            }
        }
        assert_eq!(out.concat(), bytes, "chunks of {chunk}");
        assert_eq!(&out[out.len() - 4..], &frames[..], "chunks of {chunk}");
    }
}

#[test]
fn a_frame_over_the_maximum_or_without_its_end_is_refused() {
    let mut splitter = Splitter::new(0);
    let mut huge = vec![BODY, 0, 1];
    huge.extend_from_slice(&(FRAME_MAX + 1).to_be_bytes());
    splitter.push(&huge);
    assert!(matches!(splitter.next(), Err(FrameError::TooLarge(_))));

    let mut splitter = Splitter::new(0);
    let mut broken = body(1, 4);
    *broken.last_mut().unwrap() = 0;
    splitter.push(&broken);
    assert_eq!(splitter.next().map(|_| ()), Err(FrameError::Malformed));
}

#[test]
fn a_delivery_within_the_bound_passes_whole_and_in_order() {
    let mut deliveries = Deliveries::new(100);
    assert_eq!(deliveries.on_frame(&deliver(1, 5)).unwrap(), Verdict::Hold);
    assert_eq!(
        deliveries.on_frame(&header(1, 100)).unwrap(),
        Verdict::Release(deliver(1, 5)),
        "the deliver goes on with its header"
    );
    assert_eq!(
        deliveries.on_frame(&body(1, 100)).unwrap(),
        Verdict::Forward
    );
    assert_eq!(deliveries.on_frame(&heartbeat()).unwrap(), Verdict::Forward);
}

#[test]
fn a_delivery_over_the_bound_is_rejected_and_its_body_dropped() {
    let mut deliveries = Deliveries::new(100);
    assert_eq!(deliveries.on_frame(&deliver(2, 9)).unwrap(), Verdict::Hold);
    assert_eq!(
        deliveries.on_frame(&header(2, 250)).unwrap(),
        Verdict::Reject {
            channel: 2,
            tag: 9,
            bytes: 250
        }
    );
    // Frames of another channel pass meanwhile.
    assert_eq!(deliveries.on_frame(&body(3, 10)).unwrap(), Verdict::Forward);
    for _ in 0..2 {
        assert_eq!(deliveries.on_frame(&body(2, 100)).unwrap(), Verdict::Hold);
    }
    assert_eq!(deliveries.on_frame(&body(2, 50)).unwrap(), Verdict::Hold);
    // The next delivery on that channel is served.
    assert_eq!(deliveries.on_frame(&deliver(2, 10)).unwrap(), Verdict::Hold);
    assert_eq!(
        deliveries.on_frame(&header(2, 3)).unwrap(),
        Verdict::Release(deliver(2, 10))
    );
    assert_eq!(deliveries.on_frame(&body(2, 3)).unwrap(), Verdict::Forward);
}

#[test]
fn frames_out_of_protocol_order_are_errors() {
    let mut payload = BASIC.to_be_bytes().to_vec();
    payload.extend_from_slice(&DELIVER.to_be_bytes());
    payload.push(200); // a consumer tag longer than the frame
    let mut deliveries = Deliveries::new(100);
    assert_eq!(
        deliveries.on_frame(&frame(METHOD, 1, &payload)),
        Err(FrameError::Malformed)
    );
    let mut deliveries = Deliveries::new(100);
    deliveries.on_frame(&deliver(1, 1)).unwrap();
    assert_eq!(
        deliveries.on_frame(&deliver(1, 2)),
        Err(FrameError::Malformed),
        "two delivers without a header"
    );
}

#[test]
fn the_reject_is_basic_reject_without_requeue() {
    let mut expected = vec![METHOD, 0, 4, 0, 0, 0, 13, 0, 60, 0, 90];
    expected.extend_from_slice(&77u64.to_be_bytes());
    expected.extend_from_slice(&[0, FRAME_END]);
    assert_eq!(reject_frame(4, 77), expected);
}

#[tokio::test]
async fn through_the_guard_small_deliveries_pass_and_large_ones_are_rejected_to_the_broker() {
    let broker = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = Upstream {
        host: "127.0.0.1".to_owned(),
        port: broker.local_addr().unwrap().port(),
        tls: None,
    };
    let metrics = Arc::new(Metrics::new().unwrap());
    let guard = Guard::start(upstream, 1000, metrics.clone()).await.unwrap();
    let mut client = TcpStream::connect(("127.0.0.1", guard.port)).await.unwrap();
    let (mut server, _) = broker.accept().await.unwrap();

    client.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let mut greeting = [0u8; 8];
    server.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"AMQP\x00\x00\x09\x01");

    let mut sent = Vec::new();
    for frame in [
        deliver(1, 1),
        header(1, 5000),
        body(1, 4000),
        body(1, 1000),
        deliver(1, 2),
        header(1, 10),
        body(1, 10),
    ] {
        sent.extend_from_slice(&frame);
    }
    server.write_all(&sent).await.unwrap();
    let expected = [deliver(1, 2), header(1, 10), body(1, 10)].concat();
    let mut received = vec![0u8; expected.len()];
    client.read_exact(&mut received).await.unwrap();
    assert_eq!(
        received, expected,
        "only the small delivery reaches the client"
    );

    let mut reject = vec![0u8; reject_frame(1, 1).len()];
    server.read_exact(&mut reject).await.unwrap();
    assert_eq!(
        reject,
        reject_frame(1, 1),
        "the broker is told to reject the large one"
    );

    // The client's own frames still pass, whole.
    client.write_all(&heartbeat()).await.unwrap();
    let mut beat = vec![0u8; heartbeat().len()];
    server.read_exact(&mut beat).await.unwrap();
    assert_eq!(beat, heartbeat());
    assert!(
        metrics
            .render()
            .unwrap()
            .contains(r#"ctr_relay_backbone_events_total{event="oversized"} 1"#)
    );
}

fn publish(channel: u16) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&BASIC.to_be_bytes());
    payload.extend_from_slice(&PUBLISH.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes()); // reserved
    payload.push(0); // the default exchange
    payload.extend_from_slice(b"\x0fctr-relay-outbox");
    payload.push(0); // mandatory, immediate: false
    frame(METHOD, channel, &payload)
}

/// The client's frames as the broker receives them through `outward`, the
/// guard's rejects let in while the client writes `reads` one at a time.
async fn outward_of(reads: Vec<Vec<u8>>, reject_after: usize) -> Vec<u8> {
    let (mut client, client_side) = tokio::io::duplex(1 << 20);
    let (broker_side, mut broker) = tokio::io::duplex(1 << 20);
    let (rejects, rejected) = mpsc::unbounded_channel();
    let task = tokio::spawn(outward(client_side, broker_side, rejected));
    client.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    for (n, read) in reads.into_iter().enumerate() {
        client.write_all(&read).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        if n + 1 == reject_after {
            rejects.send(reject_frame(1, 9)).unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    drop(client);
    task.await.unwrap().unwrap();
    let mut received = Vec::new();
    broker.read_to_end(&mut received).await.unwrap();
    received[PROTOCOL_HEADER..].to_vec()
}

#[tokio::test]
async fn a_reject_never_splits_a_publish_whose_frames_arrive_in_separate_reads() {
    // A 300 KiB reply: method, header and the first body frame in one read,
    // the rest of its body in two more; a reject falls due after the first.
    let reply = [
        publish(1),
        header(1, 300 * 1024),
        body(1, 100 * 1024),
        body(1, 100 * 1024),
        body(1, 100 * 1024),
    ];
    let reads = vec![
        reply[..3].concat(),
        reply[3].clone(),
        [reply[4].clone(), heartbeat()].concat(),
    ];
    let received = outward_of(reads, 1).await;
    let expected = [reply.concat(), reject_frame(1, 9), heartbeat()].concat();
    assert_eq!(received.len(), expected.len());
    assert!(
        received == expected,
        "the reject waits for the publish's last body frame"
    );

    // Between publishes (and for an empty body, after its header) a reject
    // goes at once.
    let empty = [publish(1), header(1, 0)].concat();
    let received = outward_of(vec![empty.clone(), heartbeat()], 1).await;
    assert_eq!(received, [empty, reject_frame(1, 9), heartbeat()].concat());
}

#[test]
fn publishes_are_followed_per_channel() {
    let mut publishes = Publishes::default();
    for frame in [publish(1), header(1, 10)] {
        publishes.on_frame(&frame).unwrap();
        assert!(!publishes.idle(1));
        assert!(publishes.idle(2), "another channel");
    }
    publishes.on_frame(&body(1, 4)).unwrap();
    assert!(!publishes.idle(1));
    publishes.on_frame(&body(1, 6)).unwrap();
    assert!(publishes.idle(1));
    // A second publish before the first's content breaks the protocol.
    publishes.on_frame(&publish(3)).unwrap();
    assert_eq!(publishes.on_frame(&publish(3)), Err(FrameError::Malformed));
}
