"""An agent's turn with tools: the model may call tools, see their results and call again, up
to the agent's `max_tool_calls`, then answers; a final reply that states no answer after the
model called tools is followed by one ask for it (small models take a tool result for a user's
reply and write "Thank you for using the tools.").

The loop is a generator of steps (`Ask` a model, `UseTool`) that the runtime carries out, sync
or async, inside the agent's call: one time limit covers the whole turn (a tool that hangs gets
the agent's timeout), a round's agents still run in parallel, and a tool that fails is recorded
and shown to the model, never raised. It returns the final reply, with the usage of every
model call in the loop; the tool calls are appended to the list it is given as they are made,
so a turn that fails half-way still records them.

An agent's MCP servers (`moot.tools.mcp`) become tools in a first step of the turn, `LoadTools`
(the server is started, or its open session reused, and its tools listed): a server that
cannot be reached fails the turn, under the agent's timeout and retries like a model call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool

import moot.prompts as prompts
from moot.agents import Agent
from moot.aggregate.format import AnswerFormat
from moot.errors import ConfigError
from moot.result import ToolCall
from moot.tools.mcp import MCPServer
from moot.tools.mcp_sessions import atools_of, tools_of

_REPEATED = "not run again"


@dataclass(slots=True)
class Ask:
    """A step: call `model` (a chat model, perhaps with tools bound) on `messages`."""

    model: Runnable[Any, BaseMessage]
    messages: list[BaseMessage]
    config: RunnableConfig
    options: dict[str, Any]

    def again(self, model: Runnable[Any, BaseMessage], messages: list[BaseMessage]) -> Ask:
        """The same call (config, options) with another model and messages."""
        return Ask(model, messages, self.config, self.options)

    def run(self) -> BaseMessage:
        return self.model.invoke(self.messages, config=self.config, **self.options)

    async def arun(self) -> BaseMessage:
        return await self.model.ainvoke(self.messages, config=self.config, **self.options)


@dataclass(slots=True)
class UseTool:
    """A step: run `tool` on the model's `request` (name, args, id); gives its `ToolCall`."""

    tool: BaseTool
    request: dict[str, Any]

    def run(self) -> ToolCall:
        """The record of the call: its result, or the error it raised (the model sees either)."""
        started = time.perf_counter()
        try:
            return _record(self.request, self.tool.invoke(self.request.get("args") or {}), started)
        except Exception as error:  # noqa: BLE001 - a tool's failure is the model's to see
            return _record(self.request, error, started)

    async def arun(self) -> ToolCall:
        started = time.perf_counter()
        call: Awaitable[Any] = self.tool.ainvoke(self.request.get("args") or {})
        try:
            return _record(self.request, await call, started)
        except Exception as error:  # noqa: BLE001
            return _record(self.request, error, started)


@dataclass(slots=True)
class LoadTools:
    """A step: the agent's tools, its MCP servers' tools listed (each server started if its
    session is not open), each tool call bounded by the agent's timeout."""

    agent: Agent

    def run(self) -> list[BaseTool]:
        return tools_of(self.agent.tools, self.agent.timeout)

    async def arun(self) -> list[BaseTool]:
        return await atools_of(self.agent.tools, self.agent.timeout)


def bind(
    model: BaseChatModel, agent: Agent, forced: bool = False, tools: list[BaseTool] | None = None
) -> Any:
    """`model` with `tools` bound (`forced`: its reply must be a call), or a ConfigError saying
    the model cannot call tools. Without `tools`, before a run: the agent's own tools, its MCP
    servers checked as far as they can be without starting them (a command not found)."""
    if tools is None:
        for server in agent.tools:
            if isinstance(server, MCPServer):
                server.check()
        tools = [tool for tool in agent.tools if isinstance(tool, BaseTool)]
    try:
        if forced:  # naming the one tool is understood by more servers than "required"
            choice = tools[0].name if len(tools) == 1 else "required"
            return model.bind_tools(tools, tool_choice=choice)
        return model.bind_tools(tools)
    except NotImplementedError:
        raise cannot_call_tools(agent, model) from None


def cannot_call_tools(agent: Agent, model: BaseChatModel) -> ConfigError:
    """The error for an agent with tools on a model that cannot call them."""
    return ConfigError(
        f"agent '{agent.name}' has tools, but its model ({type(model).__name__}) cannot call "
        "tools: use a model that supports tool calls (openai:..., or a chat model with bind_tools)"
    )


class _Loop:
    """What one turn's tool loop keeps: the calls made, the replies, whether the model was
    told about a malformed call."""

    def __init__(
        self,
        agent: Agent,
        answer_format: AnswerFormat,
        records: list[ToolCall],
        tools: list[BaseTool],
    ) -> None:
        self.agent = agent
        self.answer_format = answer_format
        """How the turn's answer is stated (repeated when the model is asked to answer) and
        read (to see whether the final reply has one)."""
        self.tools: dict[str, BaseTool] = {tool.name: tool for tool in tools}
        """The turn's tools by name (an MCP server's listed)."""
        self.records = records
        """The tool calls made so far (the caller's list, so a failed turn keeps them)."""
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
        """The final reply with the whole turn's usage."""
        update: dict[str, Any] = {}
        if isinstance(reply, AIMessage):
            update["usage_metadata"] = summed_usage(self.replies)
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


def tool_turn(
    ask: Ask, agent: Agent, answer_format: AnswerFormat, records: list[ToolCall]
) -> Generator[Ask | UseTool | LoadTools, Any, tuple[BaseMessage, int]]:
    """The loop: yields the listing of the agent's MCP servers' tools (if it has any), model
    calls (`ask` with the agent's tools bound, then with other messages) and tool calls,
    receives their replies and records; returns the final reply and how many model calls the
    turn made. Tool calls are appended to `records` as they are made."""
    model = ask.model
    assert isinstance(model, BaseChatModel)
    tools: list[BaseTool] = [tool for tool in agent.tools if isinstance(tool, BaseTool)]
    if len(tools) < len(agent.tools):
        tools = yield LoadTools(agent)
    bound, loop = bind(model, agent, tools=tools), _Loop(agent, answer_format, records, tools)
    forced = bind(model, agent, True, tools) if agent.tool_choice != "auto" else bound
    asker = (forced if agent.tool_choice == "first" else bound) if loop.may_call() else model
    conversation = list(ask.messages)
    while True:
        reply = yield ask.again(asker, list(conversation))
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
            return loop.finish(reply), len(loop.replies)
        conversation.append(reply)
        for request in requests:
            record = loop.unusable(request) or (yield UseTool(loop.tools[request["name"]], request))
            conversation.append(loop.shown(request, record))
        loop.after_calls(conversation)
        asker = bound if loop.may_call() else model


def summed_usage(replies: list[BaseMessage]) -> dict[str, int]:
    """The token usage of `replies` together."""
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for reply in replies:
        for key in usage:
            usage[key] += int((getattr(reply, "usage_metadata", None) or {}).get(key, 0))
    return usage


def _record(request: dict[str, Any], outcome: Any, started: float) -> ToolCall:
    seconds = round(time.perf_counter() - started, 4)
    name, arguments = request["name"], request.get("args") or {}
    if isinstance(outcome, Exception):
        error = f"{type(outcome).__name__}: {outcome}"
        return ToolCall(name=name, arguments=arguments, error=error, seconds=seconds)
    text = outcome if isinstance(outcome, str) else getattr(outcome, "content", None) or outcome
    return ToolCall(name=name, arguments=arguments, result=str(text), seconds=seconds)
