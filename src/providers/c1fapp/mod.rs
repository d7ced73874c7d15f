//! C1fApp, the threat-feed aggregator: observable types `ip`, `domain`, `url`.

mod client;
pub mod mapping;

pub use client::C1fApp;
