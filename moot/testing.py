"""A scripted chat model for exact, offline tests of protocol logic (and benchmarks of overhead).

It replies with whatever `respond` returns for the messages it is given, records every call,
reports word-count usage, and can sleep or fail on demand. It stands in for a real model only
where the model's content does not matter.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

Responder = Callable[[list[BaseMessage]], str]


class ScriptedChatModel(BaseChatModel):
    """Replies with `respond(messages)`; raise inside `respond` to simulate a failing model."""

    respond: Responder
    delay: float = 0.0
    """Seconds each call sleeps before replying (time.sleep when sync, asyncio.sleep when async)."""
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "moot-scripted"

    def __getstate__(self) -> dict[Any, Any]:
        """Pickles as its script (so Ray workers get a fresh copy); the calls stay here."""
        return {**super().__getstate__(), "__pydantic_private__": {}}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        object.__setattr__(self, "__pydantic_private__", {"_calls": [], "_lock": threading.Lock()})

    @property
    def calls(self) -> list[list[BaseMessage]]:
        """The messages of every call made so far, in call order."""
        return list(self._calls)

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            self._calls.append(list(messages))
        text = self.respond(messages)
        input_tokens = sum(len(message.text.split()) for message in messages)
        output_tokens = len(text.split())
        return AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay:
            time.sleep(self.delay)
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay:
            await asyncio.sleep(self.delay)
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        result = self._generate(messages, stop, run_manager, **kwargs)
        message = result.generations[0].message
        words = message.text.split(" ")
        for position, word in enumerate(words):
            piece = word if position == len(words) - 1 else word + " "
            if run_manager:
                run_manager.on_llm_new_token(piece)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=message.usage_metadata)  # type: ignore[attr-defined]
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        result = await self._agenerate(messages, stop, None, **kwargs)
        message = result.generations[0].message
        if run_manager:
            await run_manager.on_llm_new_token(message.text)
        yield ChatGenerationChunk(
            message=AIMessageChunk(content=message.text, usage_metadata=message.usage_metadata)  # type: ignore[attr-defined]
        )
