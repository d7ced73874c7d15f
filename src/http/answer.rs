//! Answers bounded while they are sent: an answer stays counted against its
//! request's budget (and so the process pool and the tenant's share) until it
//! has been handed to the connection, and a large one that the caller does
//! not read within `ANSWER_SEND_TIMEOUT_SECONDS` has its connection closed.
//!
//! actix polls a response body only while its write buffer has room, so a
//! timer inside the body would never fire for a caller that stopped reading.
//! The connection's socket is therefore duplicated when it is accepted (a
//! second descriptor of the same socket). At the deadline that socket is set
//! to linger not at all and shut down, and the body fails its next chunk:
//! whichever actix meets first (a write refused, or the body's error), it
//! drops the connection and the answer, and the close discards what the
//! kernel still buffered (an RST) instead of trickling it out.

use std::any::Any;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Extensions;
use actix_web::web::Bytes;
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::providers::scope::Scope;

/// Answers up to this size are written at once into the socket's buffers:
/// no deadline is armed for them.
const SMALL_ANSWER: usize = 64 * 1024;

/// What the body hands the connection at a time: the write buffer never
/// holds much more than this beyond the answer itself.
const CHUNK: usize = 64 * 1024;

/// A second descriptor of a connection's socket, taken when it is accepted.
#[derive(Debug, Clone)]
pub struct ConnectionSocket(Arc<std::net::TcpStream>);

/// The `on_connect` hook: keeps a duplicate of each TCP connection's socket
/// in the connection's data. A socket that cannot be duplicated (no
/// descriptor left) simply gets no deadline.
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    if let Ok(descriptor) = tcp.as_fd().try_clone_to_owned() {
        data.insert(ConnectionSocket(Arc::new(std::net::TcpStream::from(
            descriptor,
        ))));
    }
}

/// How one request's answer is to be sent.
#[derive(Debug)]
pub struct Delivery {
    socket: Option<ConnectionSocket>,
    scope: Scope,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Delivery {
    pub fn new(
        request: &HttpRequest,
        scope: Scope,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            socket: request.conn_data::<ConnectionSocket>().cloned(),
            scope,
            timeout,
            metrics,
        }
    }

    /// The body that sends `bytes`, holding the request's budget until it
    /// is sent and, for a large answer, closing the connection at the deadline.
    pub fn body(self, bytes: Vec<u8>) -> Answer {
        let late = Arc::new(AtomicBool::new(false));
        let deadline = match (&self.socket, bytes.len() > SMALL_ANSWER) {
            (Some(socket), true) => Some(Deadline::arm(
                socket.clone(),
                late.clone(),
                self.timeout,
                self.metrics,
            )),
            _ => None,
        };
        Answer {
            bytes: Bytes::from(bytes),
            late,
            _scope: self.scope,
            _deadline: deadline,
        }
    }
}

/// An answer being sent.
pub struct Answer {
    bytes: Bytes,
    /// Set at the deadline: the next chunk asked for fails the response.
    late: Arc<AtomicBool>,
    /// Given back when the answer is dropped: sent, or its connection gone.
    _scope: Scope,
    _deadline: Option<Deadline>,
}

/// The answer was not read in time.
#[derive(Debug, thiserror::Error)]
#[error("the caller did not read its answer within ANSWER_SEND_TIMEOUT_SECONDS")]
pub struct NotReadInTime;

impl MessageBody for Answer {
    type Error = NotReadInTime;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.bytes.len() as u64)
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if self.late.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(NotReadInTime)));
        }
        if self.bytes.is_empty() {
            return Poll::Ready(None);
        }
        let take = self.bytes.len().min(CHUNK);
        Poll::Ready(Some(Ok(self.bytes.split_to(take))))
    }
}

/// Shuts the connection down unless dropped (the answer sent) before the
/// time is up.
struct Deadline {
    _sent: oneshot::Sender<()>,
}

impl Deadline {
    fn arm(
        socket: ConnectionSocket,
        late: Arc<AtomicBool>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (sent, dropped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                _ = dropped => {}
                () = tokio::time::sleep(timeout) => {
                    tracing::warn!(
                        timeout_ms = timeout.as_millis() as u64,
                        "the caller did not read its answer in time (ANSWER_SEND_TIMEOUT_SECONDS): \
                         connection closed"
                    );
                    metrics.answer_timed_out();
                    late.store(true, Ordering::Relaxed);
                    let _ = socket2::SockRef::from(&*socket.0).set_linger(Some(Duration::ZERO));
                    let _ = socket.0.shutdown(Shutdown::Both);
                }
            }
        });
        Self { _sent: sent }
    }
}
