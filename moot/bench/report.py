"""Metrics over benchmark records, and the Markdown report with its plots.

Accuracy comes with a 95% Wilson interval; rounds are read off each record's per-round votes
(a run that stopped early keeps its last answer in later rounds); a paired comparison counts the
questions only one method got right and tests them with McNemar's exact test.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from moot.bench.records import BenchRecord, RoundRecord
from moot.result import format_cost


class Interval(BaseModel):
    """A proportion with its 95% Wilson score interval."""

    value: float
    low: float
    high: float

    @classmethod
    def wilson(cls, successes: int, total: int, z: float = 1.96) -> Interval:
        if total == 0:
            return cls(value=0.0, low=0.0, high=0.0)
        p = successes / total
        denominator = 1 + z * z / total
        centre = (p + z * z / (2 * total)) / denominator
        half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
        # (clamped to hold p: at 0% or 100% rounding can put a bound a hair past it)
        low, high = min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))
        return cls(value=p, low=low, high=high)

    def __str__(self) -> str:
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


Source = Literal["plurality", "minority", "own"]
"""Where a changed answer came from: the previous round's plurality, a peer's answer that was
not the plurality (a minority's), or no peer (the agent's own new answer)."""


def change_source(answer: str | None, before: RoundRecord, agent: str) -> Source:
    """Where `agent`'s new `answer` came from, given the round before."""
    peers = [given for name, given in before.answers.items() if name != agent]
    if answer is not None and answer == before.vote:
        return "plurality"
    if answer is not None and answer in peers:
        return "minority"
    return "own"


class RoundSummary(BaseModel):
    round: int
    accuracy: float
    """Share of questions whose round vote was right."""
    agreement: float
    """Mean share of agents giving the round's most common answer."""
    right_to_wrong: int
    """Agent answers right the round before and wrong in this one."""
    wrong_to_right: int
    right_to_wrong_from: dict[Source, int] = {}
    """The right-to-wrong changes by where the new answer came from (conformity: plurality)."""
    wrong_to_right_from: dict[Source, int] = {}


class MethodSummary(BaseModel):
    """One method on one task, model and settings, over all its questions and trials."""

    task: str
    model: str
    settings: str
    method: str
    questions: int
    trials: int
    runs: int
    """questions x trials records."""
    accuracy: Interval
    trial_accuracy: list[float]
    """Accuracy of each trial, in trial order."""
    tokens: float
    """Mean tokens per question."""
    cost: float | None = None
    """Mean money per question, at the prices given with the model (None: no prices)."""
    calls: float
    seconds: float
    """Mean wall time per question."""
    failed_turns: int
    errors: int
    agents: int
    """Most participants answering in a round (agreement means nothing below 2)."""
    by_round: list[RoundSummary]


class PairedComparison(BaseModel):
    """Two methods on the same questions and trials."""

    baseline: str
    method: str
    pairs: int
    both: int
    only_baseline: int
    only_method: int
    neither: int
    p_value: float
    """McNemar's exact two-sided test on the discordant pairs."""


def summarise(records: list[BenchRecord]) -> list[MethodSummary]:
    """One summary per (task, model, settings, method), in the order methods first appear."""
    groups: dict[tuple[str, str, str, str], list[BenchRecord]] = defaultdict(list)
    for record in records:
        groups[record.task, record.model, record.settings, record.method].append(record)
    return [_summary(key, group) for key, group in groups.items()]


def _summary(key: tuple[str, str, str, str], records: list[BenchRecord]) -> MethodSummary:
    task, model, settings, method = key
    trials = sorted({record.trial for record in records})
    count = len(records)
    return MethodSummary(
        task=task,
        model=model,
        settings=settings,
        method=method,
        questions=len({record.question_id for record in records}),
        trials=len(trials),
        runs=count,
        accuracy=Interval.wilson(sum(record.correct for record in records), count),
        trial_accuracy=[
            statistics.mean(r.correct for r in records if r.trial == trial) for trial in trials
        ],
        tokens=statistics.mean(record.tokens for record in records),
        cost=statistics.mean(r.cost or 0.0 for r in records)
        if any(r.cost is not None for r in records)
        else None,
        calls=statistics.mean(record.calls for record in records),
        seconds=statistics.mean(record.seconds for record in records),
        failed_turns=sum(record.failed_turns for record in records),
        errors=sum(record.error is not None for record in records),
        agents=max((len(r.answers) for record in records for r in record.per_round), default=0),
        by_round=_by_round(records),
    )


_SOURCES: tuple[Source, ...] = ("plurality", "minority", "own")


