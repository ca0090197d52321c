"""Deciding over the whole debate, not its last round (Free-MAD, 2025): a debate on a small
model raises agreement more than accuracy, agents taking up a confident peer's wrong answer
(BENCHMARKS.md, issue 17), so the independent first answers keep a say in the decision."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from moot.aggregate.base import Aggregator
from moot.aggregate.vote import weighted_winner

if TYPE_CHECKING:
    from moot.graphs.types import RunContext, SocietyState, Update
    from moot.result import Turn


class TrajectoryVote(Aggregator):
    """Every round's answers score, the first round's included; an answer an agent kept from
    its previous round scores `keep`, one it changed to scores `change`.

    With `first=0, keep=change=0` and `last=1` it is the plain vote over the last round.
    Ties go to the answer given first (round 1, agent order).
    """

    kind: Literal["trajectory"] = "trajectory"

    first: float = Field(default=1.0, ge=0)
    """Weight of each first, independent answer."""
    keep: float = Field(default=1.0, ge=0)
    """Weight of a later answer the agent also gave the round before."""
    change: float = Field(default=0.5, ge=0)
    """Weight of a later answer that differs from the agent's previous one (a change made
    after seeing peers is as often conformity as correction)."""
    last: float = Field(default=0.0, ge=0)
    """Extra weight of each agent's answer in its last round."""

    def weights(self, turns: list[Turn], names: list[str]) -> list[tuple[str | None, float]]:
        """(answer, weight) for every answering turn of `names`, in round then agent order."""
        order = {name: index for index, name in enumerate(names)}
        spoken = sorted(
            (turn for turn in turns if turn.agent in order and not turn.failed),
            key=lambda turn: (turn.round, order[turn.agent]),
        )
        last_round = {turn.agent: turn.round for turn in spoken}
        previous: dict[str, str | None] = {}
        weighted: list[tuple[str | None, float]] = []
        for turn in spoken:
            if turn.agent not in previous:
                weight = self.first
            else:
                weight = self.keep if turn.answer == previous[turn.agent] else self.change
            if turn.round == last_round[turn.agent]:
                weight += self.last
            previous[turn.agent] = turn.answer
            weighted.append((turn.answer, weight))
        return weighted

    def aggregate(self, state: SocietyState, context: RunContext, names: list[str]) -> Update:
        return {"answer": weighted_winner(self.weights(state["turns"], names), 0.0)}
