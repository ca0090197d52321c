"""Typed answers: agents end their replies with a JSON object of a pydantic schema, which is
read leniently (the last JSON object in the reply that fits the schema, fenced or not) and
voted on as a chosen field or as the whole object."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError, model_validator

import moot.prompts as prompts
from moot.aggregate.base import AnswerFormat
from moot.aggregate.extract import Extractor


class SchemaAnswers(AnswerFormat):
    """Answers that are instances of `schema`; the vote compares `vote_on` (one field) or the
    whole object (canonical JSON)."""

    schema_: type[BaseModel]
    vote_on: str | None = None

    @model_validator(mode="after")
    def _vote_on_a_field(self) -> SchemaAnswers:
        fields = self.schema_.model_fields
        if self.vote_on is not None and self.vote_on not in fields:
            raise ValueError(
                f"vote_on '{self.vote_on}' is not a field of {self.schema_.__name__} "
                f"(fields: {', '.join(fields)})"
            )
        return self

    def extractor(self) -> Extractor:
        return self.read

    def json_schema(self) -> dict[str, Any]:
        return self.schema_.model_json_schema()

    def answer_grammar(self) -> str | None:
        """The JSON object alone, for a local model whose reply ran out before it wrote one."""
        try:
            from llama_cpp.llama_grammar import json_schema_to_gbnf
        except ImportError:
            return None
        return json_schema_to_gbnf(json.dumps(self.json_schema()))

    def readable(self, answer: str | None) -> bool:
        return answer is not None

    def instruction(self) -> str:
        schema = json.dumps(self.json_schema())
        return prompts.render("formats/schema", schema=schema)

    def parse(self, text: str) -> BaseModel:
        """The last JSON object in `text` that fits the schema; ValueError saying why none."""
        decoder = json.JSONDecoder()
        problem = "no JSON object in the reply"
        for start in reversed([i for i, char in enumerate(text) if char == "{"]):
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                continue
            if not isinstance(value, dict):
                continue
            try:
                return self.schema_.model_validate(value)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(map(str, first["loc"]))
                problem = (
                    f"the JSON object does not fit {self.schema_.__name__}: {where}: {first['msg']}"
                )
        raise ValueError(problem)

    def key(self, answer: BaseModel) -> str:
        """What the vote compares."""
        if self.vote_on is not None:
            value: Any = getattr(answer, self.vote_on)
            return value if isinstance(value, str) else json.dumps(_plain(value), sort_keys=True)
        return json.dumps(answer.model_dump(mode="json"), sort_keys=True)

    def read(self, text: str) -> str | None:
        try:
            return self.key(self.parse(text))
        except ValueError:
            return None

    def problem(self, text: str) -> str | None:
        try:
            self.parse(text)
        except ValueError as error:
            return str(error)
        return None


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
