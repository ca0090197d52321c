"""How answers are read from replies, and how the final answer is chosen from them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from moot.agents import Agent
from moot.aggregate.extract import EXTRACTORS, ExtractKind, Extractor
from moot.errors import ConfigError


class AnswerFormat(BaseModel):
    """The answer format agents are asked for, and how an answer is read from a reply."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    extract: ExtractKind | Extractor = "number"
    """How to read an answer from a reply: "number", "boxed", "choice", "text", or a callable."""

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


class MajorityVote(AnswerFormat):
    """The most common answer wins; a tie goes to the answer given first in agent order.

    Du et al. break ties by the first agent; MachineSoM keeps an answer only if at least two
    agents gave it (`min_votes=2`).
    """

    min_votes: int = Field(default=1, ge=1)
    """The winner needs at least this many votes, else the result has no answer."""

    def vote(self, answers: Sequence[str | None]) -> str | None:
        """The winning answer among `answers` (in agent order; None = no answer)."""
        counts = Counter(answer for answer in answers if answer is not None)
        if not counts:
            return None
        top = max(counts.values())
        if top < self.min_votes:
            return None
        # Counter keeps first-seen order, so the first tied answer is the one given earliest.
        return next(answer for answer, count in counts.items() if count == top)


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


Aggregator = MajorityVote | Judge
