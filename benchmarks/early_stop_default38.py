"""Issue 38, slice 7: the default society (3 text, 3 program agents) with and without the early
stop, replayed offline from vote-9's and pal-3's stored samples (agent i has the same seed in
every method, so these are the samples the societies draw).

"pairs" draws text 1 and program 1, then 2 and 2, then 3 and 3, stopping at the first pair that
agrees (`vote-3-pal3-stop2`, moot debate's default for a number); "full" asks all six
(`vote-3-pal3`). Each is paired with the text vote of N samples, N the smallest whose tokens
reach its own, McNemar exact.

    python benchmarks/early_stop_default38.py gsm8k 0 100      # problems 1-100, in run order
"""

from __future__ import annotations

import json
import sys

from early_stop38 import stopped_at
from redecide38 import RESULTS, plurality, versus_vote


def main(task: str, first: int, last: int) -> None:
    records = [json.loads(line) for line in (RESULTS / f"{task}-qwen1.5b/results.jsonl").open()]
    votes = {r["question_id"]: r for r in records if r["method"] == "vote-9"}
    programs = {r["question_id"]: r for r in records if r["method"] == "pal-3"}
    questions = [q for q in votes if q in programs][first:last]
    per_text = sum(votes[q]["tokens"] for q in questions) / len(questions) / 9

    def text(q: str, k: int) -> list[str | None]:
        return [votes[q]["per_round"][0]["answers"][f"agent{i}"] for i in range(1, k + 1)]

    print(f"{task}, problems {first + 1}-{first + len(questions)}")
    for rule in ("full", "pairs"):
        right, spent = [], 0.0
        for q in questions:
            coded = list(programs[q]["per_round"][0]["answers"].values())
            costs = (votes[q]["tokens"] / 9, programs[q]["tokens"] / 3)
            if rule == "full":
                drawn = [(a, costs[0]) for a in text(q, 3)] + [(a, costs[1]) for a in coded]
            else:
                drawn = [pair for t, c in zip(text(q, 3), coded, strict=True)
                         for pair in ((t, costs[0]), (c, costs[1]))]  # fmt: skip
                drawn = drawn[: stopped_at([answer for answer, _ in drawn], 2)]
            right.append(plurality([answer for answer, _ in drawn]) == votes[q]["reference"])
            spent += sum(cost for _, cost in drawn)
        samples = [text(q, 9) for q in questions]
        references = [votes[q]["reference"] for q in questions]
        cells = versus_vote(right, spent / len(questions), per_text, samples, references)
        print(f"| {rule} | {cells}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
