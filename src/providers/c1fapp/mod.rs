//! C1fApp, the threat-feed aggregator: observable types `ip`, `domain`, `url`.
//!
//! `client` asks the API; `records` reads its answer; `mapping` turns the
//! records into CTIM, with `relations` for the observable relations a record
//! shows.

mod client;
#[cfg(test)]
mod fixtures;
pub mod mapping;
pub mod records;
mod relations;

pub use client::{C1fApp, C1fAppState};
