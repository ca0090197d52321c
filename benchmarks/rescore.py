"""Read a `moot bench` folder's replies again with the current answer readers, from the call cache.

After a fix to an answer reader (`extract_choice` reading `\\boxed{\\text{D}}`, say), the folder's
accuracy is stale but its replies are not. This reruns the same benchmark into a scratch folder
with the same `--cache` (every call must be answered from it: the script stops if one was not,
since that would be a new run, not a rescore), then writes the new answers into the folder while
keeping each record's first-run calls and seconds (a cached rerun counts zero of both):

    python benchmarks/rescore.py benchmarks/results/quality/mmlu-qwen1.5b -- \\
        --data ../shared/data/machinesom/mmlu.jsonl --model llama:... --limit 50 --prompts moot \\
        --methods single,vote-3,debate-3x2 --cache bench-out/mmlu-1.5b-moot.sqlite

Then rebuild the report: `moot bench --out FOLDER --report-only --methods ...`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_COSTS = ("calls", "cached_calls", "seconds")


def _key(record: dict) -> tuple:
    fields = ("task", "method", "model", "settings", "trial", "question_id")
    return tuple(record[field] for field in fields)


def _dumps(records: list[dict]) -> str:
    return "".join(
        json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n" for record in records
    )


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def merge(old: list[dict], new: list[dict]) -> tuple[list[dict], int]:
    """`new`'s answers with `old`'s costs, in `old`'s order (records the rescore did not run kept
    as they were); and how many answers changed."""
    by_key = {_key(record): record for record in new}
    merged, changed = [], 0
    for record in old:
        if _key(record) not in by_key:
            merged.append(record)
            continue
        fresh = dict(by_key[_key(record)])
        for field in _COSTS:
            fresh[field] = record[field]
        for fresh_round, old_round in zip(fresh["per_round"], record["per_round"], strict=True):
            fresh_round["calls"] = old_round["calls"]
        changed += fresh["answer"] != record["answer"]
        merged.append(fresh)
    return merged, changed


def merge_transcripts(old: list[dict], new: list[dict]) -> list[dict]:
    """`old`'s turns (first-run usage) with each turn's answer read again."""
    by_key = {tuple(entry["key"]): entry["turns"] for entry in new}
    for entry in old:
        if tuple(entry["key"]) not in by_key:
            continue
        for turn, fresh in zip(entry["turns"], by_key[tuple(entry["key"])], strict=True):
            turn["answer"], turn["answer_error"] = fresh["answer"], fresh["answer_error"]
    return old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then moot bench's args")
    args = parser.parse_args()
    bench_args = [arg for arg in args.bench_args if arg != "--"]
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "moot", "bench", *bench_args, "--out", scratch]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"moot bench failed:\n{run.stderr[-3000:]}")
        new = _lines(Path(scratch, "results.jsonl"))
        new_transcripts = _lines(Path(scratch, "transcripts.jsonl"))
    called = [_key(record) for record in new if record["calls"]]
    if called:
        sys.exit(f"{len(called)} records made calls the cache did not answer: not a rescore")
    results, transcripts = args.folder / "results.jsonl", args.folder / "transcripts.jsonl"
    merged, changed = merge(_lines(results), new)
    kept = merge_transcripts(_lines(transcripts), new_transcripts)
    results.write_text(_dumps(merged))
    transcripts.write_text(_dumps(kept))
    print(f"{len(new)} records read again, {changed} answers changed")


if __name__ == "__main__":
    main()
