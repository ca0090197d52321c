"""An agent's turn with tools: the model may call tools, see their results and call again, up
to the agent's `max_tool_calls`, then answers; a final reply that states no answer after the
model called tools is followed by one ask for it (small models take a tool result for a user's
reply and write "Thank you for using the tools.").

The loop runs inside the agent's model call, so one time limit covers the whole turn (a tool
that hangs gets the agent's timeout), a round's agents still run in parallel, and a tool that
fails is recorded in the turn and shown to the model, never raised. The reply handed back is
the final one, with the usage of every model call in the loop and the tool calls in its
response metadata (`TOOL_CALLS`, `MODEL_CALLS`), which `_runtime` turns into the `Turn`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from functools import partial
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool

from moot import prompts
from moot.agents import Agent
from moot.aggregate.base import AnswerFormat
from moot.errors import ConfigError
from moot.result import ToolCall

TOOL_CALLS = "moot_tool_calls"
"""Response metadata key of the turn's tool calls (dumped `ToolCall`s)."""
PARTIAL_TOOL_CALLS = "moot_partial_tool_calls"
"""Attribute of an error that ended a turn: the tool calls (`ToolCall`) made before it."""
MODEL_CALLS = "moot_model_calls"
"""Response metadata key of how many model calls the turn made."""
_REPEATED = "not run again"


def bind(model: BaseChatModel, agent: Agent, forced: bool = False) -> Any:
    """`model` with the agent's tools bound (`forced`: its reply must be a call), or a
    ConfigError saying the model cannot call tools."""
    try:
        if forced:  # naming the one tool is understood by more servers than "required"
            choice = agent.tools[0].name if len(agent.tools) == 1 else "required"
            return model.bind_tools(agent.tools, tool_choice=choice)
        return model.bind_tools(agent.tools)
    except NotImplementedError:
        raise ConfigError(
            f"agent '{agent.name}' has tools, but its model ({_kind(model)}) cannot call tools: "
            "use a model that supports tool calls (openai:..., or a chat model with bind_tools)"
        ) from None


def _kind(model: BaseChatModel) -> str:
    return str(getattr(model, "_llm_type", type(model).__name__))


