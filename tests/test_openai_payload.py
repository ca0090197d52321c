"""What moot's OpenAI models send for a typed answer, and how the reply is read back (no server:
the request payload and the reply's rewriting; tests/test_openai_server.py runs them live)."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel

import moot
from moot.errors import ModelSpecError
from moot.models._openai_chat import _unwrapped


class Part(BaseModel):
    name: str


class Order(BaseModel):
    parts: list[Part]
    total: int


def _payload(model, schema):
    return model._get_request_payload([HumanMessage("hi")], answer_schema=schema)


def test_openai_itself_gets_a_json_schema_that_keeps_the_reasoning(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    model = moot.load_model("openai:gpt-4o-mini", api_key="sk-test")
    response_format = _payload(model, Order.model_json_schema())["response_format"]
    assert response_format["type"] == "json_schema"
    wrapper = response_format["json_schema"]["schema"]
    assert wrapper["required"] == ["reasoning", "answer"]
    assert wrapper["properties"]["answer"]["properties"]["total"] == {
        "title": "Total",
        "type": "integer",
    }
    # Part's definition moved up to where "#/$defs/Part" points from the wrapper
    assert "Part" in wrapper["$defs"] and "$defs" not in wrapper["properties"]["answer"]


def test_a_compatible_server_is_asked_in_the_prompt_unless_told(monkeypatch):
    url = "http://127.0.0.1:9/v1"
    plain = moot.load_model("openai:m", base_url=url)
    assert "response_format" not in _payload(plain, Part.model_json_schema())
    assert "answer_schema" not in _payload(plain, Part.model_json_schema())
    told = moot.load_model("openai:m", base_url=url, structured_output="json_object")
    response_format = _payload(told, Part.model_json_schema())["response_format"]
    assert response_format["type"] == "json_object"
    assert response_format["schema"]["properties"]["answer"]["required"] == ["name"]
    with pytest.raises(ModelSpecError, match="structured_output must be one of"):
        moot.load_model("openai:m", base_url=url, structured_output="xml")


def _result(text: str) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def test_a_wrapped_reply_becomes_reasoning_then_the_answer():
    reply = json.dumps({"reasoning": "12 and 30 make 42. ", "answer": {"value": 42}})
    message = _unwrapped(_result(reply)).generations[0].message
    assert message.text == '12 and 30 make 42.\n\n{"value": 42}'


@pytest.mark.parametrize(
    "reply", ['{"reasoning": "12 and 30 ma', "42", '{"value": 42}', "plain text"]
)
def test_a_reply_of_another_shape_is_kept_as_it_came(reply):
    assert _unwrapped(_result(reply)).generations[0].message.text == reply


def test_raw_newlines_in_the_reasoning_are_read():
    # llama-cpp-python's grammar lets a model write a raw newline inside a JSON string
    reply = '{"reasoning": "first\nthen", "answer": {"value": 1}}'
    assert _unwrapped(_result(reply)).generations[0].message.text == 'first\nthen\n\n{"value": 1}'
