"""Scripted chat models for exact, offline tests of protocol logic (and benchmarks of overhead).

`ScriptedChatModel` replies with whatever `respond` returns, records every call, reports
word-count usage, and can sleep or fail on demand. `respond` takes the messages, and may take a
`CallInfo` too: which agent calls in which round (as moot tags its calls), so a test can script
each agent without reading prompts. The model spec "test" gives one from the command line. It
stands in for a real model only where the model's content does not matter.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr


@dataclass(frozen=True)
class CallInfo:
    """Who a call is for, from the tags moot puts on every agent's call."""

    agent: str | None
    """The calling agent's name (None when the model is called outside a society)."""
    round: int | None
    """The round of the turn (None outside a society)."""
    number: int
    """How many calls this model had before this one."""


Responder = (
    Callable[[list[BaseMessage]], str | AIMessage]
    | Callable[[list[BaseMessage], CallInfo], str | AIMessage]
)
"""Returns the reply's text, or an AIMessage (e.g. one with `tool_calls`)."""
Stop = list[str] | None
Manager = CallbackManagerForLLMRun | None
AManager = AsyncCallbackManagerForLLMRun | None
_call_metadata: ContextVar[dict[str, Any] | None] = ContextVar("moot_call_metadata", default=None)
"""The metadata of the call in progress (LangChain hands streaming methods no run manager)."""


class ScriptedChatModel(BaseChatModel):
    """Replies with `respond(messages)` or `respond(messages, info)`; raise inside `respond` to
    simulate a failing model."""

    respond: Responder
    delay: float = 0.0
    """Seconds each call sleeps before replying (time.sleep when sync, asyncio.sleep when async)."""
    keep_calls: bool = True
    """Record every call's messages in `calls` (the "test" spec does not: a long debate's
    calls would fill memory with the square of its rounds)."""
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _count: int = PrivateAttr(default=0)
    _bound_tools: list[str] = PrivateAttr(default_factory=list)
    _tool_choices: list[str | None] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "moot-scripted"

    def __getstate__(self) -> dict[Any, Any]:
        """Pickles as its script (so Ray workers get a fresh copy); the calls stay here."""
        return {**super().__getstate__(), "__pydantic_private__": {}}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        object.__setattr__(
            self,
            "__pydantic_private__",
            {
                "_calls": [],
                "_count": 0,
                "_bound_tools": [],
                "_tool_choices": [],
                "_lock": threading.Lock(),
            },
        )

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        token = _call_metadata.set(dict((config or {}).get("metadata") or {}))
        try:
            return super().invoke(input, config, **kwargs)
        finally:
            _call_metadata.reset(token)

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        token = _call_metadata.set(dict((config or {}).get("metadata") or {}))
        try:
            return await super().ainvoke(input, config, **kwargs)
        finally:
            _call_metadata.reset(token)

    @property
    def calls(self) -> list[list[BaseMessage]]:
        """The messages of every call made so far, in call order (empty with keep_calls off)."""
        return list(self._calls)

    @property
    def call_count(self) -> int:
        """How many calls were made, kept or not."""
        return self._count

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        """Accept tools as a tool-calling model does; `respond` decides what to call (it sees
        the conversation, tool results included). The tools bound last are kept in
        `bound_tools`."""
        self._bound_tools = [getattr(tool, "name", str(tool)) for tool in tools]
        self._tool_choices.append(kwargs.get("tool_choice"))
        return self

    @property
    def tool_choices(self) -> list[str | None]:
        """The `tool_choice` of every bind_tools call, in order."""
        return list(self._tool_choices)

    @property
    def bound_tools(self) -> list[str]:
        return list(self._bound_tools)

    def _reply(self, messages: list[BaseMessage], metadata: dict[str, Any]) -> AIMessage:
        metadata = {**(_call_metadata.get() or {}), **metadata}
        with self._lock:
            number = self._count
            self._count += 1
            if self.keep_calls:
                self._calls.append(list(messages))
        if _takes_info(self.respond):
            info = CallInfo(metadata.get("moot_agent"), metadata.get("moot_round"), number)
            said = self.respond(messages, info)  # type: ignore[call-arg]
        else:
            said = self.respond(messages)  # type: ignore[call-arg]
        reply = said if isinstance(said, AIMessage) else AIMessage(content=said)
        input_tokens = sum(len(message.text.split()) for message in messages)
        output_tokens = len(reply.text.split()) + len(reply.tool_calls)
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        return reply.model_copy(update={"usage_metadata": usage})

    def _generate(
        self, messages: list[BaseMessage], stop: Stop = None, run_manager: Manager = None, **_: Any
    ) -> ChatResult:
        if self.delay:
            time.sleep(self.delay)
        return self._result(messages, run_manager)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Stop = None, run_manager: AManager = None, **_: Any
    ) -> ChatResult:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._result(messages, run_manager)

    def _result(self, messages: list[BaseMessage], run_manager: Any) -> ChatResult:
        reply = self._reply(messages, run_manager.metadata if run_manager else {})
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: Stop = None,
        run_manager: Manager = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
        for chunk, token in _chunks(reply, by_word=True):
            if run_manager and token is not None:
                run_manager.on_llm_new_token(token)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: Stop = None,
        run_manager: AManager = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        reply = (
            (await self._agenerate(messages, stop, run_manager, **kwargs)).generations[0].message
        )
        for chunk, token in _chunks(reply, by_word=False):
            if run_manager and token is not None:
                await run_manager.on_llm_new_token(token)
            yield chunk


