"""Agreement across ways of reasoning (mixture of thought representations, Yue et al. 2024;
MathPrompter, 2023): a text agent and a program agent err in different ways (BENCHMARKS.md,
issue 38), so an answer both reached is better evidence than one many agents of one kind gave."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from moot.aggregate.base import Aggregator
from moot.aggregate.select import SourceKey, sourced_answers

if TYPE_CHECKING:
    from moot.graphs.types import RunContext, SocietyState, Update


class CrossCheckVote(Aggregator):
    """The answer given by the most sources wins (a source: the agents of one kind, of one
    model, or of both); among answers given by as many sources, the one with the most votes;
    then the one given first in agent order.

    One source (every agent on one model, all text) makes it the plain majority vote. An
    agent's latest answer is its last turn that did not fail, as for every vote: a program
    that printed 42 in round 1 and crashed in round 2 still stands for 42.
    """

    kind: Literal["crosscheck"] = "crosscheck"

    group_by: SourceKey = "model+kind"
    """What makes a source: the agent's model, its kind (text or program), or both."""

    def aggregate(self, state: SocietyState, context: RunContext, names: list[str]) -> Update:
        sources: dict[str, set[object]] = {}  # insertion order: agent order
        votes: dict[str, int] = {}
        for source, answer in sourced_answers(state, context, names, self.group_by):
            if answer is not None:
                sources.setdefault(answer, set()).add(source)
                votes[answer] = votes.get(answer, 0) + 1
        # max() keeps the first of equals: the answer given first.
        best = max(sources, key=lambda answer: (len(sources[answer]), votes[answer]), default=None)
        return {"answer": best}
