"""Issue 38, slice 6: an early-stopping vote (ESC, Li et al. ICLR 2024) replayed offline.

Samples are drawn in windows of `w` (vote-9's stored text samples, in agent order); the vote
stops at the first window whose answers all agree and decides by the plurality of every sample
drawn, at most 9. Paired with the text vote of N samples, N the smallest whose tokens reach its
own, McNemar exact. Exploration: the rule was read after the samples were seen.

    python benchmarks/early_stop38.py gsm8k 60 arithmetic 50    # task, problems (in run order)
"""

from __future__ import annotations

import json
import sys

from redecide38 import RESULTS, plurality, versus_vote


def stopped_at(answers: list[str | None], window: int) -> int:
    """How many samples the early-stopping vote draws."""
    drawn = 0
    while drawn < len(answers):
        start, drawn = drawn, min(drawn + window, len(answers))
        last = answers[start:drawn]
        if last[0] is not None and len(set(last)) == 1:
            break
    return drawn


def main(tasks: list[tuple[str, int]]) -> None:
    print(
        "| task | window | right | tokens / question | matched vote (right) | only ESC / vote | p |"
    )
    for task, problems in tasks:
        stored = (RESULTS / f"{task}-qwen1.5b/results.jsonl").open()
        records = [json.loads(line) for line in stored]
        votes = [r for r in records if r["method"] == "vote-9"][:problems]
        samples = [[r["per_round"][0]["answers"][f"agent{i}"] for i in range(1, 10)] for r in votes]
        for window in (2, 3):
            drawn = [stopped_at(answers, window) for answers in samples]
            right = [
                plurality(a[:n]) == r["reference"]
                for a, n, r in zip(samples, drawn, votes, strict=True)
            ]
            spent = sum(r["tokens"] * n / 9 for r, n in zip(votes, drawn, strict=True)) / len(votes)
            mean = sum(r["tokens"] for r in votes) / len(votes) / 9  # one sample's tokens
            references = [r["reference"] for r in votes]
            cells = versus_vote(right, spent, mean, samples, references)
            print(f"| {task} ({len(votes)}) | {window} | {cells}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main([(task, int(problems)) for task, problems in zip(args[::2], args[1::2], strict=True)])