def _by_round(records: list[BenchRecord]) -> list[RoundSummary]:
    most = max((len(record.per_round) for record in records), default=0)
    summaries = []
    for index in range(most):
        right = agreement = 0.0
        to_wrong: dict[Source, int] = dict.fromkeys(_SOURCES, 0)
        to_right: dict[Source, int] = dict.fromkeys(_SOURCES, 0)
        for record in records:
            if not record.per_round:
                continue
            current = record.per_round[min(index, len(record.per_round) - 1)]
            right += current.vote_correct
            agreement += current.agreement
            if 0 < index < len(record.per_round):
                before = record.per_round[index - 1]
                for agent, correct in current.correct.items():
                    was = before.correct.get(agent)
                    if was is None or was == correct:
                        continue
                    source = change_source(current.answers.get(agent), before, agent)
                    (to_right if correct else to_wrong)[source] += 1
        counted = sum(bool(record.per_round) for record in records) or 1
        summaries.append(
            RoundSummary(
                round=index + 1,
                accuracy=right / counted,
                agreement=agreement / counted,
                right_to_wrong=sum(to_wrong.values()),
                wrong_to_right=sum(to_right.values()),
                right_to_wrong_from=to_wrong,
                wrong_to_right_from=to_right,
            )
        )
    return summaries


def compare(records: list[BenchRecord], baseline: str, method: str) -> PairedComparison:
    """`method` against `baseline` on the (trial, question) pairs both have."""
    first = {(r.trial, r.question_id): r.correct for r in records if r.method == baseline}
    second = {(r.trial, r.question_id): r.correct for r in records if r.method == method}
    shared = sorted(first.keys() & second.keys())
    both = sum(first[key] and second[key] for key in shared)
    only_baseline = sum(first[key] and not second[key] for key in shared)
    only_method = sum(second[key] and not first[key] for key in shared)
    return PairedComparison(
        baseline=baseline,
        method=method,
        pairs=len(shared),
        both=both,
        only_baseline=only_baseline,
        only_method=only_method,
        neither=len(shared) - both - only_baseline - only_method,
        p_value=mcnemar_exact(only_baseline, only_method),
    )


def format_p(p: float) -> str:
    """A p-value to three places; one under 0.001 as "<0.001" (not "0.000")."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of b against b + c at one half."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


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
        lines += _plots(group, out, suffix)
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
        "(seconds include waiting for a model that other questions in flight are using)"
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
        "plurality / no peer (the agent's own).",
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
    lines += _samples_alone(group, records)
    return [*lines, ""]


def _changes(total: int, sources: dict[Source, int]) -> str:
    """ "12 (2 / 4 / 6)": changes, by plurality / minority / own; just the total when none."""
    if not total:
        return "0"
    return f"{total} ({' / '.join(str(sources.get(source, 0)) for source in _SOURCES)})"


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


def _plots(group: list[MethodSummary], out: Path, suffix: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["Plots: install matplotlib (`pip install 'moot[bench]'`) to get them.", ""]
    tokens_png = f"accuracy_vs_tokens{suffix}.png"
    _accuracy_against(group, lambda s: s.tokens, "tokens per question", out / tokens_png)
    shown = [f"![accuracy against tokens]({tokens_png})", ""]
    if all(s.cost for s in group):  # a log scale needs every cost above 0
        cost_png = f"accuracy_vs_cost{suffix}.png"
        _accuracy_against(group, lambda s: s.cost or 0.0, "cost per question", out / cost_png)
        shown += [f"![accuracy against cost]({cost_png})", ""]

    figure, (accuracy, agreement) = plt.subplots(1, 2, figsize=(10, 4))
    for s in group:
        rounds = [r.round for r in s.by_round]
        accuracy.plot(rounds, [100 * r.accuracy for r in s.by_round], marker="o", label=s.method)
        if s.agents > 1:
            agreement.plot(
                rounds, [100 * r.agreement for r in s.by_round], marker="o", label=s.method
            )
    for axes, label in ((accuracy, "accuracy of the round's vote, %"), (agreement, "agreement, %")):
        axes.set_xlabel("round")
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.xaxis.get_major_locator().set_params(integer=True)
        if axes.get_lines():  # (single agents have no agreement line)
            axes.legend(fontsize="small")
    accuracy.set_title(f"{group[0].task}: by round")
    figure.tight_layout()
    rounds_png = f"accuracy_by_round{suffix}.png"
    figure.savefig(out / rounds_png, dpi=120)
    plt.close(figure)
    return [*shown, f"![by round]({rounds_png})", ""]


def _accuracy_against(
    group: list[MethodSummary], spent: Callable[[MethodSummary], float], what: str, path: Path
) -> None:
    """Accuracy (with its interval) against what each method spent per question, on a log
    scale where every method spent something."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for s in group:
        errors = [
            [100 * (s.accuracy.value - s.accuracy.low)],
            [100 * (s.accuracy.high - s.accuracy.value)],
        ]
        axes.errorbar(
            [spent(s)], [100 * s.accuracy.value], yerr=errors, fmt="o", capsize=4, label=s.method
        )
    logarithmic = all(spent(s) > 0 for s in group)  # (a model that reports no usage: 0)
    if logarithmic:
        axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel(f"{what} (log scale)" if logarithmic else what)
    axes.set_ylabel("accuracy, % (95% CI)")
    axes.set_title(f"{group[0].task}: accuracy against {what.split()[0]}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
