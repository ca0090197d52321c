"""How well each Co-LLM gate ranks positions for a deferral budget, on held-out pairs.

The base and the assistant read reference answers once (`moot.fusion.train.score_pairs`, kept
in `--scores` so a rerun skips it); then, pair-wise k-fold, gates are fitted on the other folds
and each ranking defers 10/20/30% of a held-out fold's positions: the mean log probability of a
reference token is the score (higher is better). Rankings: Co-LLM's weak labels only, weak
labels then marginal likelihood, the base's top probability (the threshold gate), and the
oracle (the positions the assistant gains most on); `--train-pairs 40,80` adds a learning
curve (the gates fitted on fewer of the training folds' pairs). With `--out`, the
marginal-likelihood gate fitted on every pair is written there, for fusion_accuracy.py.

    python benchmarks/fusion_gate_fit.py --base $(../shared/models/bench-model.sh qwen0.5b) \
        --assistant $(../shared/models/bench-model.sh qwen1.5b) --prompts du-gsm8k \
        --out benchmarks/results/fusion/gate-du-marginal-qwen0.5b-1.5b.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from moot.cli.fusion import question_template
from moot.fusion import LearnedGate
from moot.fusion.train import ScoredPositions, deferred_log_likelihood, fit_gate, score_pairs

ROOT = Path(__file__).resolve().parent
GSM8K = ROOT.parent / ".." / "shared" / "data" / "gsm8k" / "dev.jsonl"
BUDGETS = (0.1, 0.2, 0.3)


def pairs(skip: int, limit: int) -> list[tuple[str, str]]:
    lines = GSM8K.read_text(encoding="utf-8").splitlines()[skip : skip + limit]
    return [(r["question"], r["solution"]) for r in map(json.loads, lines)]


def load_or_score(args: argparse.Namespace) -> ScoredPositions:
    path = Path(args.scores)
    template = question_template(args.prompts)
    if path.exists():
        saved = np.load(path)
        print(f"scores read from {path}")
        return ScoredPositions(
            Path(args.base).name,
            Path(args.assistant).name,
            len(np.unique(saved["example"])),
            template,
            saved["hidden"],
            saved["base_logprob"],
            saved["assistant_logprob"],
            saved["base_top"],
            saved["example"],
        )
    chosen = pairs(args.skip, args.limit)
    if len(chosen) < args.limit:
        print(f"only {len(chosen)} pairs after the first {args.skip} of {GSM8K}")
    scored = score_pairs(
        args.base,
        args.assistant,
        chosen,
        question_template=template,
        n_threads=args.threads,
        progress=lambda done: print(f"scored {done} pairs", flush=True),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        hidden=scored.hidden,
        base_logprob=scored.base_logprob,
        assistant_logprob=scored.assistant_logprob,
        base_top=scored.base_top,
        example=scored.example,
    )
    return scored


def p_defer(gate: LearnedGate, hidden: np.ndarray) -> np.ndarray:
    z = ((hidden - np.asarray(gate.mean)) / np.asarray(gate.scale)) @ np.asarray(gate.weights)
    return 1 / (1 + np.exp(-np.clip(z + gate.bias, -30, 30)))


def cross_validate(
    scored: ScoredPositions, folds: int, train_pairs: int | None = None
) -> dict[str, list[float]]:
    """Mean held-out log probability per ranking and budget, positions of all folds pooled;
    the gates learn from the first `train_pairs` pairs of the other folds (default: all)."""
    rankings = ["base alone", "weak labels", "marginal likelihood", "base top probability"]
    rankings.append("oracle")
    totals = {name: np.zeros(len(BUDGETS)) for name in rankings}
    fold_of = scored.example % folds
    for fold in range(folds):
        train, test = scored.subset(fold_of != fold), scored.subset(fold_of == fold)
        if train_pairs is not None:
            kept = np.unique(train.example)[:train_pairs]
            train = train.subset(np.isin(train.example, kept))
        scores = {
            "base alone": None,
            "weak labels": p_defer(fit_gate(train, objective="weak"), test.hidden),
            "marginal likelihood": p_defer(fit_gate(train, objective="marginal"), test.hidden),
            "base top probability": -test.base_top,
            "oracle": test.assistant_logprob - test.base_logprob,
        }
        for name, score in scores.items():
            for column, share in enumerate(BUDGETS):
                value = (
                    float(test.base_logprob.mean())
                    if score is None
                    else deferred_log_likelihood(test, score, share)
                )
                totals[name][column] += value * len(test.base_logprob)
        print(f"fold {fold + 1}/{folds} done", flush=True)
    rows = len(scored.base_logprob)
    return {name: (total / rows).tolist() for name, total in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True)
    parser.add_argument("--assistant", required=True)
    parser.add_argument("--prompts", choices=["du-gsm8k"], help="default: the bare question")
    parser.add_argument("--skip", type=int, default=200, help="GSM8K problems left for scoring")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scores", default="bench-out/gate-scores.npz")
    parser.add_argument("--out", help="write the marginal-likelihood gate fitted on every pair")
    parser.add_argument(
        "--train-pairs",
        help="comma-separated training sizes for a learning curve (30%% deferred), e.g. 40,80",
    )
    args = parser.parse_args()
    scored = load_or_score(args)
    table = cross_validate(scored, args.folds)
    print(f"\n{len(scored.base_logprob)} positions of {scored.examples} pairs, {args.folds} folds")
    print("| ranking | " + " | ".join(f"{share:.0%} deferred" for share in BUDGETS) + " |")
    print("|---|" + "---:|" * len(BUDGETS))
    for name, values in table.items():
        print(f"| {name} | " + " | ".join(f"{value:.3f}" for value in values) + " |")
    if args.train_pairs:
        print("\n| training pairs per fold | weak labels | marginal likelihood | top probability |")
        print("|---:|---:|---:|---:|")
        for size in map(int, args.train_pairs.split(",")):
            curve = cross_validate(scored, args.folds, size)
            at_30 = [curve[name][-1] for name in list(curve)[1:4]]
            print(f"| {size} | " + " | ".join(f"{value:.3f}" for value in at_30) + " |")
    if args.out:
        fit_gate(scored, objective="marginal").save(Path(args.out))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
