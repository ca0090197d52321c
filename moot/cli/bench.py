"""`moot bench`: run what is not done yet, then write the report and plots."""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table

from moot.aggregate.extract import EXTRACT_KINDS
from moot.bench.records import MAX_TRIALS
from moot.cli._common import (
    add_cache_option,
    add_model_options,
    add_tool_options,
    at_most,
    console,
    count,
    errors,
    finite,
    imported,
    positive,
)
from moot.errors import MootError


def add_command(commands: Any) -> None:
    bench = commands.add_parser("bench", help="compare methods on a dataset")
    data = bench.add_argument_group("data")
    data.add_argument("--data", help="a JSONL file, or 'arithmetic' (Du et al., from a seed)")
    data.add_argument("--limit", type=positive, help="first N questions (arithmetic: 50)")
    data.add_argument(
        "--skip", type=count, default=0, metavar="K", help="leave out the first K questions (0)"
    )
    data.add_argument("--range", default="0-30", help="arithmetic: integer range LOW-HIGH (0-30)")
    data.add_argument("--data-seed", type=int, default=0, help="arithmetic: generator seed (0)")
    data.add_argument("--question-field", default="question", help="JSONL field of the question")
    data.add_argument("--answer-field", default="answer", help="JSONL field of the answer")
    data.add_argument("--extract", help=f"{', '.join(EXTRACT_KINDS)}, or MODULE:FUNCTION(reply)")
    data.add_argument("--check", help="MODULE:FUNCTION(answer, question) -> bool")
    methods = bench.add_argument_group("methods")
    methods.add_argument(
        "--methods",
        default="single,vote-3,debate-3x2",
        help="comma-separated: single, vote-N, vote-N-stopW, debate-NxR[-consensus][-answers], "
        "machinesom-STRATEGY, moa-NxL, cascade-N, FILE.yaml (single,vote-3,debate-3x2)",
    )
    methods.add_argument(
        "--prompts",
        choices=["auto", "moot", "du"],
        default="auto",
        help="du: each paper's own for the task (Du et al.'s for single, vote and debate, "
        "MachineSoM's for machinesom-*); moot: moot's words; auto: Du et al.'s where they were "
        "measured better (numeric word problems, single, vote and debate), else moot's (auto)",
    )
    methods.add_argument("--model", help="model spec for every agent (local)")
    methods.add_argument("--strong-model", help="the cascade's last tier (--model)")
    add_model_options(methods)
    methods.add_argument("--temperature", type=finite, default=0.7, help="sampling (0.7)")
    methods.add_argument("--max-tokens", type=positive, default=384, help="per reply (384)")
    methods.add_argument(
        "--trials",
        type=lambda text: at_most(text, MAX_TRIALS),
        default=1,
        help=f"repeats over seeds (1; at most {MAX_TRIALS})",
    )
    methods.add_argument("--seed", type=int, default=0, help="base seed of the agents (0)")
    add_tool_options(methods, "the agents of single, vote-N and debate-NxR")
    runs = bench.add_argument_group("running")
    runs.add_argument("--out", default="bench-out", help="results and report folder (bench-out)")
    runs.add_argument("--concurrency", type=positive, default=2, help="questions in flight (2)")
    runs.add_argument("--backend", choices=["local", "ray"], default="local")
    runs.add_argument(
        "--address",
        help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
        "(default: $RAY_ADDRESS, else a local Ray instance)",
    )
    runs.add_argument("--workers", type=positive, default=2, help="Ray worker actors (2)")
    runs.add_argument(
        "--report-only", action="store_true", help="write the report from OUT's results only"
    )
    add_cache_option(runs)
    bench.set_defaults(handler=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    from moot.bench import BenchPlan, MethodSettings, ResultStore, run_bench, write_report
    from moot.bench.methods import default_prompt_set, du_prompt_set
    from moot.bench.runner import writing_to
    from moot.cache import CallCache
    from moot.presets import default_method

    out = Path(args.out)
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    if args.report_only:
        unused = [flag for flag, value in (("--limit", args.limit), ("--skip", args.skip)) if value]
        if unused:  # (the same command line with --report-only added is a common way to ask)
            errors.print(f"note: --report-only reports all of {out}: {', '.join(unused)} unused")
        records = ResultStore(out).records_with_transcripts()  # tool calls of old records
        if not records:
            raise MootError(f"no results in {out / 'results.jsonl'}: run `moot bench` first")
    else:
        task = _task(args)
        if args.prompts == "auto":
            prompt_set, why = default_prompt_set(task.name, task.extract, methods)
            errors.print(f"prompts: {why}", soft_wrap=True)
        else:
            prompt_set = du_prompt_set(task.name, task.extract) if args.prompts == "du" else "moot"
        if "default" in methods:  # run and recorded as what it is on this task, never mixed
            resolved = default_method(task.extract, prompt_set)
            methods = [resolved if method == "default" else method for method in methods]
            errors.print(f"default: {resolved} (moot debate's society on this task)")
        methods = list(dict.fromkeys(methods))  # each once ("default" may name one given too)
        sampling = ("temperature", "max_tokens", "seed", "tools", "tool_choice")
        settings = MethodSettings(
            model=args.model or "local",
            strong_model=args.strong_model,
            override=args.model is not None,
            model_options=dict(args.model_option),
            prompt_set=prompt_set,
            **{key: getattr(args, key) for key in sampling},
        )
        if args.cache:
            CallCache(args.cache).close()  # a bad file fails here, not in every question
        plan = BenchPlan(
            task=task,
            methods=methods,
            settings=settings,
            trials=args.trials,
            cache=args.cache,
        )
        started = time.perf_counter()
        running = ("concurrency", "backend", "address", "workers")
        records = run_bench(
            plan, out, console=errors, **{key: getattr(args, key) for key in running}
        )
        console.print(f"wall time {time.perf_counter() - started:.1f} s ({args.backend} backend)")
    _print_tables(records)
    if args.report_only:
        with writing_to(out):
            write_report(records, out)
    # (else run_bench wrote it: the folder's, so runs with other methods or settings stay in it)
    console.print(f"report: {out / 'report.md'}", soft_wrap=True)
    return 0


def _task(args: argparse.Namespace) -> Any:
    from moot.bench.tasks import arithmetic, load_jsonl

    if not args.data:
        raise MootError("say what to run on: --data FILE.jsonl or --data arithmetic")
    if args.data == "arithmetic":
        low, _, high = args.range.partition("-")
        if not (low.isdigit() and high.isdigit() and int(low) <= int(high)):
            raise MootError(f"--range must be LOW-HIGH like 0-30, got '{args.range}'")
        task = arithmetic(args.limit or 50, args.data_seed, int(low), int(high))
    else:
        extract = args.extract
        if extract is not None and extract not in EXTRACT_KINDS:
            extract = imported(extract, "--extract")
        task = load_jsonl(
            args.data,
            question_field=args.question_field,
            answer_field=args.answer_field,
            extract=extract,
            check=imported(args.check, "--check") if args.check else None,
            du_choices=args.prompts == "du",  # (auto never picks Du et al.'s for multiple choice)
        ).head(args.limit)
    if args.skip and args.skip >= len(task.questions):
        raise MootError(
            f"--skip {args.skip} leaves no question of the {len(task.questions)} to run: "
            "skip fewer"
            + (", or raise --limit" if args.limit and args.limit <= len(task.questions) else "")
        )
    return task.head(None, args.skip)


def _print_tables(records: list[Any]) -> None:
    """One table per task, model and settings (a folder may hold several), each method's name
    in full: folded in a narrow terminal, and as wide as it is where there is no terminal."""
    from moot.bench import summarise
    from moot.result import format_cost

    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for summary in summarise(records):
        groups[summary.task, summary.model, summary.settings].append(summary)
    for (task, model, settings), group in groups.items():
        priced = any(summary.cost is not None for summary in group)
        columns = ["questions", "accuracy [95% CI]", "tokens/q", "calls/q", "s/q"]
        table = Table(
            Column("method", overflow="fold"),
            *columns,
            *["cost/q"] * priced,
            title=f"{task} · {model}",
            caption=settings,
        )
        for summary in sorted(group, key=lambda s: s.tokens):
            table.add_row(
                summary.method,
                f"{summary.questions} x {summary.trials}",
                str(summary.accuracy),
                f"{summary.tokens:,.0f}",
                f"{summary.calls:.1f}",
                f"{summary.seconds:.1f}",
                *[format_cost(summary.cost)] * priced,
            )
        if console.is_terminal:
            console.print(table)
        else:  # a log or a pipe: no width to keep to (rich would take 80 columns)
            width = Measurement.get(console, console.options.update_width(10_000), table).maximum
            Console(file=console.file, width=max(width, console.width)).print(table)