class _Loop:
    """What one turn's tool loop keeps: the calls made, the replies, whether the model was
    told about a malformed call."""

    def __init__(self, agent: Agent, answer_format: AnswerFormat) -> None:
        self.agent = agent
        self.answer_format = answer_format
        """How the turn's answer is stated (repeated when the model is asked to answer) and
        read (to see whether the final reply has one)."""
        self.tools: dict[str, BaseTool] = {tool.name: tool for tool in agent.tools}
        self.records: list[ToolCall] = []
        self.replies: list[BaseMessage] = []
        self.closed = False
        """Set when the model may call no more tools this turn."""
        self.reasoning = ""
        """reason-first: the first reply, which did not call; the turn's text begins with it."""
        self.unanswered = ""
        """A final reply that stated no answer (the model was then asked for it); the turn's
        text keeps it."""

    def may_call(self) -> bool:
        return not self.closed and len(self.records) < self.agent.max_tool_calls

    def after_calls(self, conversation: list[BaseMessage]) -> None:
        """After a batch of calls: a second malformed call (the model was told of the first),
        a call repeated word for word (the model is going round in circles) or the last
        allowed call ends the calling, and the model is asked to answer."""
        malformed = [r for r in self.records if (r.error or "").startswith("malformed")]
        repeated = any((r.error or "").startswith(_REPEATED) for r in self.records)
        if len(malformed) > 1 or repeated or not self.may_call():
            self.closed = True
            instruction = self.answer_format.instruction()
            answer_now = prompts.render("tools/answer_now", format=instruction)
            conversation.append(HumanMessage(content=answer_now))

    def ask_for_the_answer(self, reply: BaseMessage, conversation: list[BaseMessage]) -> bool:
        """After tools were called, a final reply with no readable answer is followed, once, by
        an ask for it (added to `conversation`); True when asked."""
        if self.unanswered or not self.records or not reply.text.strip():
            return False
        if self.answer_format.extractor()(reply.text) is not None:
            return False
        self.unanswered, self.closed = reply.text, True
        missing = prompts.render("tools/answer_missing", format=self.answer_format.instruction())
        conversation += [reply, HumanMessage(content=missing)]
        return True

    def requests(self, reply: BaseMessage) -> list[dict[str, Any]]:
        """The tool calls `reply` asks for, malformed ones marked with an "error"."""
        self.replies.append(reply)
        if not isinstance(reply, AIMessage):
            return []
        asked: list[dict[str, Any]] = [dict(call) for call in reply.tool_calls]
        for invalid in reply.invalid_tool_calls:
            asked.append(
                {
                    "name": invalid.get("name") or "?",
                    "args": {},
                    "id": invalid.get("id"),
                    "error": f"malformed call: {invalid.get('error') or 'arguments are not JSON'}",
                }
            )
        return asked

    def unusable(self, request: dict[str, Any]) -> ToolCall | None:
        """The failed record of a request that cannot run (malformed, unknown tool, over the
        limit)."""
        name, arguments = str(request.get("name")), request.get("args") or {}
        if not self.may_call():
            limit = self.agent.max_tool_calls
            return ToolCall(name=name, arguments=arguments, error=f"not run: at most {limit} calls")
        if "error" in request:
            return ToolCall(name=name, arguments=arguments, error=request["error"])
        if name not in self.tools:
            known = ", ".join(self.tools) or "none"
            return ToolCall(
                name=name, arguments=arguments, error=f"no tool named '{name}' (tools: {known})"
            )
        for earlier in self.records:
            if (earlier.name, earlier.arguments) == (name, arguments):
                # Its result is shown again: a model that asks twice has often lost sight of it.
                outcome = earlier.result if earlier.error is None else f"error: {earlier.error}"
                error = f"{_REPEATED}: the same call was made above and gave {outcome}"
                return ToolCall(name=name, arguments=arguments, error=error)
        return None

    def shown(self, request: dict[str, Any], record: ToolCall) -> ToolMessage:
        """What the model is shown of a call: the result, or the error."""
        self.records.append(record)
        content = record.result if record.error is None else f"error: {record.error}"
        return ToolMessage(
            content=content or "", tool_call_id=request.get("id") or "", name=record.name
        )

    def finish(self, reply: BaseMessage) -> BaseMessage:
        """The final reply with the whole turn's usage and its tool calls."""
        usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        for each in self.replies:
            for key in usage:
                usage[key] += int((getattr(each, "usage_metadata", None) or {}).get(key, 0))
        metadata = {
            **reply.response_metadata,
            TOOL_CALLS: [record.model_dump() for record in self.records],
            MODEL_CALLS: len(self.replies),
        }
        update: dict[str, Any] = {"response_metadata": metadata}
        if isinstance(reply, AIMessage):
            update["usage_metadata"] = usage
        if self.reasoning or self.unanswered:
            said = [self.reasoning, self.unanswered, reply.text]
            update["content"] = "\n\n".join(text for text in said if text.strip())
        return reply.model_copy(update=update)

    def must_call_now(self, requests: list[dict[str, Any]]) -> bool:
        """reason-first: a first reply that reasoned without calling is followed by a call."""
        return (
            self.agent.tool_choice == "reason-first"
            and not requests
            and len(self.replies) == 1
            and self.may_call()
        )


Step = tuple[Any, Any]
"""What the loop asks its driver for: (a model, the conversation) or (a tool, a request)."""


