"""Metrics over benchmark records: accuracy with a 95% Wilson interval, summaries by method and
by round, and paired comparisons.

Rounds are read off each record's per-round votes (a run that stopped early keeps its last answer
in later rounds); a paired comparison counts the questions only one method got right and tests
them with McNemar's exact test.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel

from moot.bench.records import BenchRecord, RoundRecord


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


SOURCES: tuple[Source, ...] = ("plurality", "minority", "own")


def _by_round(records: list[BenchRecord]) -> list[RoundSummary]:
    most = max((len(record.per_round) for record in records), default=0)
    summaries = []
    for index in range(most):
        right = agreement = 0.0
        to_wrong: dict[Source, int] = dict.fromkeys(SOURCES, 0)
        to_right: dict[Source, int] = dict.fromkeys(SOURCES, 0)
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
