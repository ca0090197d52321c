"""Tool calls on a local GGUF: word problems that need a 3-4 digit multiplication, answered by
one agent with the `calculator` tool, at temperature 0, with `tool_choice` "auto" (the model
decides) and "first" (its first step is a call, held by a grammar).

    python benchmarks/llama_tools.py --model $(../shared/models/bench-model.sh qwen0.5b)

Prints, per setting: problems whose first call computed the right product, right final
answers, and seconds per problem; and the same without tools.
"""

from __future__ import annotations

import argparse
import random
import time

import moot

THINGS = [("crates", "bottles"), ("rows", "seats"), ("boxes", "pencils"), ("buses", "people")]


def problems(count: int, seed: int = 0) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    made = []
    for index in range(count):
        a, b = rng.randint(120, 4999), rng.randint(23, 987)
        outer, inner = THINGS[index % len(THINGS)]
        made.append(
            (f"There are {a} {outer} with {b} {inner} each. How many {inner} is that?", a, b)
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--engine", default="simple")
    args = parser.parse_args()
    model = moot.load_model(f"llama:{args.model}", n_ctx=4096, n_threads=2, engine=args.engine)
    print("| tools | tool_choice | right first calls | right answers | seconds per problem |")
    print("|---|---|---:|---:|---:|")
    for tools, choice in ((False, "auto"), (True, "auto"), (True, "first")):
        agent = moot.Agent(
            name="solver", model=model, temperature=0, max_tokens=256,
            tools=["calculator"] if tools else [], tool_choice=choice,
        )  # fmt: skip
        society = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1))
        calls = answers = 0
        started = time.perf_counter()
        for question, a, b in problems(args.problems):
            turn = society.run(question).turns[0]
            made = [c for c in turn.tool_calls if c.error is None]
            calls += bool(made) and made[0].result == str(a * b)
            answers += turn.answer == str(a * b)
        seconds = (time.perf_counter() - started) / args.problems
        shown = "calculator" if tools else "none"
        print(f"| {shown} | {choice if tools else '-'} | {calls} / {args.problems} | "
              f"{answers} / {args.problems} | {seconds:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
