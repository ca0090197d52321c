"""Tool calls on llama.cpp models, in the Hermes/Qwen format their chat templates were trained
on: the tools in a `<tools>` block of the system prompt, calls as `<tool_call>` JSON in the
reply, results as `<tool_response>` blocks in a user turn.

llama-cpp-python's own handlers are not usable for this (issue 15): `chatml-function-calling`
drops tool messages and forces every reply into a call, and the GGUF template renders `tools`
but nothing parses `<tool_call>` back. So moot writes the prompt and parses the reply itself,
leniently: the 0.5B model often writes the call as bare JSON without the tags. Models under
1B parameters get one worked example (measured: 0.5B, 0/10 calls without it, 10/10 with it).
Templates that know nothing of tool calls (SmolLM2's) are refused with a clear error.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.runnables import Runnable, RunnableConfig

import moot.prompts as prompts

SMALL_MODEL = 1_000_000_000
"""Models with fewer parameters get a worked example of a call in their tools prompt."""
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def call_grammar(tools: list[dict[str, Any]]) -> str:
    """A GBNF grammar for one `<tool_call>` of one of `tools`, its arguments following the
    tool's JSON Schema (llama-cpp-python's schema-to-grammar converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["function"]["name"]},
                "arguments": tool["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for tool in tools
    ]
    schema = json.dumps({"oneOf": calls} if len(calls) > 1 else calls[0])
    rules = json_schema_to_gbnf(schema, prop_order=["name", "arguments"])
    rules = re.sub(r"^root ::=", "call ::=", rules, flags=re.MULTILINE)
    return f'root ::= "<tool_call>\\n" call "\\n</tool_call>"\n{rules}'


def answer_grammar(schema: dict[str, Any]) -> str:
    """A GBNF grammar for a reply that reasons in free text (without "{") and ends with one
    JSON object following `schema`: structured output that keeps the reasoning before it."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    rules = json_schema_to_gbnf(json.dumps(schema))
    rules = re.sub(r"^root ::=", "moot-answer ::=", rules, flags=re.MULTILINE)
    return f"root ::= moot-prose moot-answer\nmoot-prose ::= [^{{]*\n{rules}"


def template_knows_tools(template: str | None) -> bool:
    """Whether a chat template was written for tool calls (it mentions them)."""
    return template is not None and ("tool_call" in template or "tools" in template)


class LlamaTools(Runnable[Any, AIMessage]):
    """A llama.cpp chat model with tools bound: takes messages (with earlier calls and their
    results), returns an AIMessage whose `tool_calls` are the calls the model wrote."""

    def __init__(
        self,
        model: BaseChatModel,
        tools: list[dict[str, Any]],
        example: dict[str, Any] | bool,
        forced: bool | str = False,
    ) -> None:
        """`example`: False, True (show the call format), or a worked example of the first
        tool ({"question", "arguments", "result", "answer"}), given as a first exchange.
        `forced`: every reply is a call, its form held by a grammar (tool_choice="required"),
        or, given a tool's name, a call of that tool."""
        self.model, self.tools, self.example = model, tools, example
        self.names = {tool["function"]["name"] for tool in tools}
        callable_now = [t for t in tools if forced is True or t["function"]["name"] == forced]
        self.grammar = call_grammar(callable_now) if forced else None

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AIMessage:
        if self.grammar:
            kwargs["grammar"] = self.grammar
        reply = self.model.invoke(self.prompt(list(input)), config=config, **kwargs)
        return read_calls(reply, self.names)

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        if self.grammar:
            kwargs["grammar"] = self.grammar
        reply = await self.model.ainvoke(self.prompt(list(input)), config=config, **kwargs)
        return read_calls(reply, self.names)

    def prompt(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        """The conversation in the model's tool format: the tools in the system prompt, a
        worked example first when the model needs one, calls and results in their tags."""
        block = prompts.render("tools/hermes", tools="\n".join(map(json.dumps, self.tools)))
        if self.example is True:  # the format only: no worked example for this tool
            first = self.tools[0]["function"]
            arguments = {name: "..." for name in first.get("parameters", {}).get("properties", {})}
            shown = json.dumps(arguments)
            block += "\n\n" + prompts.render("tools/example", name=first["name"], arguments=shown)
        system = [m for m in messages if isinstance(m, SystemMessage)][:1]
        rest = [m for m in messages if not isinstance(m, SystemMessage)]
        text = f"{system[0].text}\n\n{block}" if system else block
        example = self._worked_example() if isinstance(self.example, dict) else []
        return [SystemMessage(content=text), *_tagged([*example, *rest])]

    def _worked_example(self) -> list[BaseMessage]:
        """A first exchange: a question, the call, its result, the answer."""
        assert isinstance(self.example, dict)
        call = tool_call(
            name=self.tools[0]["function"]["name"], args=self.example["arguments"], id="example"
        )
        return [
            HumanMessage(content=self.example["question"]),
            AIMessage(content="", tool_calls=[call]),
            ToolMessage(content=self.example["result"], tool_call_id="example"),
            AIMessage(content=self.example["answer"]),
        ]


def _tagged(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Calls as `<tool_call>` JSON in the assistant's turn, results as `<tool_response>` blocks
    in a user turn (results of one batch of calls in one turn)."""
    converted: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            calls = "\n".join(
                "<tool_call>\n"
                + json.dumps({"name": call["name"], "arguments": call["args"]})
                + "\n</tool_call>"
                for call in message.tool_calls
            )
            message = AIMessage(content=f"{message.text}\n{calls}".strip())
        elif isinstance(message, ToolMessage):
            response = f"<tool_response>\n{message.text}\n</tool_response>"
            if (
                converted
                and isinstance(converted[-1], HumanMessage)
                and "<tool_response>" in (converted[-1].text)
            ):
                converted[-1] = HumanMessage(content=f"{converted[-1].text}\n{response}")
                continue
            message = HumanMessage(content=response)
        converted.append(message)
    return converted


def read_calls(reply: BaseMessage, names: set[str]) -> AIMessage:
    """`reply` with the calls it wrote as `tool_calls` (and its text without them); a call
    that is not JSON becomes an invalid tool call, for the loop to report."""
    text = reply.text
    calls, invalid = [], []
    found = _CALL.findall(text)
    bare = not found and _bare_call(text, names)
    for raw in found or ([bare] if bare else []):
        try:
            value = json.loads(raw)
            name, arguments = value["name"], value.get("arguments", value.get("parameters", {}))
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise ValueError("name must be text and arguments an object")
        except (ValueError, KeyError, TypeError) as error:
            invalid.append(invalid_tool_call(name=None, args=raw, id=_id(), error=str(error)))
            continue
        calls.append(tool_call(name=name, args=arguments, id=_id()))
    if not calls and not invalid:
        return cast(AIMessage, reply)
    kept = _CALL.sub("", text) if found else text.replace(str(bare), "")
    return AIMessage(
        content=kept.strip(),
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=getattr(reply, "usage_metadata", None),
        response_metadata=reply.response_metadata,
    )


def _bare_call(text: str, names: set[str]) -> str | None:
    """A JSON object naming one of `names` written without the tags (small models do)."""
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(text) if char == "{"):
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("name") in names:
            return text[start:end]
    return None


def _id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"
