"""Votes: the final answer is the answer with the most (weighted) votes among the participants'
latest turns. No model is called."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from moot.aggregate.base import Aggregator
from moot.result import Turn, latest_turns

if TYPE_CHECKING:
    from moot.graphs.types import RunContext, SocietyState, Update


def weighted_winner(weighted: Sequence[tuple[str | None, float]], least: float) -> str | None:
    """The answer with the largest total weight (ties: the one given first), if >= least."""
    totals: dict[str, float] = {}
    for answer, weight in weighted:
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + weight
    if not totals:
        return None
    top = max(totals.values())
    if top < least:
        return None
    return next(answer for answer, total in totals.items() if total == top)


class Vote(Aggregator):
    """An aggregator that only counts answers; cascades weigh each tier with one."""

    @abstractmethod
    def choose(self, turns: Sequence[Turn | None]) -> str | None:
        """The final answer from each agent's latest turn (in agent order; None: no turn)."""

    def aggregate(self, state: SocietyState, context: RunContext, names: list[str]) -> Update:
        return {"answer": self.choose(latest_turns(state["turns"], names))}


class MajorityVote(Vote):
    """The most common answer wins; a tie goes to the answer given first in agent order.

    Du et al. break ties by the first agent; MachineSoM keeps an answer only if at least two
    agents gave it (`min_votes=2`).
    """

    kind: Literal["vote"] = "vote"
    """The name of this aggregator in society files and specs (`moot.spec`)."""

    min_votes: int = Field(default=1, ge=1)
    """The winner needs at least this many votes, else the result has no answer."""

    def vote(self, answers: Sequence[str | None]) -> str | None:
        """The winning answer among `answers` (in agent order; None = no answer)."""
        return weighted_winner([(answer, 1.0) for answer in answers], self.min_votes)

    def choose(self, turns: Sequence[Turn | None]) -> str | None:
        return self.vote([turn.answer if turn else None for turn in turns])


class WeightedVote(Vote):
    """Each agent's answer counts with its weight (unnamed agents weigh 1)."""

    kind: Literal["weighted"] = "weighted"
    """The name of this aggregator in society files and specs (`moot.spec`)."""

    weights: dict[str, float] = Field(default_factory=dict)

    def choose(self, turns: Sequence[Turn | None]) -> str | None:
        weighted = [(t.answer, self.weights.get(t.agent, 1.0)) for t in turns if t is not None]
        return weighted_winner(weighted, 0.0)


class ConfidenceVote(Vote):
    """Each answer counts with the confidence of the turn that gave it: from token logprobs
    (agents with `logprobs=True`) or a stated "Confidence:" line; `default` when neither."""

    kind: Literal["confidence"] = "confidence"
    """The name of this aggregator in society files and specs (`moot.spec`)."""

    default: float = Field(default=0.5, ge=0, le=1)

    def choose(self, turns: Sequence[Turn | None]) -> str | None:
        weighted = [
            (t.answer, t.confidence if t.confidence is not None else self.default)
            for t in turns
            if t is not None
        ]
        return weighted_winner(weighted, 0.0)