def _steps(
    model: BaseChatModel, agent: Agent, messages: list[BaseMessage], answer_format: AnswerFormat
) -> Generator[Step, Any, BaseMessage]:
    """The loop, written once: yields a model call or a tool call, receives its reply or its
    record, returns the final reply. `run_turn` and `arun_turn` drive it."""
    bound, loop = bind(model, agent), _Loop(agent, answer_format)
    forced = bind(model, agent, forced=True) if agent.tool_choice != "auto" else bound
    asker = (forced if agent.tool_choice == "first" else bound) if loop.may_call() else model
    conversation = list(messages)
    while True:
        try:
            reply = yield asker, list(conversation)
        except Exception as error:
            # The turn fails, but the calls it made are kept: the failed turn records them.
            setattr(error, PARTIAL_TOOL_CALLS, list(loop.records))
            raise
        requests = loop.requests(reply)
        if loop.must_call_now(requests):  # it has reasoned; now it checks that with a tool
            loop.reasoning = reply.text
            # Asked what to check: made to call with no ask, models call on anything at hand.
            conversation += [reply, HumanMessage(content=prompts.render("tools/check_with_tool"))]
            asker = forced
            continue
        if not requests or not loop.may_call():
            if loop.ask_for_the_answer(reply, conversation):
                asker = model
                continue
            return loop.finish(reply)
        conversation.append(reply)
        for request in requests:
            record = loop.unusable(request) or (yield loop.tools[request["name"]], request)
            conversation.append(loop.shown(request, record))
        loop.after_calls(conversation)
        asker = bound if loop.may_call() else model


def run_turn(
    model: BaseChatModel,
    agent: Agent,
    messages: list[BaseMessage],
    config: RunnableConfig,
    options: dict[str, Any],
    answer_format: AnswerFormat,
) -> BaseMessage:
    """The agent's reply after calling its tools (sync), its answer stated in `answer_format`."""
    steps = _steps(model, agent, messages, answer_format)
    try:
        target, payload = next(steps)
        while True:
            if isinstance(target, BaseTool):
                done = _recorded(payload, partial(target.invoke, payload.get("args") or {}))
            else:
                try:
                    done = target.invoke(payload, config=config, **options)
                except Exception as error:  # noqa: BLE001 - rethrown by the loop, records kept
                    target, payload = steps.throw(error)
                    continue
            target, payload = steps.send(done)
    except StopIteration as finished:
        return cast(BaseMessage, finished.value)


async def arun_turn(
    model: BaseChatModel,
    agent: Agent,
    messages: list[BaseMessage],
    config: RunnableConfig,
    options: dict[str, Any],
    answer_format: AnswerFormat,
) -> BaseMessage:
    """`run_turn` for async graphs: the model and the tools are awaited."""
    steps = _steps(model, agent, messages, answer_format)
    try:
        target, payload = next(steps)
        while True:
            if isinstance(target, BaseTool):
                done = await _arecorded(payload, target.ainvoke(payload.get("args") or {}))
            else:
                try:
                    done = await target.ainvoke(payload, config=config, **options)
                except Exception as error:  # noqa: BLE001
                    target, payload = steps.throw(error)
                    continue
            target, payload = steps.send(done)
    except StopIteration as finished:
        return cast(BaseMessage, finished.value)


def _recorded(request: dict[str, Any], call: Callable[[], Any]) -> ToolCall:
    """The record of a tool call: its result, or the error it raised (the model sees either)."""
    started = time.perf_counter()
    try:
        return _done(request, call(), started)
    except Exception as error:  # noqa: BLE001 - a tool's failure is the model's to see
        return _failed(request, error, started)


async def _arecorded(request: dict[str, Any], call: Awaitable[Any]) -> ToolCall:
    started = time.perf_counter()
    try:
        return _done(request, await call, started)
    except Exception as error:  # noqa: BLE001
        return _failed(request, error, started)


def _done(request: dict[str, Any], result: Any, started: float) -> ToolCall:
    text = result if isinstance(result, str) else getattr(result, "content", None) or str(result)
    seconds = round(time.perf_counter() - started, 4)
    return ToolCall(
        name=request["name"], arguments=request.get("args") or {}, result=str(text), seconds=seconds
    )


def _failed(request: dict[str, Any], error: Exception, started: float) -> ToolCall:
    seconds = round(time.perf_counter() - started, 4)
    return ToolCall(
        name=request["name"],
        arguments=request.get("args") or {},
        error=f"{type(error).__name__}: {error}",
        seconds=seconds,
    )
