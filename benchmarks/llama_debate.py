"""llama.cpp inside a debate, on the embedded model (or any GGUF with --model).

(c) generated tokens/s: the requests of a seeded 3-agent x 2-round debate, run by moot, then the
    same requests replayed one by one through llama-cpp-python's create_chat_completion on a
    separately loaded Llama (which evaluates each whole prompt, as a seeded call must there).
(d) prompt tokens llama.cpp evaluates / prompt tokens sent, over 3-agent x 3-round debates,
    seeded and not, on the batched engine and on the simple one.

    python benchmarks/llama_debate.py [--model local] [--max-tokens 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from langchain_core.messages import BaseMessage

import moot
from moot.models.llama import ChatLlama

QUESTION = "What is 12+30?"


class Recorder(ChatLlama):
    """A ChatLlama that remembers each request, to replay it outside moot."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
        self.__dict__.setdefault("requests", []).append((list(messages), dict(kwargs)))
        return super()._generate(messages, stop, run_manager, **kwargs)


def throughput(spec: str, max_tokens: int, repeats: int) -> None:
    from llama_cpp import Llama

    base = moot.load_model(spec, engine="batched")
    assert isinstance(base, ChatLlama)
    model = Recorder(model_path=base.model_path, load=base.load, max_tokens=max_tokens)
    agents = [moot.Agent(name=f"a{i}", model=model, seed=100 + i) for i in range(3)]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=2))
    raw = Llama(model_path=base.model_path, n_ctx=base.load.n_ctx, verbose=False)
    roles = {"system": "system", "human": "user", "ai": "assistant"}

    def run_moot() -> tuple[int, float]:
        model.__dict__["requests"] = []
        started = time.perf_counter()
        result = society.run(QUESTION)
        return result.usage.output_tokens, time.perf_counter() - started

    def run_direct(requests: list[tuple[list[BaseMessage], dict]]) -> tuple[int, float]:
        tokens = 0
        started = time.perf_counter()
        for messages, kwargs in requests:
            raw.reset()  # moot's seeded calls evaluate the whole prompt too
            reply = raw.create_chat_completion(
                messages=[{"role": roles[m.type], "content": m.text} for m in messages],
                temperature=model.temperature,
                top_p=model.top_p,
                top_k=model.top_k,
                min_p=model.min_p,
                repeat_penalty=model.repeat_penalty,
                max_tokens=max_tokens,
                seed=kwargs["seed"],
            )
            tokens += reply["usage"]["completion_tokens"]
        return tokens, time.perf_counter() - started

    moot_runs, direct_runs = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        moot_runs.append(run_moot())
        direct_runs.append(run_direct(model.__dict__["requests"]))
    raw.close()
    moot_tokens, moot_wall = moot_runs[0][0], statistics.median(wall for _, wall in moot_runs)
    raw_tokens, raw_wall = direct_runs[0][0], statistics.median(wall for _, wall in direct_runs)
    assert all(tokens == moot_tokens for tokens, _ in moot_runs), "seeded runs should repeat"
    print(f"| (c) 3 agents x 2 rounds, seeded, median of {repeats} | moot | llama-cpp-python |")
    print("| --- | --- | --- |")
    print(f"| calls per run | {len(agents) * 2} | {len(model.__dict__['requests'])} |")
    print(f"| output tokens per run | {moot_tokens} | {raw_tokens} |")
    print(f"| wall time per run | {moot_wall:.2f} s | {raw_wall:.2f} s |")
    moot_rate, raw_rate = moot_tokens / moot_wall, raw_tokens / raw_wall
    print(f"| generated tokens/s of wall time | {moot_rate:.1f} | {raw_rate:.1f} |")
    print(f"| moot / direct | {moot_rate / raw_rate:.2f} | |")


def prefix_reuse(spec: str, max_tokens: int) -> None:
    questions = ["What is 12+30?", "What is 7*8?", "What is 45-17?"]
    print()
    print(
        f"| (d) prompt tokens, 3 agents x 3 rounds, {len(questions)} debates "
        "| sent | evaluated | evaluated / sent |"
    )
    print("| --- | --- | --- | --- |")
    for label, engine, seeded in (
        ("batched engine, seeded", "batched", True),
        ("batched engine, unseeded", "batched", False),
        ("simple engine, seeded", "simple", True),
        ("simple engine, unseeded", "simple", False),
    ):
        model = moot.load_model(spec, engine=engine, max_tokens=max_tokens)
        assert isinstance(model, ChatLlama)
        before = model.stats.model_copy()
        agents = [
            moot.Agent(name=f"a{i}", model=model, seed=i if seeded else None) for i in range(3)
        ]
        society = moot.Society(agents=agents, protocol=moot.Debate(rounds=3))
        for question in questions:
            society.run(question)
        sent = model.stats.prompt_tokens - before.prompt_tokens
        evaluated = model.stats.prompt_tokens_evaluated - before.prompt_tokens_evaluated
        print(f"| {label} | {sent} | {evaluated} | {evaluated / sent:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="local")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    throughput(args.model, args.max_tokens, args.repeats)
    prefix_reuse(args.model, args.max_tokens)


if __name__ == "__main__":
    main()
