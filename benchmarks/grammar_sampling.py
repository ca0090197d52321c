"""Time spent sampling a token on the batched engine, with and without a grammar.

A typed answer (`Society(answer_schema=...)`) holds a llama.cpp reply to a grammar: free text,
then a JSON object of the schema. This measures what the grammar adds to each token's sampling
(decoding is the same either way), timing the engine's sampling call inside its worker thread.

    python benchmarks/grammar_sampling.py [--model SPEC] [--tokens 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import moot
from moot.models.llama_tools import answer_grammar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local", help="model spec (local)")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = moot.load_model(args.model, engine="batched", n_ctx=1024)
    context = model._shared.engine.contexts[0]  # type: ignore[attr-defined]
    spent = {"seconds": 0.0, "tokens": 0}
    sample = context._sample

    def timed(slot: Any, row: int) -> Any:
        started = time.perf_counter()
        sampled = sample(slot, row)
        spent["seconds"] += time.perf_counter() - started
        spent["tokens"] += 1
        return sampled

    context._sample = timed
    schema = {"type": "object", "properties": {"value": {"type": "integer"}}, "required": ["value"]}
    grammar = answer_grammar(schema)
    question = "What is 12+30? Explain, then give the answer as JSON."
    model.invoke("Say hi.", max_tokens=4)  # warm-up
    print(f"{'grammar':>8} {'tokens':>7} {'ms per token sampled':>22}")
    for _ in range(args.repeats):
        for options in ({}, {"grammar": grammar}):
            spent.update(seconds=0.0, tokens=0)
            model.invoke(question, max_tokens=args.tokens, temperature=0, **options)
            per_token = 1000 * spent["seconds"] / max(1, spent["tokens"])
            print(f"{'yes' if options else 'no':>8} {spent['tokens']:>7} {per_token:>22.2f}")


if __name__ == "__main__":
    main()
