"""Debate variants on Du et al.'s arithmetic task, on a real model.

Runs one method over the questions, appending one JSON line per question to OUT (a rerun skips
questions already there), so methods can run in parallel processes:

    MODEL=llama:$(../shared/models/bench-model.sh qwen0.5b)
    python benchmarks/societies.py --method debate-3x3 --model $MODEL --out bench-out/societies
    python benchmarks/societies.py --report bench-out/societies

Methods: single, vote-3, debate-3x2, debate-3x3, debate-3x3-consensus, debate-reflect-debate.
Each line keeps the per-round votes and tokens, so --report can also read single agent, vote of
3, debate 3x2 and consensus stop off the debate-3x3 traces (paired: same samples).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import moot
from moot.bench.tasks import arithmetic
from moot.result import Result

METHODS = {
    "single": dict(agents=1, protocol=dict(rounds=1)),
    "vote-3": dict(agents=3, protocol=dict(rounds=1)),
    "debate-3x2": dict(agents=3, protocol=dict(rounds=2)),
    "debate-3x3": dict(agents=3, protocol=dict(rounds=3)),
    "debate-3x3-consensus": dict(agents=3, protocol=dict(rounds=3, consensus=1.0)),
    "debate-reflect-debate": dict(agents=3, protocol=dict(strategy="debate-reflect-debate")),
}


def society(method: str, model: str, max_tokens: int) -> moot.Society:
    settings = METHODS[method]
    loaded = moot.load_model(model, max_tokens=max_tokens, n_ctx=4096)
    agents = [moot.Agent(name=f"a{i}", model=loaded) for i in range(int(settings["agents"]))]
    protocol = moot.Debate.model_validate(settings["protocol"])
    return moot.Society(agents=agents, protocol=protocol, aggregator=moot.MajorityVote())


def record(result: Result, reference: str, seconds: float) -> dict:
    vote = moot.MajorityVote()
    per_round = []
    for number in range(1, result.rounds + 1):
        turns = result.round_turns(number)
        per_round.append(
            {
                "vote": vote.vote([turn.answer for turn in turns]),
                "first_agent": turns[0].answer if turns else None,
                "unanimous": len({t.answer for t in turns}) == 1 and turns[0].answer is not None,
                "tokens": sum(turn.usage.total_tokens for turn in turns),
            }
        )
    return {
        "reference": reference,
        "answer": result.answer,
        "correct": result.answer == reference,
        "tokens": result.usage.total_tokens,
        "calls": result.usage.calls,
        "rounds": result.rounds,
        "stop_reason": result.stop_reason,
        "failed_turns": sum(turn.failed for turn in result.turns),
        "seconds": round(seconds, 2),
        "per_round": per_round,
    }


def run(args: argparse.Namespace) -> None:
    out = Path(args.out) / f"{args.method}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = (
        {json.loads(line)["id"] for line in out.read_text().splitlines()} if out.exists() else set()
    )
    members = society(args.method, args.model, args.max_tokens)
    questions = arithmetic(args.questions, seed=args.seed, low=args.low, high=args.high).questions
    for number, question in enumerate(questions, start=1):
        if question.id in done:
            continue
        started = time.perf_counter()
        result = members.run(question.question)
        line = {"id": question.id, **record(result, question.answer, time.perf_counter() - started)}
        with out.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        print(
            f"{args.method} {number}/{len(questions)} correct={line['correct']} "
            f"tokens={line['tokens']} {line['seconds']}s",
            file=sys.stderr,
            flush=True,
        )


def interval(correct: int, total: int) -> str:
    """Accuracy with a 95% Wilson interval."""
    if not total:
        return "-"
    p, z = correct / total, 1.96
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return f"{100 * p:.1f}% [{100 * (centre - half):.0f}, {100 * (centre + half):.0f}]"


def report(folder: Path) -> None:
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        correct = sum(line["correct"] for line in lines)
        tokens = sum(line["tokens"] for line in lines) / len(lines)
        rows.append((path.stem, "run", len(lines), interval(correct, len(lines)), tokens))
        if path.stem == "debate-3x3":
            rows += derived(lines)
    print("| method | how | questions | accuracy [95% CI] | tokens per question |")
    print("| --- | --- | --- | --- | --- |")
    for method, how, count, accuracy, tokens in rows:
        print(f"| {method} | {how} | {count} | {accuracy} | {tokens:,.0f} |")


def derived(lines: list[dict]) -> list[tuple]:
    """Methods read off the debate-3x3 traces: what they would have answered and spent."""
    n = len(lines)
    out = []
    single = sum(line["per_round"][0]["first_agent"] == line["reference"] for line in lines)
    first = [line["per_round"][0] for line in lines]
    out.append(
        (
            "single (agent 1, round 1)",
            "from 3x3",
            n,
            interval(single, n),
            sum(r["tokens"] for r in first) / 3 / n,
        )
    )
    vote = sum(line["per_round"][0]["vote"] == line["reference"] for line in lines)
    out.append(
        ("vote-3 (round 1)", "from 3x3", n, interval(vote, n), sum(r["tokens"] for r in first) / n)
    )
    two = sum(line["per_round"][1]["vote"] == line["reference"] for line in lines)
    out.append(
        (
            "debate-3x2 (rounds 1-2)",
            "from 3x3",
            n,
            interval(two, n),
            sum(r["tokens"] for line in lines for r in line["per_round"][:2]) / n,
        )
    )
    correct = tokens = 0
    for line in lines:
        stop = next((i for i, r in enumerate(line["per_round"]) if r["unanimous"]), 2)
        correct += line["per_round"][stop]["vote"] == line["reference"]
        tokens += sum(r["tokens"] for r in line["per_round"][: stop + 1])
    out.append(("debate-3x3 with consensus stop", "from 3x3", n, interval(correct, n), tokens / n))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", choices=sorted(METHODS))
    parser.add_argument("--model", default="local")
    parser.add_argument("--out", default="bench-out/societies")
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--low", type=int, default=0)
    parser.add_argument("--high", type=int, default=9)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--report", type=Path, help="print the table for a results folder")
    args = parser.parse_args()
    if args.report:
        report(args.report)
    else:
        run(args)


if __name__ == "__main__":
    main()
