"""What a token costs each model of a fusion pair, and the Co-LLM speed that follows from it.

Times, on the fusion loop's own llama.cpp contexts (`moot.llamacpp.Decoder`), one
generated token (a decode step) and a catch-up batch of k tokens (what a deferral costs the
assistant when it last ran k tokens ago), alternating the two models. Then the bound: a Co-LLM
setting that defers a share d of tokens costs at least t_base + d * t_catchup per token, so its
speed against the assistant alone is at most t_assistant / (t_base + d * t_catchup).

    python benchmarks/fusion_steps.py --small $(../shared/models/bench-model.sh qwen0.5b) \
        --large $(../shared/models/bench-model.sh qwen1.5b)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from moot.llamacpp import Decoder

PROMPT = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning. " * 3


def step_ms(decoder: Decoder, prompt: list[int], steps: int) -> float:
    """Milliseconds per generated token, greedy, after `prompt`."""
    decoder.reach(prompt)
    token = int(np.argmax(decoder.logits()))
    started = time.perf_counter()
    for _ in range(steps):
        decoder.step(token)
        token = int(np.argmax(decoder.logits()))
    return 1000 * (time.perf_counter() - started) / steps


def catch_up_ms(decoder: Decoder, prompt: list[int], k: int, repeats: int) -> float:
    """Milliseconds to read k more tokens in one batch (a deferral after k base tokens)."""
    times = []
    for repeat in range(repeats):
        decoder.reach(prompt)
        extra = [int(t) for t in np.random.default_rng(repeat).integers(200, 20000, size=k)]
        started = time.perf_counter()
        decoder.reach(prompt + extra, split_last=False)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", required=True, type=Path)
    parser.add_argument("--large", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact", action="store_true", help="weights not repacked (repack=False)")
    args = parser.parse_args()
    decoders = {
        name: Decoder(
            path,
            n_ctx=1024,
            n_batch=512,
            n_threads=args.threads,
            n_gpu_layers=0,
            hidden=False,
            repack=not args.exact,
        )
        for name, path in (("small", args.small), ("large", args.large))
    }
    prompt = decoders["small"].tokenize(PROMPT, add_bos=True, special=False)
    steps: dict[str, list[float]] = {name: [] for name in decoders}
    batches: dict[tuple[str, int], list[float]] = {}
    for repeat in range(args.repeats):  # alternate, so both models see the same load
        for name, decoder in decoders.items():
            steps[name].append(step_ms(decoder, prompt + [repeat], args.steps))
            for k in (1, 2, 4, 8, 16):
                batches.setdefault((name, k), []).append(catch_up_ms(decoder, prompt, k, 1))
    small = statistics.median(steps["small"])
    large = statistics.median(steps["large"])
    print("| model | ms per generated token | catch-up of k tokens, ms: k=1 | 2 | 4 | 8 | 16 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, decoder in decoders.items():
        row = " | ".join(f"{statistics.median(batches[name, k]):.0f}" for k in (1, 2, 4, 8, 16))
        print(f"| {decoder.name} | {statistics.median(steps[name]):.1f} | {row} |")
    catch_up = statistics.median(batches["large", 4])
    print(f"\nbase / assistant step: {small / large:.2f}")
    print("| deferred share | best Co-LLM speed vs the assistant alone (catch-up of 4) |")
    print("|---:|---:|")
    for share in (0.0, 0.05, 0.1, 0.2, 0.3):
        print(f"| {share:.0%} | {large / (small + share * catch_up):.2f}x |")
    for decoder in decoders.values():
        decoder.close()


if __name__ == "__main__":
    main()
