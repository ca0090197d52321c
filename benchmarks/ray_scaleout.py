"""Ray scale-out of `moot bench`: the same questions on 1 worker and on N.

A scripted model that sleeps per call stands in for a slow remote model, so the speedup shows
the runner's scaling rather than the machine's cores:

    python benchmarks/ray_scaleout.py --questions 64 --delay 0.1 --workers 1 4

Each worker count runs the same plan (debate 3x2, one question in flight per worker) on a fresh
local Ray instance. "run" is from the first item sent to the last record back, with the workers
already up; "with start" adds starting the workers and building their societies.
"""

from __future__ import annotations

import argparse
import re
import time

import ray

from moot.bench import BenchPlan, MethodSettings, arithmetic
from moot.bench.ray import RayPool
from moot.testing import ScriptedChatModel

_EXPRESSION = re.compile(r"What is the result of ([\d+*-]+)\?")


def solve(messages) -> str:
    question = next(m.text for m in messages if _EXPRESSION.search(m.text))
    return f"Answer: {eval(_EXPRESSION.search(question).group(1))}"  # noqa: S307 - digits, + * -


def timed_run(plan: BenchPlan, workers: int) -> tuple[float, float, int]:
    ray.init(num_cpus=max(workers, 2), include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        with RayPool(plan, workers=workers, concurrency=1) as pool:
            ready = time.perf_counter()
            records = list(pool.run(plan.items()))
            finished = time.perf_counter()
    finally:
        ray.shutdown()
    assert all(record.correct for record in records)
    return finished - ready, finished - started, len(records)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds per model call")
    parser.add_argument("--method", default="debate-3x2")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    model = ScriptedChatModel(respond=solve, delay=args.delay)
    plan = BenchPlan(
        task=arithmetic(args.questions, seed=0),
        methods=[args.method],
        settings=MethodSettings(model=model),
    )
    results = {workers: timed_run(plan, workers) for workers in args.workers}
    base_run, base_total, _ = results[args.workers[0]]
    print(f"{args.questions} questions of {args.method}, {args.delay * 1000:.0f} ms per call")
    print("| workers | run (s) | speedup | with start (s) | speedup |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for workers, (run, total, count) in results.items():
        assert count == args.questions
        print(
            f"| {workers} | {run:.2f} | {base_run / run:.2f}x | {total:.2f} | "
            f"{base_total / total:.2f}x |"
        )


if __name__ == "__main__":
    main()
