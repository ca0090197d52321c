"""What a newcomer's first debates give on the embedded model (issue 41).

30 simple questions of three kinds (one-word facts, yes/no facts, one-digit sums), each asked
of a single agent and of a 3-agent x 2-round debate on the embedded SmolLM2-135M, seeded.
Reports the share of turns with a readable answer, and the final answer's accuracy per kind,
single against debate; then the README's first command over 10 seeds (`--readme-seeds`).

    python benchmarks/first_run.py --out after.jsonl          # this checkout's defaults
    PYTHONPATH=OLD_CHECKOUT python benchmarks/first_run.py --out before.jsonl  # "before"
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import moot
from moot.aggregate.vote import weighted_winner

FACTS = [
    ("What is the capital of France?", "paris"),
    ("What is the capital of Japan?", "tokyo"),
    ("What is the capital of Italy?", "rome"),
    ("What is the capital of Germany?", "berlin"),
    ("What is the capital of Spain?", "madrid"),
    ("What color is the sky on a clear day?", "blue"),
    ("What is the largest planet in the solar system?", "jupiter"),
    ("Which animal says meow?", "cat"),
    ("What is the opposite of hot?", "cold"),
    ("What is the capital of the United Kingdom?", "london"),
]
YES_NO = [
    ("Is the sun a star?", "yes"),
    ("Is Paris in France?", "yes"),
    ("Do fish live in water?", "yes"),
    ("Do cats have four legs?", "yes"),
    ("Is the Pacific an ocean?", "yes"),
    ("Is the moon bigger than the Earth?", "no"),
    ("Can dogs fly?", "no"),
    ("Is fire cold?", "no"),
    ("Is two larger than five?", "no"),
    ("Is snow black?", "no"),
]
SUMS = [
    (f"What is {a}+{b}?", str(a + b))
    for a, b in [(2, 3), (4, 5), (3, 3), (7, 1), (1, 2), (6, 2), (5, 4), (2, 2), (8, 1), (3, 4)]
]
KINDS = {"fact": FACTS, "yes/no": YES_NO, "sum": SUMS}
README_QUESTION = "What is the capital of France?"


def right(answer: str | None, reference: str) -> bool:
    """The reference as a word of the answer (a fact), or equal (a number, yes/no)."""
    if answer is None:
        return False
    words = re.findall(r"[a-z0-9]+", answer.lower())
    return reference in words if not reference.isdigit() else words == [reference]


def over_both_rounds(debate: moot.Result) -> str | None:
    """The debate decided as `moot debate` now decides it (`--decide trajectory`): every
    round's answers, an answer changed in round 2 counting half."""
    names = [f"agent{i + 1}" for i in range(3)]
    return weighted_winner(moot.TrajectoryVote().weights(debate.turns, names), 0.0)


def society(agents: int, rounds: int, extract: str | None, seed: int) -> moot.Society:
    model = moot.load_model("local")
    members = [
        moot.Agent(name=f"agent{i + 1}", model=model, seed=seed + i, max_tokens=256)
        for i in range(agents)
    ]
    aggregator = {} if extract is None else {"aggregator": moot.MajorityVote(extract=extract)}
    return moot.Society(agents=members, protocol=moot.Debate(rounds=rounds), **aggregator)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", help="answer format (default: the Society's default)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="run one kind: fact, yes/no, sum or readme")
    parser.add_argument("--readme-seeds", type=int, default=10, help="README question runs (10)")
    parser.add_argument("--out", type=Path, required=True, help="results, one JSON line each")
    args = parser.parse_args()
    # One JSON line per question (and per README seed), appended as it finishes: a rerun with
    # the same --out resumes where the last one stopped.
    done = (
        [json.loads(line) for line in args.out.read_text().splitlines()]
        if args.out.exists()
        else []
    )
    seen = {(row["kind"], row["question"]) for row in done}
    started = time.monotonic()
    with args.out.open("a") as out:
        for kind, questions in [
            *KINDS.items(),
            ("readme", [(README_QUESTION, "paris")] * args.readme_seeds),
        ]:
            for number, (question, reference) in enumerate(questions):
                label = f"{question} #{number}" if kind == "readme" else question
                if (kind, label) in seen or (args.only and kind != args.only):
                    continue
                seed = args.seed + number if kind == "readme" else args.seed
                single = society(1, 1, args.extract, seed).run(question)
                debate = society(3, 2, args.extract, seed).run(question)
                row = {
                    "kind": kind, "question": label, "reference": reference,
                    "single": single.answer, "debate": debate.answer,
                    "trajectory": over_both_rounds(debate),
                    "turns": [t.answer for t in debate.turns],
                    "tokens": debate.usage.total_tokens, "calls": debate.usage.calls,
                }  # fmt: skip
                out.write(json.dumps(row) + "\n")
                out.flush()
                done.append(row)
                print(
                    f"{kind:7} {label[:44]:44} single={single.answer!s:12.12} "
                    f"debate={debate.answer!s:12.12} turns={row['turns']}",
                    file=sys.stderr,
                    flush=True,
                )
    rows = [row for row in done if row["kind"] != "readme"]
    readme = [row["debate"] for row in done if row["kind"] == "readme"]
    turns = [answer for row in rows for answer in row["turns"]]  # type: ignore[attr-defined]
    readable = sum(answer is not None for answer in turns)
    share = f"{readable / len(turns):.0%}" if turns else "-"
    print("| kind | single right | debate right |\n| --- | ---: | ---: |")
    for kind in KINDS:
        of_kind = [row for row in rows if row["kind"] == kind]
        one = sum(right(row["single"], row["reference"]) for row in of_kind)  # type: ignore[arg-type]
        many = sum(right(row["debate"], row["reference"]) for row in of_kind)  # type: ignore[arg-type]
        print(f"| {kind} | {one}/{len(of_kind)} | {many}/{len(of_kind)} |")
    one = sum(right(row["single"], row["reference"]) for row in rows)  # type: ignore[arg-type]
    many = sum(right(row["debate"], row["reference"]) for row in rows)  # type: ignore[arg-type]
    print(f"| all | {one}/{len(rows)} | {many}/{len(rows)} |")
    both = [row for row in done if "trajectory" in row]
    print(
        f"decided over both rounds (trajectory), rows that have it: "
        f"{sum(right(row['trajectory'], row['reference']) for row in both)}/{len(both)} right "
        f"against {sum(right(row['debate'], row['reference']) for row in both)} by the last round"
    )
    print(
        f"\nreadable turns: {readable}/{len(turns)} ({share}); "
        f"README question right in {sum(right(a, 'paris') for a in readme)}/{len(readme)} seeds "
        f"{readme}; "
        f"mean debate tokens {sum(row['tokens'] for row in done) / max(len(done), 1):.0f}; "  # type: ignore[misc]
        f"{time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
