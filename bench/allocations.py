#!/usr/bin/env python3
"""Allocations per request, the relay beside the null relay: each served by
examples/allocations.rs (a counting global allocator), the same mock
upstream, N one-observable requests on one kept-alive connection after a
warm-up; the counts read before and after. Prints a table row per server
and the difference. Run by bench/run.sh's build first:

    cargo build --release --example allocations --example mock_upstream
    python3 bench/allocations.py [--requests 5000]
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import MOCK, SECRET_KEY, free_port, token, wait_for_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ALLOCATIONS = ROOT / "target/release/examples/allocations"


def counts(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/")
    allocations, allocated = connection.getresponse().read().decode().split()
    connection.close()
    return int(allocations), int(allocated)


def drive(port, count_port, headers, n, offset):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def ask(i):
        body = json.dumps([{"type": "domain", "value": f"alloc-{offset + i}.example"}])
        connection.request("POST", "/observe/observables", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status} {data[:200]!r}")

    for i in range(200):
        ask(i)
    time.sleep(0.5)
    before = counts(count_port)
    for i in range(n):
        ask(1000 + i)
    time.sleep(0.5)
    after = counts(count_port)
    connection.close()
    return (after[0] - before[0]) / n, (after[1] - before[1]) / n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    mock_port = free_port()
    mock = subprocess.Popen([str(MOCK), "--port", str(mock_port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_for_port(mock_port)
        upstream = f"http://127.0.0.1:{mock_port}/cifapp/api/"
        for name in ("null relay", "ctr-relay"):
            port, count_port = free_port(), free_port()
            env = {"PATH": os.environ.get("PATH", "")}
            command = [str(ALLOCATIONS), "--count-port", str(count_port)]
            headers = {"Content-Type": "application/json"}
            if name == "null relay":
                command += ["--null", upstream, "--port", str(port)]
            else:
                env.update(PORT=str(port), HOST="127.0.0.1", SECRET_KEY=SECRET_KEY,
                           C1FAPP_API_URL=upstream, WORKERS="2", LOG_FORMAT="json")
                headers["Authorization"] = f"Bearer {token({'key': 'alloc-key'})}"
            server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            try:
                wait_for_port(port)
                wait_for_port(count_port)
                rows.append((name, *drive(port, count_port, headers, args.requests, 0)))
            finally:
                server.terminate()
                server.wait(timeout=30)
    finally:
        mock.terminate()
        mock.wait(timeout=10)
    print(f"allocations per request, {args.requests} one-observable requests on one connection")
    print("| server | allocations / request | bytes allocated / request |")
    print("|---|---:|---:|")
    for name, allocations, allocated in rows:
        print(f"| {name} | {allocations:,.1f} | {allocated:,.0f} |")
    (_, null_allocations, null_bytes), (_, allocations, allocated) = rows
    print(f"| the relay's own | {allocations - null_allocations:,.1f} | {allocated - null_bytes:,.0f} |")


if __name__ == "__main__":
    main()
