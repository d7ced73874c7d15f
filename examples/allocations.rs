//! Allocations per request: the relay (`--relay`, configured from the
//! environment as `ctr-relay serve` is, logging included) or the null relay
//! of `examples/null_relay.rs` (`--null`), served in this process under a
//! global allocator that counts every allocation. A second listener on `--count-port` answers `GET /` with the
//! counts so far (`allocations bytes`), so a driver in another process reads
//! them before and after its requests (`bench/allocations.sh`).

use std::io::{Read, Write};

use clap::Parser;

#[path = "null_relay/server.rs"]
mod null_relay;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;

/// The system allocator, counted (stats_alloc wraps only it on stable Rust;
/// how many allocations a request makes does not depend on the allocator).
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Debug, Parser)]
struct Args {
    /// Serve the null relay, forwarding to this upstream URL.
    #[arg(long)]
    null: Option<String>,
    /// The port of the null relay (the relay takes PORT from the environment).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where the counts are read.
    #[arg(long)]
    count_port: u16,
}

/// Answers every connection on `port` with the counts, from a plain thread.
fn serve_counts(port: u16) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let stats = ALLOCATOR.stats();
            let body = format!(
                "{} {}",
                stats.allocations + stats.reallocations,
                stats.bytes_allocated
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    serve_counts(args.count_port).map_err(|error| error.to_string())?;
    match args.null {
        Some(upstream) => actix_web::rt::System::new()
            .block_on(null_relay::serve(args.port, upstream, 2, 1))
            .map_err(|error| error.to_string()),
        None => {
            let settings =
                ctr_relay::config::Settings::from_env().map_err(|error| error.to_string())?;
            let _telemetry = ctr_relay::telemetry::init(&settings.log)?;
            actix_web::rt::System::new().block_on(async move {
                let application = ctr_relay::http::Application::build(settings)
                    .await
                    .map_err(|error| error.to_string())?;
                application
                    .run_until(std::future::pending())
                    .await
                    .map_err(|error| error.to_string())
            })
        }
    }
}
