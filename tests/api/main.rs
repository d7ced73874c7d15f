//! Integration tests: the relay over HTTP, with wiremock upstreams.

// Tests may panic: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod body;
mod both;
mod c1fapp;
mod cache;
mod coalescing;
mod concurrency;
mod cyberscan;
mod deadline;
mod deliberate;
mod demo;
mod fleet;
mod health;
mod helpers;
mod hostile_upstreams;
mod isolation;
mod metrics;
mod module_type;
mod observe;
mod operator;
mod process;
mod quota;
mod refer;
mod relay_process;
mod routes;
mod rs256;
mod tenants;
mod threatbus;
mod traces;
mod upstream_faults;
