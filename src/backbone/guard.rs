//! A bound on the size of the messages the broker delivers.
//!
//! The AMQP client reads a delivery's whole body before the relay sees it,
//! and RabbitMQ takes messages of up to 128 MiB by default: a few large
//! messages in the inbox would hold that much in memory, and a process killed
//! for it would be given them again when it restarts. So the relay's AMQP
//! connection goes through this guard on loopback, which connects on to the
//! broker (with TLS for `amqps://`) and follows the frames both ways. A
//! `basic.deliver` is held until its content header announces the body's
//! size; a body over the bound is never forwarded: the guard rejects the
//! delivery itself (`basic.reject`, no requeue: the operator's dead-letter
//! exchange keeps it), drops its body frames as they pass, logs and counts
//! it. The relay's client never sees it.
//!
//! The guard's rejects go to the broker between the client's frames, and
//! never inside a publish on the same channel (`publishes.rs`).
//!
//! Frames are at most the negotiated `frame_max`, which the relay's client
//! asks to be [`FRAME_MAX`]; a larger frame, or one without its end marker,
//! ends the connection (the relay reconnects).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use publishes::Publishes;

mod publishes;

/// The frame size the relay's client asks for (RabbitMQ's default).
pub const FRAME_MAX: u32 = 128 * 1024;

const FRAME_HEADER: usize = 7;
const FRAME_END: u8 = 0xCE;
const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;
const BASIC: u16 = 60;
const DELIVER: u16 = 60;
const PUBLISH: u16 = 40;
const REJECT: u16 = 90;
/// `AMQP\0\0\9\1`, the first bytes a client sends.
const PROTOCOL_HEADER: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the broker is, and how to reach it.
#[derive(Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// TLS (`amqps://`) with this configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A frame that breaks the protocol or the size bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes, over the negotiated maximum")]
    TooLarge(usize),
    #[error("a frame without its end marker")]
    Malformed,
}

/// Cuts a byte stream into whole frames (after `PROTOCOL_HEADER` bytes passed
/// as they are, for the client's side).
#[derive(Debug)]
pub struct Splitter {
    buffer: Vec<u8>,
    /// Where the next frame starts in `buffer`: what is before was handed out.
    start: usize,
    raw_left: usize,
}

impl Splitter {
    pub fn new(raw_prefix: usize) -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            raw_left: raw_prefix,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame (or the raw prefix), if it has all arrived.
    pub fn next(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let rest = &self.buffer[self.start..];
        if self.raw_left > 0 {
            let taken = self.raw_left.min(rest.len());
            if taken == 0 {
                return Ok(None);
            }
            self.raw_left -= taken;
            self.start += taken;
            return Ok(Some(&self.buffer[self.start - taken..self.start]));
        }
        if rest.len() < FRAME_HEADER {
            return Ok(None);
        }
        let size = u32::from_be_bytes([rest[3], rest[4], rest[5], rest[6]]) as usize;
        let total = FRAME_HEADER + size + 1;
        if size > FRAME_MAX as usize {
            return Err(FrameError::TooLarge(total));
        }
        if rest.len() < total {
            return Ok(None);
        }
        if rest[total - 1] != FRAME_END {
            return Err(FrameError::Malformed);
        }
        self.start += total;
        Ok(Some(&self.buffer[self.start - total..self.start]))
    }
}

fn channel_of(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[1], frame[2]])
}

fn payload(frame: &[u8]) -> &[u8] {
    &frame[FRAME_HEADER..frame.len() - 1]
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// What happens to a frame from the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on to the client.
    Forward,
    /// Send this held `basic.deliver` on, then the frame (its content
    /// header).
    Release(Vec<u8>),
    /// Nothing to send now (held, or dropped).
    Hold,
    /// The delivery `tag` on `channel` has a body of `bytes`, over the bound:
    /// reject it to the broker; its body frames will be dropped.
    Reject { channel: u16, tag: u64, bytes: u64 },
}

#[derive(Debug)]
enum Held {
    Deliver { frame: Vec<u8>, tag: u64 },
    Dropping { left: u64 },
}

