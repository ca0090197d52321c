"""How answers are read from replies, and how the final answer is chosen from them."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from moot.agents import Agent
from moot.aggregate.extract import EXTRACTORS, ExtractKind, Extractor
from moot.errors import ConfigError
from moot.result import Turn


class AnswerFormat(BaseModel):
    """The answer format agents are asked for, and how an answer is read from a reply."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    extract: ExtractKind | Extractor = "number"
    """How to read an answer from a reply: "number", "boxed", "choice", "square", "text", or a
    callable."""

    def extractor(self) -> Extractor:
        if callable(self.extract):
            return self.extract
        if self.extract not in EXTRACTORS:
            known = ", ".join(EXTRACTORS)
            raise ConfigError(f"unknown extract '{self.extract}': use one of {known} or a callable")
        return EXTRACTORS[self.extract]

    def format_prompt(self) -> str:
        """Name of the prompt that tells agents how to state their answer."""
        return f"formats/{self.extract}" if isinstance(self.extract, str) else "formats/text"


def _weighted_winner(weighted: Sequence[tuple[str | None, float]], least: float) -> str | None:
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


class MajorityVote(AnswerFormat):
    """The most common answer wins; a tie goes to the answer given first in agent order.

    Du et al. break ties by the first agent; MachineSoM keeps an answer only if at least two
    agents gave it (`min_votes=2`).
    """

    min_votes: int = Field(default=1, ge=1)
    """The winner needs at least this many votes, else the result has no answer."""

    def vote(self, answers: Sequence[str | None]) -> str | None:
        """The winning answer among `answers` (in agent order; None = no answer)."""
        return _weighted_winner([(answer, 1.0) for answer in answers], self.min_votes)

    def choose(self, turns: Sequence[Turn | None]) -> str | None:
        """The final answer from each agent's latest turn (in agent order)."""
        return self.vote([turn.answer if turn else None for turn in turns])


class WeightedVote(AnswerFormat):
    """Each agent's answer counts with its weight (unnamed agents weigh 1)."""

    weights: dict[str, float] = Field(default_factory=dict)

    def choose(self, turns: Sequence[Turn | None]) -> str | None:
        weighted = [(t.answer, self.weights.get(t.agent, 1.0)) for t in turns if t is not None]
        return _weighted_winner(weighted, 0.0)


class ConfidenceVote(AnswerFormat):
    """Each answer counts with the confidence of the turn that gave it: from token logprobs
    (agents with `logprobs=True`) or a stated "Confidence:" line; `default` when neither."""

    default: float = Field(default=0.5, ge=0, le=1)

    def choose(self, turns: Sequence[Turn | None]) -> str | None:
        weighted = [
            (t.answer, t.confidence if t.confidence is not None else self.default)
            for t in turns
            if t is not None
        ]
        return _weighted_winner(weighted, 0.0)


class Judge(AnswerFormat):
    """An agent that reads every participant's latest reply and writes the final answer.

    A judge (role "judge") decides which answer is right; an aggregator (role "aggregator", as in
    mixture-of-agents) synthesises one answer from all replies. The final answer is read from
    its reply; its turn is part of the record.
    """

    agent: Agent
    """Who judges; its role picks the prompt (aggregate/judge or aggregate/synthesise)."""

    def prompt_name(self) -> str:
        return "aggregate/synthesise" if self.agent.role == "aggregator" else "aggregate/judge"

    def agents(self) -> list[Agent]:
        return [self.agent]


class PairwiseRank(AnswerFormat):
    """LLM-Blender: a judge compares every pair of candidates in both orders (cancelling
    position bias), candidates are ranked by wins, and a fuser writes one answer from the top
    `top_k` (without a fuser, the top candidate's answer wins)."""

    judge: Agent
    fuser: Agent | None = None
    top_k: int = Field(default=2, ge=1)

    def agents(self) -> list[Agent]:
        return [self.judge, *([self.fuser] if self.fuser else [])]


Aggregator = MajorityVote | WeightedVote | ConfidenceVote | Judge | PairwiseRank
