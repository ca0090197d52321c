"""The answer format: how agents are asked to state their answer, and how it is read from a
reply. Every aggregator is one (its `extract`); typed answers (`moot.aggregate.schema`) are
another."""

from __future__ import annotations

from typing import Any

import moot.prompts as prompts
from moot.aggregate.extract import EXTRACTORS, ExtractKind, Extractor
from moot.config import Config
from moot.errors import ConfigError


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
