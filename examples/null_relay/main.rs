//! The benchmark's second anchor: a relay that does no work. The same stack
//! as ctr-relay — actix-web in, reqwest out (the relay's client settings:
//! its TLS policy, timeouts, idle pool, `TCP_NODELAY`), one client per
//! worker, mimalloc — but each request's body is copied to the upstream as
//! it is and the upstream's answer copied back: no JWT, no JSON, no mapping,
//! no metrics, no log line. What ctr-relay costs above it is its own work.
//! With `--fan-out N` each request makes N upstream calls at once (as the
//! relay does for N observables) and answers the first one's body, so
//! memory per call in flight can be compared too.
//!
//! ```sh
//! cargo run --release --example null_relay -- --port 9091 \
//!     --upstream http://127.0.0.1:8081/cifapp/api/ --workers 2
//! ```

mod server;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    port: u16,
    /// Where every request's body is POSTed.
    #[arg(long)]
    upstream: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Upstream calls per request, concurrent.
    #[arg(long, default_value_t = 1)]
    fan_out: usize,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    server::serve(args.port, args.upstream, args.workers, args.fan_out).await
}
