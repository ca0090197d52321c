"""Two `moot bench` folders side by side: each method run in both, paired question by question.

For comparisons that `moot bench`'s own report cannot make because the runs live apart, such as
one model's methods under moot's prompts and under Du et al.'s (issue 17's prompt-set decision):
a method is matched by name, task, model, trial and settings, the prompt set apart. Each row
gives accuracy in both folders on the questions both ran, the questions only one got right with
McNemar's exact p, and mean tokens a question.

    python benchmarks/compare_folders.py benchmarks/results/quality/gsm8k-qwen1.5b \\
        benchmarks/results/quality/gsm8k-qwen1.5b-du
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections import defaultdict
from pathlib import Path

from moot.bench.records import BenchRecord
from moot.bench.report import Interval, format_p, mcnemar_exact
from moot.bench.store import ResultStore

_Key = tuple[str, str, str, str]  # task, model, method, settings without the prompt set
_PROMPTS = re.compile(r" ?prompts=\S+")


def pair(first: list[BenchRecord], second: list[BenchRecord]) -> list[str]:
    """Markdown rows, one per (task, model, method) both folders ran on shared questions."""
    runs: list[dict[_Key, dict[tuple[int, str], BenchRecord]]] = []
    for records in (first, second):
        by_method: dict[_Key, dict[tuple[int, str], BenchRecord]] = defaultdict(dict)
        for record in records:
            settings = _PROMPTS.sub("", record.settings)
            key = (record.task, record.model, record.method, settings)
            by_method[key][record.trial, record.question_id] = record
        runs.append(by_method)
    rows = []
    for key in [k for k in runs[0] if k in runs[1]]:
        shared = sorted(runs[0][key].keys() & runs[1][key].keys())
        if not shared:
            continue
        a = [runs[0][key][question] for question in shared]
        b = [runs[1][key][question] for question in shared]
        only_a = sum(x.correct and not y.correct for x, y in zip(a, b, strict=True))
        only_b = sum(y.correct and not x.correct for x, y in zip(a, b, strict=True))
        task, model, method, settings = key
        rows.append(
            f"| {task} | {Path(model).name} | {method} | {settings} | {len(shared)} | "
            f"{Interval.wilson(sum(r.correct for r in a), len(a))} | "
            f"{Interval.wilson(sum(r.correct for r in b), len(b))} | "
            f"{statistics.mean(r.tokens for r in a):,.0f} | "
            f"{statistics.mean(r.tokens for r in b):,.0f} | "
            f"{only_a} / {only_b} | {format_p(mcnemar_exact(only_a, only_b))} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    for folder in (args.first, args.second):
        if not (folder / "results.jsonl").exists():
            parser.error(f"{folder} has no results.jsonl (is it a `moot bench --out` folder?)")
    rows = pair(ResultStore(args.first).records(), ResultStore(args.second).records())
    if not rows:
        print("no method ran on the same questions in both folders")
        return
    a, b = args.first.name, args.second.name
    print(
        f"| task | model | method | settings | questions | accuracy {a} | accuracy {b} | "
        f"tokens {a} | tokens {b} | only {a} / only {b} | p |"
    )
    print("| --- | --- | --- | --- | ---: | --- | --- | ---: | ---: | --- | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
