"""Issue 38, slice 7: two methods of one results folder on the problems both ran, paired.

python benchmarks/paired38.py gsm8k vote-3-pal3-stop2 vote-3-pal3
"""

from __future__ import annotations

import json
import sys

from redecide38 import RESULTS, mcnemar


def main(task: str, first: str, second: str) -> None:
    lines = (RESULTS / f"{task}-qwen1.5b/results.jsonl").open()
    records = [json.loads(line) for line in lines]
    a = {r["question_id"]: r for r in records if r["method"] == first}
    b = {r["question_id"]: r for r in records if r["method"] == second}
    shared = [q for q in a if q in b]
    only_a = sum(a[q]["correct"] and not b[q]["correct"] for q in shared)
    only_b = sum(b[q]["correct"] and not a[q]["correct"] for q in shared)
    for name, runs in ((first, a), (second, b)):
        right = sum(runs[q]["correct"] for q in shared)
        tokens = sum(runs[q]["tokens"] for q in shared) / max(1, len(shared))
        print(f"| {name} | {right} / {len(shared)} | {tokens:,.0f} |")
    print(f"only {first} / only {second}: {only_a} / {only_b}, p = {mcnemar(only_a, only_b):.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
