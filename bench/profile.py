#!/usr/bin/env python3
"""The differential profile of BENCHMARKS.md: the relay and the null relay in
turn under the same load (one observable per request, values never
repeated, 64 connections), each sampled by `perf record -e cpu-clock -g`
while wrk drives it; samples sorted into costs by symbol and scaled by the
server's own CPU per request. Prints one table: each cost in µs per request
for the relay, the null relay and the difference.

    cargo build --profile profiling --bin ctr-relay --example null_relay --example mock_upstream
    python3 bench/profile.py [--duration 8] [--only relay]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILING = ROOT / "target/profiling"
os.environ.setdefault("BENCH_RELAY", str(PROFILING / "ctr-relay"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

bench.MOCK = PROFILING / "examples/mock_upstream"
bench.NULL_RELAY = PROFILING / "examples/null_relay"

# First match wins: (cost, pattern over the leaf frame's symbol and object).
CATEGORIES = [
    ("kernel: sockets, scheduling", r"\[kernel|^0x|\[unknown\].*kernel|entry_SYSCALL|do_syscall"),
    ("allocation", r"mi_|mimalloc|_mi_|__rust_alloc|__rust_dealloc|__rust_realloc|alloc::raw_vec|malloc|free\b"),
    ("memory copies", r"memcpy|memmove|memset|memcmp|bcmp"),
    ("JSON (serde_json)", r"serde_json|serde::ser|serde::de|<serde::|ryu::|itoa::"),
    ("logging (tracing, fmt, the JSON line)", r"tracing|telemetry::json|core::fmt|alloc::fmt|sharded_slab|chrono"),
    ("JWT (HS256, base64, claims)", r"jsonwebtoken|sha2|hmac|base64|ring::|aws_lc|auth::"),
    ("metrics", r"prometheus|metrics::"),
    ("ids (uuid, rand)", r"uuid|rand|getrandom|ctim::ids"),
    ("CTIM mapping and sizes", r"ctim::|providers::c1fapp|providers::cyberscan|mapping|relations|records"),
    ("budgets, places, coalescing", r"providers::upstream|providers::quota|providers::scope|providers::cache|moka|gate|coalesc|address"),
    ("hyper/reqwest client, url", r"reqwest|hyper::client|hyper_util::client|hyper::proto::h1::role::Client|url::|http::uri|idna"),
    ("actix-web server", r"actix|hyper|httparse|http::header|h1::"),
    ("runtime, locks", r"tokio|parking_lot|futures|std::sync|pthread|crossbeam|__lll|syscall|epoll|mio::|futex"),
]


def categorize(symbol):
    for name, pattern in CATEGORIES:
        if re.search(pattern, symbol):
            return name
    return "other (libc, unresolved)"


def profile(server, duration, tokens, headers, scenario, keep=None):
    with tempfile.TemporaryDirectory() as workdir:
        data = Path(workdir) / "perf.data"
        bench.wrk(server.port, scenario.route, "POST", scenario.body(), headers, 2,
                  scenario.repeated, scenario.observables, tokens)
        cpu_before = server.cpu_seconds()
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g",
                                 "-p", str(server.process.pid), "-o", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = bench.wrk(server.port, scenario.route, "POST", scenario.body(), headers,
                           duration, scenario.repeated, scenario.observables, tokens)
        perf.send_signal(2)
        perf.wait()
        cpu = server.cpu_seconds() - cpu_before
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,sym",
             "--stdio", "-g", "none", "--percent-limit", "0"],
            capture_output=True, text=True, check=True).stdout
        if keep:
            keep.write_text(report)
            shutil.copyfile(data, keep.with_suffix(".data"))
    shares = defaultdict(float)
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not match:
            continue
        percent, dso, kind, symbol = match.groups()
        name = ("kernel: sockets, scheduling" if kind == "k" or "kernel" in dso
                else categorize(symbol + " " + dso))
        shares[name] += float(percent) / 100
    us_per_request = cpu / max(result["requests"], 1) * 1e6
    return {name: share * us_per_request for name, share in shares.items()}, us_per_request, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--reports", type=Path,
                        help="a directory to keep each server's flat perf report in")
    args = parser.parse_args()
    scenario = bench.Scenario("1 observable, 0 ms")
    mock = bench.Mock(0)
    tokens = [bench.token({"key": "bench-c1fapp-key-0"})]
    headers = {"Authorization": f"Bearer {tokens[0]}", "Content-Type": "application/json"}
    rows = {}
    if args.reports:
        args.reports.mkdir(parents=True, exist_ok=True)
    try:
        for label, start in (("null relay", lambda: bench.NullRelay(mock, 1)),
                             ("relay", lambda: bench.Relay(mock, {}))):
            server = start()
            try:
                keep = args.reports / f"{label.replace(' ', '-')}.txt" if args.reports else None
                rows[label] = profile(server, args.duration, tokens, headers, scenario, keep)
            finally:
                server.stop()
    finally:
        mock.stop()
    relay, relay_us, relay_result = rows["relay"]
    null, null_us, null_result = rows["null relay"]
    rate = lambda r: r["requests"] / (r["duration_us"] / 1e6)  # noqa: E731
    print(f"relay {rate(relay_result):,.0f} requests/s, {relay_us:.1f} µs CPU per request; "
          f"null relay {rate(null_result):,.0f} requests/s, {null_us:.1f} µs; "
          f"the relay's own {relay_us - null_us:.1f} µs")
    print(f"| cost | relay µs | null relay µs | the relay's own µs |")
    print("|---|---:|---:|---:|")
    names = sorted(set(relay) | set(null), key=lambda n: -(relay.get(n, 0) - null.get(n, 0)))
    for name in names:
        r, n = relay.get(name, 0.0), null.get(name, 0.0)
        print(f"| {name} | {r:.1f} | {n:.1f} | {r - n:+.1f} |")


if __name__ == "__main__":
    main()
