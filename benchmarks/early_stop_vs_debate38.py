"""Issue 38, slice 7: the early-stopping vote (windows of 2, fixed in slice 6) replayed on issue
17's samples, a draw of its own (another prompt version: other replies on the same problems),
paired with the matched-token vote and with plain debate 3x3 run on the same problems.

    python benchmarks/early_stop_vs_debate38.py gsm8k arithmetic
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from early_stop38 import stopped_at
from redecide38 import mcnemar, plurality

ISSUE_17 = Path(__file__).parent / "results" / "quality"
WINDOW = 2


def discordant(mine: list[bool], other: list[bool]) -> tuple[int, int]:
    """(right only in `mine`, right only in `other`)."""
    pairs = list(zip(mine, other, strict=True))
    return sum(m and not o for m, o in pairs), sum(o and not m for m, o in pairs)


def main(tasks: list[str]) -> None:
    print(
        "| task (problems) | ESC right | tokens / q | matched vote | only ESC / vote | p "
        "| debate-3x3 | its tokens / q | only ESC / debate | p |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for task in tasks:
        lines = (ISSUE_17 / f"{task}-qwen1.5b/results.jsonl").open()
        records = [json.loads(line) for line in lines]
        votes = {r["question_id"]: r for r in records if r["method"] == "vote-9"}
        debates = {r["question_id"]: r for r in records if r["method"] == "debate-3x3"}
        questions = [q for q in votes if q in debates]
        samples = {
            q: [votes[q]["per_round"][0]["answers"][f"agent{i}"] for i in range(1, 10)]
            for q in questions
        }
        drawn = {q: stopped_at(samples[q], WINDOW) for q in questions}
        esc = [plurality(samples[q][: drawn[q]]) == votes[q]["reference"] for q in questions]
        spent = sum(votes[q]["tokens"] * drawn[q] / 9 for q in questions) / len(questions)
        per_sample = sum(votes[q]["tokens"] for q in questions) / len(questions) / 9
        n = next((n for n in range(1, 10) if per_sample * n >= spent), 9)
        vote = [plurality(samples[q][:n]) == votes[q]["reference"] for q in questions]
        debate = [debates[q]["correct"] for q in questions]
        debate_tokens = sum(debates[q]["tokens"] for q in questions) / len(questions)

        (ev, ve), (ed, de) = discordant(esc, vote), discordant(esc, debate)
        count = len(questions)
        print(
            f"| {task} ({count}) | {sum(esc)} / {count} | {spent:,.0f} | vote-{n} "
            f"({sum(vote)} / {count}) | {ev} / {ve} | {mcnemar(ev, ve):.2f} "
            f"| {sum(debate)} / {count} | {debate_tokens:,.0f} | {ed} / {de} "
            f"| {mcnemar(ed, de):.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