/// Follows the deliveries of the broker's side, per channel.
#[derive(Debug)]
pub struct Deliveries {
    max_body: u64,
    channels: HashMap<u16, Held>,
}

impl Deliveries {
    pub fn new(max_body: u64) -> Self {
        Self {
            max_body,
            channels: HashMap::new(),
        }
    }

    pub fn on_frame(&mut self, frame: &[u8]) -> Result<Verdict, FrameError> {
        let channel = channel_of(frame);
        let body = payload(frame);
        match frame[0] {
            METHOD if u16_at(body, 0) == Some(BASIC) && u16_at(body, 2) == Some(DELIVER) => {
                // consumer-tag (short string), then the delivery tag.
                let tag_length = *body.get(4).ok_or(FrameError::Malformed)? as usize;
                let tag = u64_at(body, 5 + tag_length).ok_or(FrameError::Malformed)?;
                let held = Held::Deliver {
                    frame: frame.to_vec(),
                    tag,
                };
                // A deliver always comes with a content header, even for an
                // empty body: two in a row break the protocol.
                match self.channels.insert(channel, held) {
                    None => Ok(Verdict::Hold),
                    Some(_) => Err(FrameError::Malformed),
                }
            }
            HEADER => match self.channels.remove(&channel) {
                Some(Held::Deliver {
                    frame: deliver,
                    tag,
                }) => {
                    let size = u64_at(body, 4).ok_or(FrameError::Malformed)?;
                    if size > self.max_body {
                        self.channels.insert(channel, Held::Dropping { left: size });
                        Ok(Verdict::Reject {
                            channel,
                            tag,
                            bytes: size,
                        })
                    } else {
                        Ok(Verdict::Release(deliver))
                    }
                }
                // A header while a body is being dropped breaks the protocol.
                Some(Held::Dropping { .. }) => Err(FrameError::Malformed),
                None => Ok(Verdict::Forward),
            },
            BODY => match self.channels.get_mut(&channel) {
                Some(Held::Dropping { left }) => {
                    *left = left.saturating_sub(body.len() as u64);
                    if *left == 0 {
                        self.channels.remove(&channel);
                    }
                    Ok(Verdict::Hold)
                }
                _ => Ok(Verdict::Forward),
            },
            _ => Ok(Verdict::Forward),
        }
    }
}

/// `basic.reject` of `tag` on `channel`, without requeue.
pub fn reject_frame(channel: u16, tag: u64) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER + 13 + 1);
    frame.push(METHOD);
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&13u32.to_be_bytes());
    frame.extend_from_slice(&BASIC.to_be_bytes());
    frame.extend_from_slice(&REJECT.to_be_bytes());
    frame.extend_from_slice(&tag.to_be_bytes());
    frame.push(0); // requeue: false
    frame.push(FRAME_END);
    frame
}

