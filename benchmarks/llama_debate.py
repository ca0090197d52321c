"""llama.cpp inside a debate, on the embedded model (or any GGUF with --model).

(c) generated tokens/s: the requests of a seeded 3-agent x 2-round debate, run by moot, then the
    same requests replayed straight through llama-cpp-python's create_chat_completion on a
    separately loaded Llama; both produce the same tokens (seeded calls are reproducible).
(d) prompt tokens llama.cpp evaluates / prompt tokens sent, over a 3-agent x 3-round debate,
    with each agent's prefix kept in the RAM cache against one live KV slot shared by agents.

    python benchmarks/llama_debate.py [--model local] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
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


def throughput(spec: str, max_tokens: int) -> None:
    from llama_cpp import Llama

    base = moot.load_model(spec)
    assert isinstance(base, ChatLlama)
    model = Recorder(model_path=base.model_path, load=base.load, max_tokens=max_tokens)
    agents = [moot.Agent(name=f"a{i}", model=model, seed=100 + i) for i in range(3)]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=2))
    started = time.perf_counter()
    result = society.run(QUESTION)
    moot_wall = time.perf_counter() - started
    moot_tokens = result.usage.output_tokens

    raw = Llama(model_path=base.model_path, n_ctx=base.load.n_ctx, verbose=False)
    requests: list[tuple[list[BaseMessage], dict]] = model.__dict__["requests"]
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    raw_tokens = 0
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
        raw_tokens += reply["usage"]["completion_tokens"]
    raw_wall = time.perf_counter() - started
    raw.close()
    print("| (c) generated tokens/s, 3 agents x 2 rounds, seeded | moot | llama-cpp-python |")
    print("| --- | --- | --- |")
    print(f"| calls | {result.usage.calls} | {len(requests)} |")
    print(f"| output tokens | {moot_tokens} | {raw_tokens} |")
    print(f"| wall time | {moot_wall:.2f} s | {raw_wall:.2f} s |")
    print(f"| tokens/s | {moot_tokens / moot_wall:.1f} | {raw_tokens / raw_wall:.1f} |")
    print(f"| moot / direct | {(moot_tokens / moot_wall) / (raw_tokens / raw_wall):.2f} | |")


def prefix_reuse(spec: str, max_tokens: int) -> None:
    print()
    print("| (d) prompt tokens, 3 agents x 3 rounds | sent | evaluated | evaluated / sent |")
    print("| --- | --- | --- | --- |")
    for label, cached in (
        ("per-agent prefix cache (default)", True),
        ("one shared KV slot", False),
    ):
        model = moot.load_model(spec, prefix_cache=cached, max_tokens=max_tokens)
        assert isinstance(model, ChatLlama)
        before = model.stats.model_copy()
        agents = [moot.Agent(name=f"a{i}", model=model) for i in range(3)]
        moot.Society(agents=agents, protocol=moot.Debate(rounds=3)).run(QUESTION)
        sent = model.stats.prompt_tokens - before.prompt_tokens
        evaluated = model.stats.prompt_tokens_evaluated - before.prompt_tokens_evaluated
        print(f"| {label} | {sent} | {evaluated} | {evaluated / sent:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="local")
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    throughput(args.model, args.max_tokens)
    prefix_reuse(args.model, args.max_tokens)


if __name__ == "__main__":
    main()
