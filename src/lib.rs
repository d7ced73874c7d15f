//! ctr-relay: a Threat Response relay for C1fApp and CyberScan.
//!
//! Modules are layered (ARCHITECTURE.md); each imports only from layers below
//! its own, never sideways (`tests/layers.rs` checks it):
//!
//! 5. front ends: `http`, `threatbus`, `backbone`, `cli`
//! 4. `enrich`: what every front end asks for; errors → CTIM in one place;
//!    `ops`: the metrics and liveness port of the modes without the HTTP API
//! 3. `auth`, `providers`
//! 2. `ctim`, `telemetry`, `store`
//! 1. `config`, `metrics`, `outbound`
//! 0. `domain`

pub mod auth;
pub mod backbone;
pub mod cli;
pub mod config;
pub mod ctim;
pub mod demo;
pub mod domain;
pub mod enrich;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod outbound;
pub mod providers;
pub mod store;
pub mod telemetry;
pub mod threatbus;
