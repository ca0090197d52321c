"""Cascade from the embedded model to a stronger one, against random routing, on sums.

Every question is asked once of both tiers (tier 1: 3 samples of the embedded model, confidence
= their agreement; tier 2: the strong model), one JSON line per question in OUT. The report
replays the cascade at every threshold (`moot.graphs.cascade.simulate`, the cascade's own rule)
and compares it with routing the same share of questions to the strong model at random
(expected accuracy: (1 - share) x weak + share x strong). `calibrate` picks a threshold on the
first half of the questions, which is then scored on the second half.

    STRONG=llama:$(../shared/models/bench-model.sh qwen0.5b)
    python benchmarks/cascade.py --strong $STRONG --low 1 --high 20 --out bench-out/cascade.jsonl
    python benchmarks/cascade.py --report bench-out/cascade.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import moot
from moot.graphs.cascade import TierOutcome, calibrate, simulate, tier_confidence


def sums(count: int, seed: int, low: int, high: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    questions = []
    for _ in range(count):
        a, b = rng.randint(low, high), rng.randint(low, high)
        questions.append((f"What is {a}+{b}?", str(a + b)))
    return questions


def profile(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = len(out.read_text().splitlines()) if out.exists() else 0
    weak = moot.load_model(args.weak, max_tokens=args.max_tokens)
    strong = moot.load_model(args.strong, max_tokens=args.max_tokens)
    samples = [moot.Agent(name=f"weak{i}", model=weak, temperature=0.8) for i in range(3)]
    tier1 = moot.Society(agents=samples, protocol=moot.Debate(rounds=1))
    tier2 = moot.Society(
        agents=[moot.Agent(name="strong", model=strong)], protocol=moot.Debate(rounds=1)
    )
    questions = sums(args.questions, args.seed, args.low, args.high)
    for number, (question, answer) in enumerate(questions):
        if number < done:
            continue
        tiers = []
        for society in (tier1, tier2):
            result = society.run(question)
            confidence = tier_confidence(result.turns, result.answer, "agreement")
            tiers.append(
                {"answer": result.answer, "correct": result.answer == answer,
                 "confidence": confidence, "tokens": result.usage.total_tokens}
            )  # fmt: skip
        with out.open("a") as handle:
            handle.write(
                json.dumps({"question": question, "reference": answer, "tiers": tiers}) + "\n"
            )
        print(
            f"{number + 1}/{args.questions} weak={tiers[0]['correct']} "
            f"({tiers[0]['confidence']:.2f}) strong={tiers[1]['correct']}",
            file=sys.stderr,
            flush=True,
        )


def outcomes(lines: list[dict]) -> list[list[TierOutcome]]:
    return [
        [
            TierOutcome(**{k: t[k] for k in ("correct", "confidence", "tokens")})
            for t in line["tiers"]
        ]
        for line in lines
    ]


def report(path: Path) -> None:
    profiles = outcomes([json.loads(line) for line in path.read_text().splitlines()])
    n = len(profiles)
    weak = sum(p[0].correct for p in profiles) / n
    strong = sum(p[1].correct for p in profiles) / n
    print(
        f"{n} questions; weak tier alone {100 * weak:.1f}%, strong tier alone {100 * strong:.1f}%\n"
    )
    print(
        "| threshold | share sent to strong | cascade accuracy | random routing, same share"
        " | cascade - random | tokens per question |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    seen = set()
    for threshold in sorted({o.confidence for p in profiles for o in p[:1]} | {0.0, 1.01}):
        accuracy, tokens, share = simulate(profiles, threshold)
        if share in seen:
            continue
        seen.add(share)
        random_accuracy = (1 - share) * weak + share * strong
        shown = f"{min(threshold, 1.0):.2f}{'+' if threshold > 1 else ''}"
        cells = [
            shown,
            f"{100 * share:.0f}%",
            f"{100 * accuracy:.1f}%",
            f"{100 * random_accuracy:.1f}%",
            f"{100 * (accuracy - random_accuracy):+.1f}",
            f"{tokens:,.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    half = n // 2
    picked = calibrate(profiles[:half], margin=0.02)
    accuracy, tokens, share = simulate(profiles[half:], picked.threshold)
    print(
        f"\ncalibrate(first {half}, margin 0.02) -> threshold {picked.threshold:.2f}; on the other "
        f"{n - half}: accuracy {100 * accuracy:.1f}%, {100 * share:.0f}% sent to strong, "
        f"{tokens:,.0f} tokens per question (strong alone: "
        f"{100 * sum(p[1].correct for p in profiles[half:]) / (n - half):.1f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weak", default="local")
    parser.add_argument("--strong")
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--low", type=int, default=1, help="smallest operand")
    parser.add_argument("--high", type=int, default=20, help="largest operand")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", default="bench-out/cascade.jsonl")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    if args.report:
        report(args.report)
    else:
        profile(args)


if __name__ == "__main__":
    main()
