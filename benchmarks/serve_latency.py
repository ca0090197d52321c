"""Latency and throughput of `moot serve` under 1 and N concurrent clients.

    python benchmarks/serve_latency.py --requests 12 --clients 1 4
    python benchmarks/serve_latency.py --model llama:/path/qwen.gguf --concurrent-runs 1
    python benchmarks/serve_latency.py --engine simple   # the one-call-at-a-time llama.cpp path

Starts `moot serve` on 127.0.0.1 with a small debate society (2 agents, 1 round, 32 tokens a
reply, temperature 0), sends the same number of requests at each client count (each client
sends its next request when its last one is answered), and prints p50/p95 latency and output
tokens per second as a Markdown table. A warm-up request loads the model first.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SOCIETY = """\
models:
  m: {{spec: "{spec}", engine: {engine}}}
agents:
  - {{name: a, copies: 2, model: m, max_tokens: 32, temperature: 0}}
protocol: {{kind: debate, rounds: 1}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ask(url: str, number: int) -> tuple[float, int]:
    body = {
        "model": "pair",
        "messages": [{"role": "user", "content": f"What is {number} + {number + 3}?"}],
    }
    request = urllib.request.Request(
        f"{url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as reply:
        answer = json.loads(reply.read())
    return time.perf_counter() - started, int(answer["usage"]["completion_tokens"])


def hang_up(port: int, number: int) -> None:
    """Send a request and close the connection 0.2 s later without reading the reply."""
    body = json.dumps(
        {"model": "pair", "messages": [{"role": "user", "content": f"What is {number}+1?"}]}
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.2)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--concurrent-runs", type=int, default=4)
    parser.add_argument("--engine", choices=["batched", "simple"], default="batched")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    (folder / "pair.yaml").write_text(SOCIETY.format(spec=args.model, engine=args.engine))
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    command = [sys.executable, "-m", "moot.cli", "serve", str(folder / "pair.yaml"),
               "--port", str(port), "--concurrent-runs", str(args.concurrent_runs)]  # fmt: skip
    log = (folder / "serve.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((folder / "serve.log").read_text()) from None
                time.sleep(0.2)
        ask(url, 0)  # warm-up: loads the model
        print(f"model {args.model}, engine {args.engine}, {args.requests} requests per row, "
              f"--concurrent-runs {args.concurrent_runs}\n")  # fmt: skip
        print("| clients | p50 latency (s) | p95 latency (s) | wall (s) | output tokens/s |")
        print("|---:|---:|---:|---:|---:|")
        for row, clients in enumerate(args.clients):
            # New questions in every row: a repeated prompt would be answered from the simple
            # engine's RAM cache of states, measuring the cache instead of the engine.
            numbers = range(1000 * row + 1, 1000 * row + args.requests + 1)
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                replies = list(pool.map(lambda n: ask(url, n), numbers))
            wall = time.perf_counter() - started
            latencies = [latency for latency, _ in replies]
            tokens = sum(count for _, count in replies)
            print(
                f"| {clients} | {statistics.median(latencies):.2f} | "
                f"{percentile(latencies, 0.95):.2f} | {wall:.1f} | {tokens / wall:.1f} |"
            )
        for number in range(5):
            hang_up(port, number)
        latency, _ = ask(url, 99_999)
        print(f"\nafter 5 clients hung up mid-request, the next request took {latency:.2f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
