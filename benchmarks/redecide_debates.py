"""Stored debates re-decided offline: the last round's vote against the trajectory vote (every
round's answers, a changed answer counting half: `moot.TrajectoryVote`'s defaults) and the
first round's vote, from `per_round` in a bench folder's results (no model calls).

    python benchmarks/redecide_debates.py benchmarks/results/quality/gsm8k-qwen1.5b ...
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from redecide38 import mcnemar


def plurality(answers: list[str | None]) -> str | None:
    """The most common answer; a tie goes to the one given first."""
    counts = Counter(answer for answer in answers if answer is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(answer for answer in answers if answer is not None and counts[answer] == top)


def trajectory(rounds: list[dict], keep: float = 1.0, change: float = 0.5) -> str | None:
    """`TrajectoryVote`'s decision: first answers 1, kept ones `keep`, changed ones `change`."""
    weight: dict[str, float] = defaultdict(float)
    order: list[str] = []
    previous: dict[str, str | None] = {}
    for index, round in enumerate(rounds):
        for agent, answer in round["answers"].items():
            if answer is not None:
                score = 1.0 if index == 0 else keep if previous.get(agent) == answer else change
                order += [answer] if answer not in weight else []
                weight[answer] += score
            previous[agent] = answer
    if not weight:
        return None
    top = max(weight.values())
    return next(answer for answer in order if weight[answer] == top)


def right(record: dict, answer: str | None) -> bool:
    """Whether `answer` is right, as the record's turns that gave it were judged."""
    for round in record["per_round"]:
        for agent, given in round["answers"].items():
            if answer is not None and given == answer:
                return bool(round["correct"][agent])
    return False


def round_vote(record: dict, index: int) -> str | None:
    """The plurality of one round's answers (0: the first, -1: the last)."""
    return plurality(list(record["per_round"][index]["answers"].values()))


def main(folders: list[str]) -> None:
    print(
        "| folder | method | debates | round 1 | last round | trajectory | only traj. / last | p |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for folder in folders:
        records = [json.loads(line) for line in (Path(folder) / "results.jsonl").open()]
        debates = defaultdict(list)
        for record in records:
            if len(record.get("per_round") or []) > 1 and record["method"].startswith("debate"):
                debates[record["method"]].append(record)
        for method, group in sorted(debates.items()):
            first = [right(r, round_vote(r, 0)) for r in group]
            last = [right(r, round_vote(r, -1)) for r in group]
            scored = [right(r, trajectory(r["per_round"])) for r in group]
            pairs = list(zip(scored, last, strict=True))
            only_t = sum(by_trajectory and not by_last for by_trajectory, by_last in pairs)
            only_l = sum(by_last and not by_trajectory for by_trajectory, by_last in pairs)
            print(
                f"| {Path(folder).name} | {method} | {len(group)} | {sum(first)} | {sum(last)} | "
                f"{sum(scored)} | {only_t} / {only_l} | {mcnemar(only_t, only_l):.3f} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
