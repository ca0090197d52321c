"""moot's ChatOpenAI (imported only with the 'openai' extra installed; see `chat_openai`)."""

from __future__ import annotations

import json
from typing import Any

from langchain_openai import ChatOpenAI


class MootChatOpenAI(ChatOpenAI):
    """ChatOpenAI that takes a society's `answer_schema` per call and holds the reply to it by a
    response format; for a compatible server it also works around what such servers refuse."""

    takes_answer_schema: bool = True
    """Tells moot's runtime to pass `answer_schema=` (a JSON Schema) with each call."""
    structured_output: str = "off"
    """"json_schema" (OpenAI's), "json_object" (with a `schema`: llama-cpp-python's server) or
    "off" (no response format: the prompt alone asks for the answer object)."""
    compatible: bool = False
    """A custom base URL: send `max_tokens` beside `max_completion_tokens`, and empty text
    rather than null for an assistant message that only calls tools."""

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        if self._structured(kwargs):  # the reply is unwrapped whole
            return False
        return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    def _get_request_payload(self, input_: Any, *, stop: Any = None, **kwargs: Any) -> dict:  # type: ignore[type-arg]
        schema = kwargs.pop("answer_schema", None)
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        if schema is not None and self.structured_output != "off":
            payload["response_format"] = _answer_response_format(schema, self.structured_output)
        if self.compatible:
            if "max_completion_tokens" in payload:
                payload["max_tokens"] = payload["max_completion_tokens"]
            for message in payload.get("messages", []):
                if message.get("role") == "assistant" and message.get("content") is None:
                    message["content"] = ""
        return payload

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        return _unwrapped(result) if self._structured(kwargs) else result

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        result = await super()._agenerate(messages, stop, run_manager, **kwargs)
        return _unwrapped(result) if self._structured(kwargs) else result

    def _structured(self, kwargs: dict[str, Any]) -> bool:
        return kwargs.get("answer_schema") is not None and self.structured_output != "off"


_REASONING = "Your reasoning, step by step, before the answer."


def _answer_response_format(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """A response format for a reply that reasons, then answers: a JSON object of `reasoning`
    (text) and `answer` (the schema), so that structured output does not cost the reasoning
    (the reply is unwrapped into text and the answer's JSON by `_unwrapped`)."""
    answer = {key: value for key, value in schema.items() if key != "$defs"}
    wrapper: dict[str, Any] = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "description": _REASONING},
            "answer": answer,
        },
        "required": ["reasoning", "answer"],
    }
    if "$defs" in schema:  # references stay "#/$defs/...": the definitions move up a level
        wrapper["$defs"] = schema["$defs"]
    if kind == "json_object":
        return {"type": "json_object", "schema": wrapper}
    return {"type": "json_schema", "json_schema": {"name": "reasoned_answer", "schema": wrapper}}


def _unwrapped(result: Any) -> Any:
    """`result` with each reply of the `_answer_response_format` shape written back as its
    reasoning followed by the answer's JSON, which is what peers read and the answer is read
    from. A reply of another shape (cut short, or a server that ignored the format) stays."""
    from langchain_core.outputs import ChatGeneration

    generations = []
    for generation in result.generations:
        message = generation.message
        try:
            value = json.loads(message.text, strict=False)  # raw newlines in strings too
        except ValueError:
            value = None
        if isinstance(value, dict) and "answer" in value:
            reasoning = value.get("reasoning")
            answer = json.dumps(value["answer"], ensure_ascii=False)
            text = f"{reasoning.strip()}\n\n{answer}" if isinstance(reasoning, str) else answer
            message = message.model_copy(update={"content": text})
            generation = ChatGeneration(message=message, generation_info=generation.generation_info)
        generations.append(generation)
    return result.model_copy(update={"generations": generations})