def _chunks(reply: BaseMessage, *, by_word: bool) -> list[tuple[ChatGenerationChunk, str | None]]:
    """A whole reply as stream chunks, each with the token text it announces: word by word
    (then its usage), or all at once; a reply with tool calls comes as one chunk."""
    assert isinstance(reply, AIMessage)
    if reply.tool_calls or reply.invalid_tool_calls:
        return [(ChatGenerationChunk(message=_as_chunk(reply)), None)]
    usage = reply.usage_metadata
    if not by_word:
        whole = AIMessageChunk(content=reply.text, usage_metadata=usage)
        return [(ChatGenerationChunk(message=whole), reply.text)]
    words = reply.text.split(" ")
    pieces = [word + " " for word in words[:-1]] + words[-1:]
    chunks = [
        (ChatGenerationChunk(message=AIMessageChunk(content=piece)), piece) for piece in pieces
    ]
    last = AIMessageChunk(content="", usage_metadata=usage)
    return [*chunks, (ChatGenerationChunk(message=last), None)]


def _as_chunk(message: AIMessage) -> AIMessageChunk:
    """A whole reply with tool calls as one stream chunk (its calls as tool-call chunks)."""
    pieces = [
        tool_call_chunk(name=call["name"], args=json.dumps(call["args"]), id=call["id"], index=i)
        for i, call in enumerate(message.tool_calls)
    ]
    pieces += [
        tool_call_chunk(name=bad.get("name"), args=bad.get("args"), id=bad.get("id"), index=i)
        for i, bad in enumerate(message.invalid_tool_calls, start=len(pieces))
    ]
    return AIMessageChunk(
        content=message.content, tool_call_chunks=pieces, usage_metadata=message.usage_metadata
    )


def _takes_info(respond: Responder) -> bool:
    """Whether `respond` has a second required parameter, for the CallInfo."""
    required = [
        parameter
        for parameter in inspect.signature(respond).parameters.values()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) >= 2


def test_model(reply: str = "", **options: Any) -> ScriptedChatModel:
    """The model of the spec "test" (or "test:REPLY"): it replies REPLY, or by default names
    the agent and round and answers 42. Options: `delay` (seconds per call)."""

    def respond(messages: list[BaseMessage], info: CallInfo) -> str:
        if reply:
            return reply
        return f"{info.agent or 'model'} in round {info.round or 1}: 40 + 2.\nAnswer: 42"

    return ScriptedChatModel(respond=respond, **{"keep_calls": False, **options})


test_model.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
