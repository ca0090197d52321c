"""Every method against the vote that spends at least as many tokens (issue 38's yardstick).

A vote of N is read off the largest vote run (vote-K, K >= N) of the same task, model and
settings: agent i of every method has the same seed, so its first N agents are the vote of N
(ties go to the answer given first, as `MajorityVote` breaks them). N is the smallest count
whose mean tokens (K-vote tokens per sample times N) reach the method's mean tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from pydantic import BaseModel

from moot.bench.metrics import format_p, mcnemar_exact
from moot.bench.records import BenchRecord

_VOTE = re.compile(r"(?:vote|self-consistency)-(\d+)")


class MatchedVote(BaseModel):
    """One method paired with the vote of at least its tokens."""

    method: str
    tokens: float
    """The method's mean tokens per question."""
    votes: int
    """N of the matched vote."""
    vote_tokens: float
    pairs: int
    method_right: int
    vote_right: int
    only_method: int
    only_vote: int
    p_value: float
    enough: bool
    """Whether the vote run had N samples; else the vote of all K it has stands in (and
    spends fewer tokens than the method)."""

    def row(self) -> str:
        share = f"{100 * self.method_right / self.pairs:.1f}%" if self.pairs else "-"
        vote = f"{100 * self.vote_right / self.pairs:.1f}%" if self.pairs else "-"
        label = f"vote-{self.votes}" + ("" if self.enough else " (too few samples)")
        return (
            f"| {self.method} | {self.tokens:,.0f} | {label} | {self.vote_tokens:,.0f} | "
            f"{self.pairs} | {share} | {vote} | {self.only_method} / {self.only_vote} | "
            f"{format_p(self.p_value)} |"
        )


def first_n_vote(record: BenchRecord, count: int) -> bool | None:
    """Whether the vote of the record's first `count` first-round answers is right (None: the
    record has no first round)."""
    if not record.per_round:
        return None
    first = record.per_round[0]
    agents = list(first.answers)[:count]
    counts = Counter(first.answers[a] for a in agents if first.answers[a] is not None)
    if not counts:
        return False
    top = max(counts.values())
    winner = next(
        a for a in agents if first.answers[a] is not None and counts[first.answers[a]] == top
    )
    return first.correct.get(winner, False)


def matched_votes(records: list[BenchRecord]) -> list[MatchedVote]:
    """Each non-vote method of each (task, model, settings) against its matched vote."""
    groups: dict[tuple[str, str, str], list[BenchRecord]] = defaultdict(list)
    for record in records:
        if record.error is None:
            groups[(record.task, record.model, record.settings)].append(record)
    matched = []
    for group in groups.values():
        votes = [r for r in group if _VOTE.fullmatch(r.method)]
        if not votes:
            continue
        widest = max(int(_VOTE.fullmatch(r.method)[1]) for r in votes)  # type: ignore[index]
        pool = {(r.trial, r.question_id): r for r in votes if r.method.endswith(f"-{widest}")}
        per_sample = sum(r.tokens for r in pool.values()) / max(1, len(pool)) / widest
        methods = sorted({r.method for r in group} - {r.method for r in votes})
        for method in methods:
            mine = {(r.trial, r.question_id): r for r in group if r.method == method}
            matched.append(_pair(method, mine, pool, per_sample, widest))
    return matched


def _pair(
    method: str,
    mine: dict[tuple[int, str], BenchRecord],
    pool: dict[tuple[int, str], BenchRecord],
    per_sample: float,
    widest: int,
) -> MatchedVote:
    shared = sorted(mine.keys() & pool.keys())
    tokens = sum(mine[key].tokens for key in shared) / max(1, len(shared))
    wanted = max(1, math.ceil(tokens / per_sample)) if per_sample else widest
    votes = min(wanted, widest)
    right = {key: mine[key].correct for key in shared}
    voted = {key: bool(first_n_vote(pool[key], votes)) for key in shared}
    only_method = sum(right[k] and not voted[k] for k in shared)
    only_vote = sum(voted[k] and not right[k] for k in shared)
    return MatchedVote(
        method=method,
        tokens=tokens,
        votes=votes,
        vote_tokens=per_sample * votes,
        pairs=len(shared),
        method_right=sum(right.values()),
        vote_right=sum(voted.values()),
        only_method=only_method,
        only_vote=only_vote,
        p_value=mcnemar_exact(only_vote, only_method),
        enough=wanted <= widest,
    )


def matched_section(records: list[BenchRecord]) -> list[str]:
    """The report's table, or nothing when no vote ran beside other methods."""
    rows = [m.row() for m in matched_votes(records)]
    if not rows:
        return []
    return [
        "",
        "### Against the vote of as many tokens",
        "",
        "Each method paired with the vote of N samples, N the smallest whose tokens reach the "
        "method's (read off the largest vote run: its first N agents).",
        "",
        "| method | tokens / question | vote | vote tokens | pairs | method | vote | "
        "only method / only vote | p |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
