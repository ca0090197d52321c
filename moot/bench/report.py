"""The Markdown report of a benchmark folder (`report.md`) and its plots: a section per task,
model and settings, then the pairings across them (with and without tools, cascades against
their strong model). The numbers come from `moot.bench.metrics`.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path

from moot.bench.matched import matched_section
from moot.bench.metrics import (
    SOURCES,
    Interval,
    MethodSummary,
    Source,
    change_source,
    compare,
    format_p,
    mcnemar_exact,
    summarise,
)
from moot.bench.plots import plots
from moot.bench.records import BenchRecord
from moot.result import format_cost

__all__ = [  # (the metrics too, for scripts that import them from here)
    "Interval",
    "change_source",
    "compare",
    "format_p",
    "mcnemar_exact",
    "summarise",
    "write_report",
]


_PLOT_NAMES = ("accuracy_vs_tokens*.png", "accuracy_vs_cost*.png", "accuracy_by_round*.png")


def write_report(
    records: list[BenchRecord], out: str | Path, methods: list[str] | None = None
) -> Path:
    """Write report.md (and its PNG plots, when matplotlib is installed) under `out`.

    Methods come in the order of `methods`, else cheapest first; the first is the baseline of
    the paired comparisons."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in _PLOT_NAMES:  # a report with fewer sections leaves no plots of the old one
        for path in out.glob(stale):
            path.unlink()
    order = {method: index for index, method in enumerate(methods or [])}
    summaries = sorted(
        summarise(records), key=lambda s: (order.get(s.method, len(order)), s.tokens)
    )
    tasks: dict[tuple[str, str, str], list[MethodSummary]] = defaultdict(list)
    for summary in summaries:
        tasks[summary.task, summary.model, summary.settings].append(summary)
    lines = ["# moot bench", ""]
    for number, ((task, model, settings), group) in enumerate(tasks.items(), start=1):
        suffix = "" if len(tasks) == 1 else f"-{number}"
        chosen = [r for r in records if (r.task, r.model, r.settings) == (task, model, settings)]
        lines += _task_section(task, model, settings, group, chosen)
        lines += plots(group, out, suffix)
    lines += _with_and_without_tools(records)
    lines += _cascades_against_the_strong_model(records)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _task_section(
    task: str, model: str, settings: str, group: list[MethodSummary], records: list[BenchRecord]
) -> list[str]:
    priced = any(s.cost is not None for s in group)
    lines = [
        f"## {task}",
        "",
        f"Model `{model}`, {settings}.",
        "",
        "Accuracy with a 95% Wilson interval; tokens, calls and seconds are means per question",
        "(seconds include waiting for a model that other questions in flight are using; calls",
        "are those a model answered: an answer from the call cache is not one, its tokens count)"
        + (
            "; cost is the mean per question at the prices given with the model." if priced else "."
        ),
        "",
        "| method | questions | trials | accuracy [95% CI] | tokens | "
        + "cost | " * priced
        + "calls | seconds | failed turns | errors |",
        "| --- | ---: | ---: | --- | ---: | " + "---: | " * priced + "---: | ---: | ---: | ---: |",
    ]
    for s in group:
        cost = f"{format_cost(s.cost)} | " if priced else ""
        lines.append(
            f"| {s.method} | {s.questions} | {s.trials} | {s.accuracy} | {s.tokens:,.0f} | "
            f"{cost}{s.calls:.1f} | {s.seconds:.1f} | {s.failed_turns} | {s.errors} |"
        )
    lines += [
        "",
        "### By round",
        "",
        "Accuracy of each round's plurality vote, mean agreement, and agent answers that went",
        "from right to wrong (or wrong to right) since the round before, split by where the new",
        "answer came from: the previous round's plurality / a peer's answer that was not the",
        "plurality / no peer (the agent's own). For a cascade or an early-stopping vote",
        "(`-stopW`) a round is a tier: the vote of that tier's own answers, not the decision so",
        "far. A question that stopped early repeats its last round in later rows.",
        "",
        "| method | round | accuracy | agreement | right→wrong | wrong→right |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in group:
        for r in s.by_round:
            agreement = f"{100 * r.agreement:.0f}%" if s.agents > 1 else "-"
            lines.append(
                f"| {s.method} | {r.round} | {100 * r.accuracy:.1f}% | {agreement} | "
                f"{_changes(r.right_to_wrong, r.right_to_wrong_from)} | "
                f"{_changes(r.wrong_to_right, r.wrong_to_right_from)} |"
            )
    if any(s.trials > 1 for s in group):
        lines += ["", "### Trials", "", "| method | accuracy per trial | mean ± sd |"]
        lines.append("| --- | --- | --- |")
        for s in group:
            spread = statistics.stdev(s.trial_accuracy) if len(s.trial_accuracy) > 1 else 0.0
            each = ", ".join(f"{100 * a:.1f}%" for a in s.trial_accuracy)
            mean = 100 * statistics.mean(s.trial_accuracy)
            lines.append(f"| {s.method} | {each} | {mean:.1f}% ± {100 * spread:.1f} |")
    if len(group) > 1:
        baseline = group[0].method
        lines += [
            "",
            f"### Paired against {baseline}",
            "",
            "Same questions and trials; McNemar's exact test on the questions only one got right.",
            "",
            f"| method | pairs | both right | only {baseline} | only method | neither | p |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in group[1:]:
            c = compare(records, baseline, s.method)
            lines.append(
                f"| {s.method} | {c.pairs} | {c.both} | {c.only_baseline} | {c.only_method} | "
                f"{c.neither} | {format_p(c.p_value)} |"
            )
    lines += _same_budget(group, records)
    lines += matched_section(records)
    lines += _samples_alone(group, records)
    return [*lines, ""]


def _changes(total: int, sources: dict[Source, int]) -> str:
    """ "12 (2 / 4 / 6)": changes, by plurality / minority / own; just the total when none."""
    if not total:
        return "0"
    return f"{total} ({' / '.join(str(sources.get(source, 0)) for source in SOURCES)})"


def _samples_alone(group: list[MethodSummary], records: list[BenchRecord]) -> list[str]:
    """How each agent's first-round answer scores on its own, for methods of several agents:
    the spread of one sample's accuracy, against which `single` (one draw) is read."""
    rows = []
    for s in group:
        right: dict[str, list[bool]] = defaultdict(list)
        for record in records:
            if record.method == s.method and record.per_round:
                for agent, correct in record.per_round[0].correct.items():
                    right[agent].append(correct)
        if len(right) < 2:
            continue
        each = sorted(statistics.mean(answers) for answers in right.values())
        rows.append(
            f"| {s.method} | {len(each)} | {100 * statistics.mean(each):.1f}% | "
            f"{100 * each[0]:.1f}% | {100 * each[-1]:.1f}% |"
        )
    if not rows:
        return []
    return [
        "",
        "### One sample at a time",
        "",
        "Each agent's first-round answer scored alone: how far one sample's accuracy spreads "
        "(`single` is one such draw).",
        "",
        "| method | agents | mean | lowest | highest |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
    ]


_DEBATE = re.compile(r"debate-(\d+)x(\d+)(?:-consensus)?(?:-answers)?")


def _same_budget(group: list[MethodSummary], records: list[BenchRecord]) -> list[str]:
    """Each debate paired with the vote of as many calls (debate-3x3 with vote-9), when run."""
    methods = {s.method for s in group}
    pairs = []
    for s in group:
        match = _DEBATE.fullmatch(s.method)
        if match:
            vote = f"vote-{int(match[1]) * int(match[2])}"
            if vote in methods:
                pairs.append((vote, s.method))
    if not pairs:
        return []
    lines = [
        "",
        "### Debate against the vote of as many calls",
        "",
        "| debate | vote | pairs | both right | only vote | only debate | neither | p |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for vote, debate in pairs:
        c = compare(records, vote, debate)
        lines.append(
            f"| {debate} | {vote} | {c.pairs} | {c.both} | {c.only_baseline} | "
            f"{c.only_method} | {c.neither} | {format_p(c.p_value)} |"
        )
    return lines


_TOOLS = re.compile(r" tools=\S+ tool_choice=\S+")


def _with_and_without_tools(records: list[BenchRecord]) -> list[str]:
    """Each method run with tools paired with the same method, task, model and settings run
    without them, question by question: what the tools did to accuracy and cost."""
    runs: dict[tuple[str, str, str, str], list[BenchRecord]] = defaultdict(list)
    for record in records:
        runs[record.task, record.model, record.settings, record.method].append(record)
    lines: list[str] = []
    for (task, model, settings, method), with_tools in runs.items():
        tools = _TOOLS.search(settings)
        without = runs.get((task, model, _TOOLS.sub("", settings), method))
        if tools is None or not without:
            continue
        renamed = [r.model_copy(update={"method": "with"}) for r in with_tools]
        c = compare([*without, *renamed], method, "with")
        paired = {(r.trial, r.question_id) for r in without} & {
            (r.trial, r.question_id) for r in with_tools
        }
        plain = [r for r in without if (r.trial, r.question_id) in paired]
        aided = [r for r in with_tools if (r.trial, r.question_id) in paired]
        if not paired:
            continue
        if not lines:
            lines = [
                "## With and without tools",
                "",
                "Each method on the questions it ran both ways, with the same model and sampling.",
                "",
                "| task | method | tools | questions | accuracy without | accuracy with | "
                "tool calls | tokens without | tokens with | only without | only with | p |",
                "| --- | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
        lines.append(
            f"| {task} | {method} | {tools[0].strip()} | {len(paired)} | "
            f"{Interval.wilson(sum(r.correct for r in plain), len(plain))} | "
            f"{Interval.wilson(sum(r.correct for r in aided), len(aided))} | "
            f"{statistics.mean(_tool_calls(r) for r in aided):.2f} | "
            f"{statistics.mean(r.tokens for r in plain):,.0f} | "
            f"{statistics.mean(r.tokens for r in aided):,.0f} | "
            f"{c.only_baseline} | {c.only_method} | {format_p(c.p_value)} |"
        )
    return [*lines, ""] if lines else []


def _cascades_against_the_strong_model(records: list[BenchRecord]) -> list[str]:
    """Each cascade ("CHEAP -> STRONG") paired with `single` on its strong model, same task and
    settings: how much of the strong model's accuracy it keeps, and for how much of its spend."""
    runs: dict[tuple[str, str, str, str], list[BenchRecord]] = defaultdict(list)
    for record in records:
        runs[record.task, record.model, record.settings, record.method].append(record)
    lines: list[str] = []
    for (task, model, settings, method), cascade in runs.items():
        if not method.startswith("cascade-") or " -> " not in model:
            continue
        strong = runs.get((task, model.split(" -> ", 1)[1], settings, "single"), [])
        pairs = {(r.trial, r.question_id) for r in strong} & {
            (r.trial, r.question_id) for r in cascade
        }
        if not pairs:
            continue
        mine = [r for r in cascade if (r.trial, r.question_id) in pairs]
        alone = [r for r in strong if (r.trial, r.question_id) in pairs]
        c = compare([*alone, *mine], "single", method)
        if not lines:
            lines = [
                "## Cascades against their strong model alone",
                "",
                "Each cascade paired with `single` on its strong model, question by question. "
                "Escalated: the share of questions the strong tier answered; its tokens are part "
                "of the cascade's.",
                "",
                "| task | cascade | questions | accuracy | escalated | tokens | tokens past tier 1 "
                "| single on the strong model | its tokens | only single | only cascade | p |",
                "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
            ]
        escalated = sum((r.rounds or 0) >= 2 for r in mine) / len(mine)
        lines.append(
            f"| {task} | {method} | {len(pairs)} | "
            f"{Interval.wilson(sum(r.correct for r in mine), len(mine))} | "
            f"{100 * escalated:.0f}% | {statistics.mean(r.tokens for r in mine):,.0f} | "
            f"{statistics.mean(_tokens_after_tier_one(r) for r in mine):,.0f} | "
            f"{Interval.wilson(sum(r.correct for r in alone), len(alone))} | "
            f"{statistics.mean(r.tokens for r in alone):,.0f} | "
            f"{c.only_baseline} | {c.only_method} | {format_p(c.p_value)} |"
        )
    return [*lines, ""] if lines else []


def _tokens_after_tier_one(record: BenchRecord) -> int:
    """Tokens a cascade spent past its first tier (each tier is a round of its record)."""
    return sum(round.tokens for round in record.per_round if round.round >= 2)


def _tool_calls(record: BenchRecord) -> int:
    if record.tool_calls is not None:
        return record.tool_calls
    return sum(len(turn.tool_calls) for turn in record.transcript)
