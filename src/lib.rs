//! ctr-relay: a Threat Response relay for C1fApp and CyberScan.

pub mod auth;
pub mod cli;
pub mod config;
pub mod ctim;
pub mod error;
pub mod metrics;
pub mod observable;
pub mod providers;
pub mod routes;
pub mod secret;
pub mod startup;
pub mod telemetry;
pub mod threatbus;
