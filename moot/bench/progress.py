"""Progress of a benchmark: one rich bar per method, with live accuracy and tokens."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

from moot.bench.records import BenchPlan, BenchRecord


class Progress:
    """One rich bar per method, with live accuracy and tokens per question; where the output
    is no terminal (a log file), one line per finished question instead."""

    def __init__(
        self,
        plan: BenchPlan,
        done: Iterable[BenchRecord],
        *,
        enabled: bool,
        console: Console | None,
    ) -> None:
        self.enabled = enabled
        self.progress = Bars(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
        )
        per_method = len(plan.task.questions) * plan.trials
        self.totals: dict[str, list[int]] = {method: [0, 0, 0] for method in plan.methods}
        self.bars = {
            method: self.progress.add_task(method, total=per_method, stats="")
            for method in plan.methods
        }
        self.started = False  # results already on file are counted, not printed
        for record in done:
            self.add(record)
        self.started = True

    def add(self, record: BenchRecord) -> None:
        counts = self.totals[record.method]
        counts[0] += 1
        counts[1] += record.correct
        counts[2] += record.tokens
        answered, right, tokens = counts
        stats = (
            f"acc {100 * right / answered:5.1f}% ({right}/{answered})  {tokens // answered:,} tok/q"
        )
        self.progress.update(self.bars[record.method], advance=1, stats=stats)
        console = self.progress.console
        if self.enabled and not console.is_terminal and self.started:
            outcome = "error" if record.error else "right" if record.correct else "wrong"
            console.print(
                f"{record.method} {record.question_id} (trial {record.trial}): {outcome}, "
                f"{record.tokens:,} tokens, {record.seconds:.1f} s; {stats}",
                markup=False,
                highlight=False,
                soft_wrap=True,  # one line each, whatever the width (80 where no terminal)
            )

    def __enter__(self) -> Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]
