"""Issue 38, slice 5: mixed text/program decisions re-decided offline from stored samples.

Seeded calls repeat, so `vote-3-pal3[-crosscheck]` and `vote-6-pal3-crosscheck` on a question are
vote-9's first k text answers and pal-3's three programs, decided by plurality or by
`CrossCheckVote`'s rule (most sources, then most votes, then first given). Each is paired with
the text vote of N samples, N the smallest whose tokens reach its own, McNemar exact.

    python benchmarks/redecide38.py gsm8k 20 40      # the held-out GSM8K problems 21-40
    python benchmarks/redecide38.py arithmetic 0 30
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "quality38"


def crosscheck(sourced: list[tuple[str, str | None]]) -> str | None:
    sources: dict[str, set[str]] = {}
    votes: dict[str, int] = {}
    for source, answer in sourced:
        if answer is not None:
            sources.setdefault(answer, set()).add(source)
            votes[answer] = votes.get(answer, 0) + 1
    return max(sources, key=lambda a: (len(sources[a]), votes[a]), default=None)


def plurality(answers: list[str | None]) -> str | None:
    return crosscheck([("one", answer) for answer in answers])


def versus_vote(
    right: list[bool],
    tokens: float,
    per_sample: float,
    samples: list[list[str | None]],
    references: list[str],
) -> str:
    """Table cells: `right` (per question, at `tokens` a question) against the text vote of N
    of `samples`, N the smallest whose tokens reach `tokens`; McNemar exact."""
    n = next((n for n in range(1, 10) if per_sample * n >= tokens), 9)
    vote = [plurality(s[:n]) == ref for s, ref in zip(samples, references, strict=True)]
    only_m = sum(m and not v for m, v in zip(right, vote, strict=True))
    only_v = sum(v and not m for m, v in zip(right, vote, strict=True))
    count = len(right)
    return (
        f"{sum(right)} / {count} | {tokens:,.0f} | vote-{n} ({sum(vote)} / {count}) "
        f"| {only_m} / {only_v} | {mcnemar(only_m, only_v):.3f} |"
    )


def mcnemar(only_a: int, only_b: int) -> float:
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def main(task: str, first: int, last: int) -> None:
    records = [json.loads(line) for line in (RESULTS / f"{task}-qwen1.5b/results.jsonl").open()]
    votes = {r["question_id"]: r for r in records if r["method"] == "vote-9"}
    programs = {r["question_id"]: r for r in records if r["method"] == "pal-3"}
    questions = [q for q in votes if q in programs][first:last]  # in the order they ran

    def text(q: str, k: int) -> list[str | None]:
        answers = votes[q]["per_round"][0]["answers"]
        return [answers[f"agent{i}"] for i in range(1, k + 1)]

    def tokens(q: str, k: int) -> float:
        return votes[q]["tokens"] * k / 9

    print(f"{task}, problems {first + 1}-{first + len(questions)}")
    for name, k, rule in [
        ("vote-3-pal3", 3, "plurality"),
        ("vote-3-pal3-crosscheck", 3, "crosscheck"),
        ("vote-6-pal3-crosscheck", 6, "crosscheck"),
        ("pal-3", 0, "plurality"),
    ]:
        right, spent = [], 0.0
        for q in questions:
            texts = text(q, k)
            progs = list(programs[q]["per_round"][0]["answers"].values())
            if rule == "plurality":
                answer = plurality(texts + progs)
            else:
                answer = crosscheck([("text", a) for a in texts] + [("program", a) for a in progs])
            right.append(answer == votes[q]["reference"])
            spent += tokens(q, k) + programs[q]["tokens"]
        per_question = spent / len(questions)
        n = next(
            (n for n in range(1, 10) if sum(tokens(q, n) for q in questions) / len(questions)
             >= per_question),
            9,
        )  # fmt: skip
        vote = [plurality(text(q, n)) == votes[q]["reference"] for q in questions]
        only_m = sum(m and not v for m, v in zip(right, vote, strict=True))
        only_v = sum(v and not m for m, v in zip(right, vote, strict=True))
        p = mcnemar(only_m, only_v)
        print(
            f"| {name} | {sum(right)} / {len(questions)} | {per_question:,.0f} | vote-{n} "
            f"({sum(vote)} / {len(questions)}) | {only_m} / {only_v} | {p:.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
