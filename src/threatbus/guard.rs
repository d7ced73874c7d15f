//! A bound on the size of ZeroMQ messages from Threat Bus.
//!
//! The `zeromq` crate has no maximum message size: a frame header may announce
//! any length, and its reader reserves that much. So the sockets that receive
//! from Threat Bus connect to a guard on loopback instead, which connects on
//! to Threat Bus and copies bytes both ways, reading only the framing of what
//! comes back (ZMTP 3: a 64-byte greeting, then frames of a flags byte, a
//! 1- or 8-byte length and the body). A message (all frames up to the last)
//! larger than the bound ends the connection before its body is read; the
//! socket reconnects through the guard, and the message is counted and lost.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The largest message taken from Threat Bus: STIX indicators are a few KB.
pub const MAX_MESSAGE_BYTES: u64 = 1024 * 1024;

const GREETING: usize = 64;

/// Where a ZMTP byte stream is, as far as framing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting {
        left: usize,
    },
    Flags,
    Length {
        long: bool,
        more: bool,
        read: usize,
        value: u64,
    },
    Body {
        left: u64,
        more: bool,
    },
}

/// Follows the framing of one direction of a ZMTP connection and says when a
/// message passes `max` bytes.
#[derive(Debug)]
pub struct Framing {
    state: State,
    /// Bytes of the message so far (its frames before the current one).
    message: u64,
    max: u64,
}

/// A message larger than allowed was announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized;

impl Framing {
    pub fn new(max: u64) -> Self {
        Self {
            state: State::Greeting { left: GREETING },
            message: 0,
            max,
        }
    }

    /// Follows `bytes`; `Err` as soon as a frame's announced length would take
    /// its message past the bound (before any of its body).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Oversized> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.state {
                State::Greeting { left } => {
                    let taken = left.min(rest.len());
                    rest = &rest[taken..];
                    self.state = match left - taken {
                        0 => State::Flags,
                        left => State::Greeting { left },
                    };
                }
                State::Flags => {
                    let flags = rest[0];
                    rest = &rest[1..];
                    self.state = State::Length {
                        long: flags & 0b10 != 0,
                        more: flags & 0b01 != 0,
                        read: 0,
                        value: 0,
                    };
                }
                State::Length {
                    long,
                    more,
                    read,
                    value,
                } => {
                    let value = (value << 8) | u64::from(rest[0]);
                    rest = &rest[1..];
                    let read = read + 1;
                    if read < if long { 8 } else { 1 } {
                        self.state = State::Length {
                            long,
                            more,
                            read,
                            value,
                        };
                        continue;
                    }
                    let total = self.message.saturating_add(value);
                    if total > self.max {
                        return Err(Oversized);
                    }
                    self.message = total;
                    self.state = State::Body { left: value, more };
                    self.end_of_body_if_done();
                }
                State::Body { left, more } => {
                    let taken = left.min(rest.len() as u64);
                    rest = &rest[taken as usize..];
                    self.state = State::Body {
                        left: left - taken,
                        more,
                    };
                    self.end_of_body_if_done();
                }
            }
        }
        Ok(())
    }

    fn end_of_body_if_done(&mut self) {
        if let State::Body { left: 0, more } = self.state {
            if !more {
                self.message = 0;
            }
            self.state = State::Flags;
        }
    }
}

/// Called once for each message cut for its size.
pub type OnOversized = Arc<dyn Fn() + Send + Sync>;

/// A guard in front of one Threat Bus endpoint.
#[derive(Debug)]
pub struct Guard {
    /// `tcp://127.0.0.1:<port>`: where to connect instead of Threat Bus.
    pub local: String,
    accept: JoinHandle<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Guard {
    /// Listens on loopback; each connection made to it is relayed to
    /// `upstream` (`host:port`), and cut when a message from there is larger
    /// than `max` (reported to `oversized`).
    pub async fn start(
        upstream: String,
        max: u64,
        oversized: OnOversized,
    ) -> std::io::Result<Guard> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local: SocketAddr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            while let Ok((inner, _)) = listener.accept().await {
                let (upstream, oversized) = (upstream.clone(), oversized.clone());
                tokio::spawn(async move {
                    if let Ok(outer) = TcpStream::connect(&upstream).await {
                        relay(inner, outer, max, &oversized).await;
                    }
                });
            }
        });
        Ok(Guard {
            local: format!("tcp://{local}"),
            accept,
        })
    }
}

/// Copies bytes both ways until either side closes, or a message from
/// `outer` is too large (then both are closed).
async fn relay(inner: TcpStream, outer: TcpStream, max: u64, oversized: &OnOversized) {
    let (mut inner_read, mut inner_write) = inner.into_split();
    let (mut outer_read, mut outer_write) = outer.into_split();
    let outward = async {
        let _ = tokio::io::copy(&mut inner_read, &mut outer_write).await;
    };
    let inward = async {
        let mut framing = Framing::new(max);
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match outer_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if framing.feed(&buffer[..n]).is_err() {
                oversized();
                tracing::warn!(
                    limit = max,
                    "a Threat Bus message is larger than the limit; connection cut"
                );
                return;
            }
            if inner_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = outward => {}
        () = inward => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(more: bool, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        if body.len() > 255 {
            bytes.push(0b10 | u8::from(more));
            bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
        } else {
            bytes.push(u8::from(more));
            bytes.push(body.len() as u8);
        }
        bytes.extend_from_slice(body);
        bytes
    }

    fn stream(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = vec![0xff; GREETING];
        for frame in frames {
            bytes.extend_from_slice(frame);
        }
        bytes
    }

    #[test]
    fn messages_within_the_bound_pass_in_any_chunking() {
        let bytes = stream(&[
            frame(false, b"small"),
            frame(true, &[7; 600]),
            frame(false, &[8; 400]),
            frame(false, &[9; 1000]),
        ]);
        for chunk in [1, 3, 64, 500, bytes.len()] {
            let mut framing = Framing::new(1000);
            for piece in bytes.chunks(chunk) {
                assert_eq!(framing.feed(piece), Ok(()), "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn a_frame_announcing_more_than_the_bound_is_refused_before_its_body() {
        let mut framing = Framing::new(1000);
        let mut bytes = stream(&[frame(false, b"fine")]);
        bytes.push(0b10);
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(framing.feed(&bytes), Err(Oversized));
    }

    #[test]
    fn a_message_of_many_frames_counts_them_all() {
        let mut framing = Framing::new(1000);
        let bytes = stream(&[frame(true, &[1; 600]), frame(false, &[2; 600])]);
        assert_eq!(framing.feed(&bytes), Err(Oversized));
    }

    #[tokio::test]
    async fn the_guard_relays_and_cuts_an_oversized_message() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = upstream.local_addr().unwrap().to_string();
        let cut = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = cut.clone();
        let oversized: OnOversized = Arc::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let guard = Guard::start(address, 100, oversized).await.unwrap();
        let mut client = TcpStream::connect(guard.local.trim_start_matches("tcp://"))
            .await
            .unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut received = [0u8; 5];
        server.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"hello", "bytes go out as they are");
        let good = stream(&[frame(false, b"ok")]);
        server.write_all(&good).await.unwrap();
        let mut back = vec![0u8; good.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, good, "and come back as they are");
        server.write_all(&frame(false, &[0; 200])).await.unwrap();
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        assert!(
            rest.is_empty(),
            "nothing of the oversized message got through"
        );
        assert_eq!(cut.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
