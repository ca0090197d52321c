"""The aggregator contract: the answer format agents are asked for, and the last step of a run
that chooses the final answer from the participants' latest turns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from moot import prompts
from moot.aggregate.extract import EXTRACTORS, ExtractKind, Extractor
from moot.config import Config
from moot.errors import ConfigError

if TYPE_CHECKING:
    from moot.agents import Agent
    from moot.graphs._runtime import Calls, RunContext, SocietyState, Update


class AnswerFormat(Config):
    """The answer format agents are asked for, and how an answer is read from a reply."""

    extract: ExtractKind | Extractor = "number"
    """How to read an answer from a reply: "number", "auto" (chosen per question: a number
    where it asks for one, a letter where it offers lettered choices, yes/no, else a short
    answer; the default of a debate), "boxed", "choice", "square", "yesno", "short", "text",
    or a callable."""

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

    def instruction(self) -> str:
        """The text that tells agents how to state their answer (rendered: literal braces, as
        in `\\boxed{}`, are written doubled in the file)."""
        return prompts.render(self.format_prompt())

    def answer_grammar(self) -> str | None:
        """A GBNF grammar for the answer line alone, where the format has one: a local model
        whose reply states no readable answer is asked for the line under it."""
        if self.json_schema() is not None or not isinstance(self.extract, str):
            return None  # typed answers are held to their schema in the reply itself
        return prompts.grammar(self.extract)

    def readable(self, answer: str | None) -> bool:
        """Whether `answer` reads as this format asks (a short answer is a few words)."""
        if answer is None:
            return False
        return self.extract != "short" or len(answer.split()) <= 4

    def problem(self, text: str) -> str | None:
        """Why no answer can be read from `text`, where the format can say (typed answers)."""
        return None

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema a reply must end with (typed answers), for backends that can hold a
        reply to one; None for answers read from free text."""
        return None


class Aggregator(AnswerFormat, ABC):
    """Chooses a run's final answer; subclass it to write your own.

    It is also the run's answer format (`extract`). A protocol's graph calls `aggregate` in its
    last step.
    """

    def agents(self) -> list[Agent]:
        """Agents of the aggregator's own (a judge, a ranker), whose models a run loads."""
        return []

    @abstractmethod
    def aggregate(
        self, state: SocietyState, context: RunContext, names: list[str]
    ) -> Update | Calls:
        """The state update holding "answer" (and any turns of its own), from the latest turns
        of the agents named `names`. To call models, be a generator: yield lists of
        `moot.graphs.base.Call` and receive their turns (see `Judge`)."""
