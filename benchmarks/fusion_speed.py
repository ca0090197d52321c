"""Decoding speed of token-level fusion against each model alone (issue 14's speed targets).

Every setting answers the same GSM8K questions greedily with a fixed number of new tokens; the
settings are alternated within each repeat so all see the same machine load. "alone" is the
model on moot's default llama.cpp path (ChatLlama); the sequential limit of two models is
1 / (1/a + 1/b) tokens/s.

    python benchmarks/fusion_speed.py --small $(../shared/models/bench-model.sh qwen0.5b) \
        --large $(../shared/models/bench-model.sh qwen1.5b) [--gate gate.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from langchain_core.messages import HumanMessage

import moot
from moot.fusion import FusedChatModel, LearnedGate

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k" / "dev.jsonl"


def questions(count: int) -> list[str]:
    lines = DATA.read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line)["question"] + "\nSolve it step by step." for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", required=True, help="the base model (GGUF)")
    parser.add_argument("--large", required=True, help="the assistant (GGUF)")
    parser.add_argument("--gate", help="a learned Co-LLM gate for the pair")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--exact-too",
        action="store_true",
        help="add prob and colm settings without repacked weights (repack=False)",
    )
    args = parser.parse_args()
    sampling = {"temperature": 0, "max_tokens": args.tokens}
    pair = [args.small, args.large]
    settings: dict[str, object] = {
        # One call at a time, as the fused pair decodes: the engine of the committed table.
        "small alone": moot.load_model(
            f"llama:{args.small}", engine="simple", n_threads=2, **sampling
        ),
        "large alone": moot.load_model(
            f"llama:{args.large}", engine="simple", n_threads=2, **sampling
        ),
        "prob": FusedChatModel(models=pair, strategy="prob", **sampling),
        "logit": FusedChatModel(models=pair, strategy="logit", **sampling),
    }
    for threshold in (0.3, 0.5, 0.7, 0.9):
        settings[f"colm p<={threshold}"] = FusedChatModel(
            models=pair, strategy="colm", threshold=threshold, **sampling
        )
    if args.gate:  # at the threshold that deferred 30% of the gate's training tokens
        threshold = LearnedGate.load(args.gate).training.thresholds["30%"]  # type: ignore[union-attr]
        settings["colm gate"] = FusedChatModel(
            models=pair, strategy="colm", gate=args.gate, threshold=threshold, **sampling
        )
    if args.exact_too:
        exact = {"temperature": 0, "max_tokens": args.tokens, "repack": False}
        settings["prob, not repacked"] = FusedChatModel(models=pair, strategy="prob", **exact)
        settings["colm p<=0.5, not repacked"] = FusedChatModel(
            models=pair, strategy="colm", threshold=0.5, **exact
        )
    rates: dict[str, list[float]] = {name: [] for name in settings}
    deferred: dict[str, list[float]] = {name: [] for name in settings}
    prompts = questions(args.questions)
    for model in settings.values():  # warm up: load, and fill caches with nothing reusable
        model.invoke([HumanMessage("Hello")], max_tokens=2)  # type: ignore[attr-defined]
    for repeat in range(args.repeats):
        for name, model in settings.items():
            for question in prompts:
                started = time.perf_counter()
                reply = model.invoke([HumanMessage(f"{question} ({name}, take {repeat})")])  # type: ignore[attr-defined]
                seconds = time.perf_counter() - started
                rates[name].append(reply.usage_metadata["output_tokens"] / seconds)
                fusion = reply.response_metadata.get("fusion") or {}
                if fusion.get("deferral_rate") is not None:
                    deferred[name].append(fusion["deferral_rate"])
    small = statistics.median(rates["small alone"])
    large = statistics.median(rates["large alone"])
    limit = 1 / (1 / small + 1 / large)
    print(f"sequential limit of the pair: {limit:.1f} tokens/s")
    print("| setting | tokens/s (median) | vs sequential limit | vs large alone | deferred |")
    print("|---|---|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        share = f"{statistics.mean(deferred[name]):.0%}" if deferred[name] else "-"
        print(f"| {name} | {rate:.1f} | {rate / limit:.2f} | {rate / large:.2f} | {share} |")


if __name__ == "__main__":
    main()
