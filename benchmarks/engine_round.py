"""A round of agents on one local model: wall of the round / wall of one agent alone.

Each agent sends its own prompt and generates `--tokens` tokens (greedy, end-of-text ignored
by asking for a long story); a round of N agents sends N such requests at once, as a debate
round does. Engines and layouts are alternated within one run, so all see the same machine load.

    python benchmarks/engine_round.py --model llama:$(../shared/models/bench-model.sh qwen0.5b)
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from langchain_core.messages import HumanMessage, SystemMessage

import moot
from moot.models.llama import ChatLlama

TOPICS = ["a lighthouse", "a river", "a mountain", "a city", "a forest", "a ship", "a desert"]
LAYOUTS = {
    "simple (one call at a time)": {"engine": "simple"},
    "batched, 1 context x 2 threads": {"engine": "batched", "contexts": 1},
    "batched, 2 contexts x 1 thread": {"engine": "batched", "contexts": 2, "n_threads": 1},
}


def prompt(agent: int, take: int) -> list:
    """A prompt of its own per agent and repeat, so nothing is reused from a cache."""
    topic = TOPICS[agent % len(TOPICS)]
    return [
        SystemMessage(f"Take {take}. You are storyteller number {agent}."),
        HumanMessage(f"Write a very long story about {topic}, at least 500 words."),
    ]


def round_wall(model: ChatLlama, agents: int, tokens: int, take: int) -> tuple[float, int]:
    started = time.perf_counter()
    with ThreadPoolExecutor(agents) as pool:
        replies = list(
            pool.map(
                lambda i: model.invoke(prompt(i, take), max_tokens=tokens, temperature=0),
                range(agents),
            )
        )
    output = sum(reply.usage_metadata["output_tokens"] for reply in replies)
    return time.perf_counter() - started, output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="local")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = {}
    for label, options in LAYOUTS.items():
        options = {"n_threads": args.threads, "n_ctx": 1024, "sequences": 8, **options}
        model = moot.load_model(args.model, **options)
        assert isinstance(model, ChatLlama)
        model.invoke("Hi.", max_tokens=2)  # loaded and warm
        models[label] = model
    walls: dict[tuple[str, int], list[float]] = {}
    outputs: dict[tuple[str, int], int] = {}
    for take in range(args.repeats):
        for size in [1, *args.rounds]:
            for label, model in models.items():
                wall, output = round_wall(model, size, args.tokens, take)
                walls.setdefault((label, size), []).append(wall)
                outputs[(label, size)] = output
    print(
        f"| {args.tokens} tokens per agent, median of {args.repeats} | agents | round wall "
        "| output tokens | round / one agent alone (same layout) | tokens/s |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for label in models:
        alone = statistics.median(walls[(label, 1)])
        for size in [1, *args.rounds]:
            wall = statistics.median(walls[(label, size)])
            output = outputs[(label, size)]
            print(
                f"| {label} | {size} | {wall:.2f} s | {output} | {wall / alone:.2f} "
                f"| {output / wall:.1f} |"
            )


if __name__ == "__main__":
    main()
