"""`moot fusion train-gate`: learn when a Co-LLM base model should defer to its assistant."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from moot.cli._common import console, count, errors, positive
from moot.errors import ConfigError

PAPER_PROMPTS = ("du-gsm8k", "du-arithmetic", "du-mmlu")
"""Prompt sets whose first question a gate can be trained on (moot/prompts/du/*.json)."""


def add_command(commands: Any) -> None:
    fusion = commands.add_parser("fusion", help="token-level fusion tools (Co-LLM gates)")
    actions = fusion.add_subparsers(dest="action", required=True)
    train = actions.add_parser(
        "train-gate",
        help="train a Co-LLM gate from question/answer pairs",
        description="Label each reference-answer token 'defer' where the assistant gives it a "
        "higher probability than the base, fit a logistic regression on the base's hidden "
        "state, then (Co-LLM's second stage) fit it to the marginal likelihood of the reference "
        "answers. Use the gate with fuse:BASE+ASSISTANT?strategy=colm&gate=GATE.json.",
    )
    train.add_argument("--base", required=True, metavar="SPEC", help="the base model (GGUF)")
    train.add_argument("--assistant", required=True, metavar="SPEC", help="the assistant (GGUF)")
    train.add_argument("--data", required=True, metavar="FILE.jsonl", help="question/answer pairs")
    train.add_argument("-o", "--out", required=True, metavar="GATE.json", help="where to write it")
    train.add_argument(
        "--target-field",
        default="answer",
        help="the JSONL field holding the reference answer (GSM8K: solution)",
    )
    train.add_argument(
        "--skip", type=count, default=0, help="leave out the first N pairs (kept for scoring)"
    )
    train.add_argument("--limit", type=positive, help="use N pairs (after --skip)")
    train.add_argument(
        "--threshold", type=float, default=0.5, help="defer when P(defer) >= this (default 0.5)"
    )
    train.add_argument(
        "--objective",
        choices=("marginal", "weak"),
        default="marginal",
        help="marginal (default): the weak labels, then the marginal likelihood of the "
        "reference; weak: the weak labels only",
    )
    train.add_argument(
        "--prompts",
        choices=PAPER_PROMPTS,
        help="ask each question in this paper prompt set's words, as `moot bench --prompts du` "
        "does (train the gate on the prompt it will be used with); default: the bare question",
    )
    train.add_argument("--n-ctx", type=positive, default=4096)
    train.set_defaults(handler=train_gate_command)


def question_template(prompt_set: str | None) -> str:
    """The prompt set's first question with a plain `{question}` slot ("{question}" if none)."""
    if prompt_set is None:
        return "{question}"
    import moot.prompts as prompts

    template = prompts.load_set(prompt_set.replace("-", "/", 1))["question"]
    return template.replace("{{", "{").replace("}}", "}")


def train_gate_command(args: argparse.Namespace) -> int:
    from moot.fusion.train import read_pairs, train_gate
    from moot.merge.writer import check_output

    if not 0 <= args.threshold <= 1:
        raise ConfigError(f"--threshold must be between 0 and 1, got {args.threshold}")
    out = Path(args.out)
    check_output(out, example="gate.json")
    pairs = read_pairs(Path(args.data), args.target_field)[args.skip :][: args.limit]
    if not pairs:
        raise ConfigError(f"--skip {args.skip} leaves no pairs of {args.data}")
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as progress:
        task = progress.add_task("scoring pairs", total=len(pairs))
        gate = train_gate(
            args.base,
            args.assistant,
            pairs,
            objective=args.objective,
            threshold=args.threshold,
            n_ctx=args.n_ctx,
            question_template=question_template(args.prompts),
            progress=lambda done: progress.update(task, completed=done),
        )
    gate.save(out)
    assert gate.training is not None
    console.print(f"gate for {gate.base}, deferring to {gate.assistant}", soft_wrap=True)
    table = Table("", "value", show_edge=False)
    table.add_row("pairs", str(gate.training.examples))
    table.add_row("answer tokens", str(gate.training.positions))
    table.add_row("question asked as", gate.training.question_template)
    table.add_row("fitted to", gate.training.objective)
    table.add_row("labelled defer", f"{gate.training.defer_share:.1%}")
    table.add_row("gate agrees with labels", f"{gate.training.accuracy:.1%}")
    table.add_row(
        f"defers at threshold {gate.threshold:g}", f"{gate.training.predicted_defer_share:.1%}"
    )
    for share, value in gate.training.thresholds.items():
        table.add_row(f"threshold deferring {share}", f"{value:.3f}")
    console.print(table)
    likelihood = Table("reference tokens, training set", "mean log p", show_edge=False)
    for ranking, value in gate.training.log_likelihood.items():
        likelihood.add_row(ranking, f"{value:.3f}")
    console.print(likelihood)
    console.print(f"wrote {out}", soft_wrap=True)
    return 0
