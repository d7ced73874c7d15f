//! The client's publishes, followed per channel: a `basic.publish` is a
//! method frame, a content header and body frames up to the header's size,
//! and no other frame of that channel may come between them. The guard's own
//! `basic.reject` for a channel waits until the channel is between publishes.

use std::collections::HashMap;

use super::{BASIC, FrameError, HEADER, METHOD, PUBLISH, channel_of, payload, u16_at, u64_at};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publishing {
    /// The method has passed; its content header is due.
    Header,
    /// The header has passed; this many body bytes are due.
    Body(u64),
}

/// The channels in the middle of a publish.
#[derive(Debug, Default)]
pub struct Publishes {
    channels: HashMap<u16, Publishing>,
}

impl Publishes {
    /// Follows one whole frame from the client.
    pub fn on_frame(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        let channel = channel_of(frame);
        let body = payload(frame);
        match (frame[0], self.channels.get(&channel).copied()) {
            (METHOD, None)
                if u16_at(body, 0) == Some(BASIC) && u16_at(body, 2) == Some(PUBLISH) =>
            {
                self.channels.insert(channel, Publishing::Header);
            }
            (_, None) => {}
            (HEADER, Some(Publishing::Header)) => {
                match u64_at(body, 4).ok_or(FrameError::Malformed)? {
                    0 => {
                        self.channels.remove(&channel);
                    }
                    size => {
                        self.channels.insert(channel, Publishing::Body(size));
                    }
                }
            }
            (super::BODY, Some(Publishing::Body(left))) => {
                match left.saturating_sub(body.len() as u64) {
                    0 => {
                        self.channels.remove(&channel);
                    }
                    left => {
                        self.channels.insert(channel, Publishing::Body(left));
                    }
                }
            }
            // Any other frame of a channel mid-publish breaks the protocol.
            (_, Some(_)) => return Err(FrameError::Malformed),
        }
        Ok(())
    }

    /// Whether `channel` is between publishes (a frame of its own may go).
    pub fn idle(&self, channel: u16) -> bool {
        !self.channels.contains_key(&channel)
    }
}
