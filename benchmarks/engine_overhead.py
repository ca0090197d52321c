"""Where the batched engine's time goes: inside llama.cpp's decode, or in moot's Python around it.

Sends 1, 4 and 8 concurrent requests (greedy, long replies asked for) to one batched-engine
model and times every `llama_decode` (wrapped for the run) against the wall of the batch. What
is not decode is scheduling, sampling, detokenising and handing tokens to callers.

    python benchmarks/engine_overhead.py                    # the embedded SmolLM2-135M
    python benchmarks/engine_overhead.py --model llama:$(../shared/models/bench-model.sh qwen0.5b)
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import llama_cpp

import moot

_decode = llama_cpp.llama_decode
_spent = {"seconds": 0.0, "calls": 0}


def _timed_decode(ctx: object, batch: object) -> int:
    started = time.perf_counter()
    try:
        return int(_decode(ctx, batch))
    finally:
        _spent["seconds"] += time.perf_counter() - started
        _spent["calls"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="local")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    llama_cpp.llama_decode = _timed_decode  # the engine calls it through the module
    model = moot.load_model(args.model, engine="batched", temperature=0, max_tokens=args.tokens)
    model.invoke("Hello", max_tokens=2)  # load
    print("| concurrent requests | wall (s) | output tokens/s | in llama_decode | elsewhere |")
    print("|---:|---:|---:|---:|---:|")
    for repeat in range(args.repeats):
        for clients in (1, 4, 8):
            _spent.update(seconds=0.0, calls=0)
            asks = [
                f"Tell a long story about place number {repeat * 10 + n}." for n in range(clients)
            ]
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                replies = list(pool.map(model.invoke, asks))
            wall = time.perf_counter() - started
            output = sum(reply.usage_metadata["output_tokens"] for reply in replies)
            inside = _spent["seconds"] / wall
            rate = output / wall
            print(f"| {clients} | {wall:.2f} | {rate:.1f} | {inside:.0%} | {1 - inside:.0%} |")


if __name__ == "__main__":
    main()
