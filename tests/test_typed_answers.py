"""Typed answers: agents fill a pydantic schema, read leniently from their replies; the vote
compares a field or the whole object; `result.answer_object`; LangChain's
`with_structured_output` on a society's chat model."""

from __future__ import annotations

import json

import pytest
from langchain_core.exceptions import OutputParserException
from pydantic import BaseModel

import moot
from moot.testing import ScriptedChatModel


class Height(BaseModel):
    value: int
    unit: str


REPLIES = {
    "a": 'Measured twice.\n```json\n{"value": 42, "unit": "m"}\n```',
    "b": 'First guess {"value": 7, "unit": "m"}, then better: {"value": 42, "unit": "meters"}',
    "c": "About forty-two metres, I think.",
    "d": '{"value": "tall", "unit": "m"}',
}


def society(agents="abc", **options) -> moot.Society:
    model = ScriptedChatModel(respond=lambda messages, info: REPLIES[info.agent])
    members = [moot.Agent(name=name, model=model) for name in agents]
    return moot.Society(
        agents=members, protocol=moot.Debate(rounds=1), answer_schema=Height, **options
    )


def test_the_vote_compares_a_field_and_the_answer_object_is_the_schema():
    result = society(vote_on="value").run("How tall is it?")
    assert result.answer == "42"
    assert isinstance(result.answer_object, Height) and result.answer_object.value == 42
    assert result.answer_object.unit == "m"  # the first agent that gave the winning answer
    a, b, c = result.turns
    assert (a.answer, b.answer, c.answer) == ("42", "42", None)  # b: its last object counts
    assert c.answer_error == "no JSON object in the reply"
    assert json.loads(result.model_dump_json())["answer_object"] == {"value": 42, "unit": "m"}


def test_without_vote_on_the_whole_object_is_voted_on():
    result = society(agents="ab").run("How tall is it?")
    a, b = result.turns
    assert a.answer == '{"unit": "m", "value": 42}' and b.answer != a.answer
    assert result.answer == a.answer  # a tie goes to the first agent


def test_a_schema_no_reply_fills_gives_no_answer_and_says_why():
    result = society(agents="cd").run("How tall is it?")
    assert result.answer is None and result.answer_object is None
    assert result.turns[1].answer_error is not None
    assert "does not fit Height: value:" in result.turns[1].answer_error


def test_the_prompt_gives_the_schema():
    model = ScriptedChatModel(respond=lambda messages: REPLIES["a"])
    moot.Society(
        agents=[moot.Agent(name="a", model=model)],
        protocol=moot.Debate(rounds=1),
        answer_schema=Height,
    ).run("How tall?")
    prompt = model.calls[0][-1].text
    assert "JSON Schema" in prompt and '"required": ["value", "unit"]' in prompt


@pytest.mark.parametrize(
    "options, message",
    [
        ({"vote_on": "colour"}, "vote_on 'colour' is not a field of Height"),
        ({"answer_schema": None, "vote_on": "value"}, "give answer_schema too"),
    ],
)
def test_bad_schema_settings_are_refused(options, message):
    agents = [moot.Agent(name="a", model="test")]
    with pytest.raises(moot.ConfigError, match=message):
        moot.Society(agents=agents, **{"answer_schema": Height, **options})


def test_program_agents_with_an_answer_schema_are_refused():
    agents = [moot.Agent(name="p", model="test", kind="program")]
    with pytest.raises(moot.ConfigError, match="program agents p print one value"):
        moot.Society(agents=agents, protocol=moot.Debate(rounds=1), answer_schema=Height)
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=1))
    with pytest.raises(moot.ConfigError, match="program agents p print one value"):
        society.as_chat_model().with_structured_output(Height)  # checked as a new society is


def test_with_structured_output_gives_the_schema_instance():
    plain = moot.Society(
        agents=[moot.Agent(name=n, model=ScriptedChatModel(respond=lambda m, i: REPLIES[i.agent]))
                for n in "ab"],
        protocol=moot.Debate(rounds=1),
    )  # fmt: skip
    answer = plain.as_chat_model().with_structured_output(Height).invoke("How tall?")
    assert answer == Height(value=42, unit="m")
    unfit = society(agents="c").as_chat_model().with_structured_output(Height)
    with pytest.raises(OutputParserException, match="no agent's reply filled Height"):
        unfit.invoke("How tall?")
    raw = society(agents="c").as_chat_model().with_structured_output(Height, include_raw=True)
    outcome = raw.invoke("How tall?")
    assert outcome["parsed"] is None and outcome["raw"].content == ""
    assert isinstance(outcome["parsing_error"], OutputParserException)
    with pytest.raises(moot.ConfigError, match="takes a pydantic model class"):
        plain.as_chat_model().with_structured_output({"type": "object"})


class Reading(BaseModel):
    """Importable by tests.test_typed_answers:Reading, for a society file."""

    value: float
    unit: str


SOCIETY_WITH_SCHEMA = """\
agents:
  - {name: a, copies: 3, model: test}
protocol: {kind: debate, rounds: 1}
answer_schema: SCHEMA
vote_on: value
"""


@pytest.mark.parametrize(
    "schema", ['{value: number, unit: string, note: "string?"}', "tests.test_typed_answers:Reading"]
)
def test_a_society_file_gives_the_answer_schema_inline_or_by_import(tmp_path, schema):
    path = tmp_path / "typed.yaml"
    path.write_text(SOCIETY_WITH_SCHEMA.replace("SCHEMA", schema))
    replies = {"a1": '{"value": 3, "unit": "m"}', "a2": '{"value": 3.0, "unit": "km"}'}
    # By agent, not by call order: the three agents' calls run in parallel.
    model = ScriptedChatModel(respond=lambda messages, info: replies.get(info.agent, "no JSON"))

    result = moot.load_society(path, model=model).run("How far?")

    assert result.answer == "3.0"
    assert result.answer_object is not None and result.answer_object.unit == "m"
    assert result.turns[2].answer is None and "no JSON object" in (
        result.turns[2].answer_error or ""
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("{value: decimal}", "typed.yaml:4: answer_schema: field 'value': unknown type 'decimal'"),
        ("{}", "typed.yaml:4: answer_schema: give the answer at least one field"),
        ("{2x: number}", "typed.yaml:4: answer_schema: field name '2x' must be a word"),
        (
            "nowhere.mod:Thing",
            "typed.yaml:4: answer_schema: 'nowhere.mod:Thing' cannot be imported",
        ),
        ("json:dumps", "typed.yaml:4: answer_schema: 'json:dumps' is not a pydantic model"),
        (
            "{weight: number}",
            "typed.yaml:5: vote_on: 'value' is not a field of the answer (fields: weight)",
        ),
    ],
)
def test_a_bad_answer_schema_in_a_society_file_names_the_line(tmp_path, schema, message):
    path = tmp_path / "typed.yaml"
    path.write_text(SOCIETY_WITH_SCHEMA.replace("SCHEMA", schema))
    with pytest.raises(moot.ConfigError) as error:
        moot.load_society(path)
    assert message in str(error.value)