/// The guard's listener; it stops when dropped.
pub struct Guard {
    pub port: u16,
    accept: JoinHandle<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Guard {
    /// Listens on loopback; each connection made to it is relayed to
    /// `upstream`, deliveries over `max_body` bytes rejected unread.
    pub async fn start(
        upstream: Upstream,
        max_body: u64,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Guard> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accept = tokio::spawn(async move {
            while let Ok((inner, _)) = listener.accept().await {
                // Every frame goes on at once: Nagle's algorithm would hold a
                // small one (a confirm, an ack) back for tens of ms.
                let _ = inner.set_nodelay(true);
                let (upstream, metrics) = (upstream.clone(), metrics.clone());
                tokio::spawn(async move {
                    match connect(&upstream).await {
                        Ok(outer) => relay(inner, outer, max_body, &metrics).await,
                        // The relay's client sees the connection close and
                        // retries; this line says why.
                        Err(error) => tracing::warn!(%error, "cannot connect to the broker"),
                    }
                });
            }
        });
        Ok(Guard { port, accept })
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(upstream: &Upstream) -> Result<Box<dyn Stream>, String> {
    let address = (upstream.host.as_str(), upstream.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "TCP connect timed out".to_owned())?
        .map_err(|error| format!("TCP: {error}"))?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = &upstream.tls else {
        return Ok(Box::new(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(upstream.host.clone())
        .map_err(|error| format!("TLS: {error}"))?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|error| format!("TLS: {error}"))?;
    Ok(Box::new(tls))
}

/// Relays until either side closes or breaks the framing.
async fn relay(inner: TcpStream, outer: Box<dyn Stream>, max_body: u64, metrics: &Metrics) {
    let (inner_read, inner_write) = inner.into_split();
    let (outer_read, outer_write) = tokio::io::split(outer);
    let (rejects, rejected) = mpsc::unbounded_channel();
    let result = tokio::select! {
        result = outward(inner_read, outer_write, rejected) => result,
        result = inward(outer_read, inner_write, &rejects, max_body, metrics) => result,
    };
    if let Err(error) = result {
        tracing::warn!(%error, "the broker connection is cut");
    }
}

/// The client's frames to the broker, whole, with the guard's rejects
/// between them — never inside a publish of the reject's channel, whose
/// frames may arrive over several reads (a reply over 64 KiB): a reject
/// falling due then waits for the publish's last body frame.
async fn outward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut rejects: mpsc::UnboundedReceiver<Vec<u8>>,
) -> Result<(), String> {
    let mut splitter = Splitter::new(PROTOCOL_HEADER);
    let mut publishes = Publishes::default();
    let mut waiting: Vec<Vec<u8>> = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        tokio::select! {
            read = from.read(&mut buffer) => {
                let n = read.map_err(|error| error.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                splitter.push(&buffer[..n]);
                // The whole frames of this read, in one write.
                loop {
                    // The protocol header (maybe in pieces) is not a frame.
                    let raw = splitter.raw_left > 0;
                    let Some(frame) = splitter.next().map_err(|error| format!("from the client: {error}"))? else {
                        break;
                    };
                    out.extend_from_slice(frame);
                    if raw {
                        continue;
                    }
                    publishes
                        .on_frame(frame)
                        .map_err(|error| format!("from the client: {error}"))?;
                    let channel = channel_of(frame);
                    if publishes.idle(channel) {
                        waiting.retain(|reject| {
                            let due = channel_of(reject) == channel;
                            if due {
                                out.extend_from_slice(reject);
                            }
                            !due
                        });
                    }
                }
            }
            Some(reject) = rejects.recv() => match publishes.idle(channel_of(&reject)) {
                true => out.extend_from_slice(&reject),
                false => waiting.push(reject),
            },
        }
        if !out.is_empty() {
            to.write_all(&out)
                .await
                .map_err(|error| error.to_string())?;
            to.flush().await.map_err(|error| error.to_string())?;
            out.clear();
        }
    }
}

/// The broker's frames to the client, oversized deliveries taken out.
async fn inward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    rejects: &mpsc::UnboundedSender<Vec<u8>>,
    max_body: u64,
    metrics: &Metrics,
) -> Result<(), String> {
    let mut splitter = Splitter::new(0);
    let mut deliveries = Deliveries::new(max_body);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = from
            .read(&mut buffer)
            .await
            .map_err(|error| error.to_string())?;
        if n == 0 {
            return Ok(());
        }
        splitter.push(&buffer[..n]);
        // What this read completes, in one write.
        while let Some(frame) = splitter
            .next()
            .map_err(|error| format!("from the broker: {error}"))?
        {
            let verdict = deliveries
                .on_frame(frame)
                .map_err(|error| format!("from the broker: {error}"))?;
            match verdict {
                Verdict::Forward => out.extend_from_slice(frame),
                Verdict::Release(deliver) => {
                    out.extend_from_slice(&deliver);
                    out.extend_from_slice(frame);
                }
                Verdict::Hold => {}
                Verdict::Reject {
                    channel,
                    tag,
                    bytes,
                } => {
                    metrics.backbone_event("oversized");
                    tracing::warn!(
                        bytes,
                        limit = max_body,
                        "a message over the size bound was rejected unread"
                    );
                    if rejects.send(reject_frame(channel, tag)).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        if !out.is_empty() {
            to.write_all(&out)
                .await
                .map_err(|error| error.to_string())?;
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests;
