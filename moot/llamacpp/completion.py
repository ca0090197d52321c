"""Reading one request's chunks from an engine: as an iterator, an async iterator, or whole.

An engine hands chunks over from its worker thread through `request.emit`. A reader that stops
early (a halt, a closed stream, a cancelled task) cancels the request, which frees what it held
at the engine's next step.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any

from moot.llamacpp.cancel import Halt
from moot.llamacpp.chunks import Chunk
from moot.llamacpp.engine import Engine, Request

POLL = 0.05
"""Seconds between checks of the halt while no chunk comes (a request waiting its turn)."""


class Completion:
    """`request` on `engine`, submitted when reading begins; `halt` ends it early (the engine
    stops generating at the next token, the reader raises)."""

    def __init__(self, engine: Engine, request: Request, halt: Halt) -> None:
        self.engine = engine
        self.request = request
        self.halt = halt
        request.halted = halt.due

    def __iter__(self) -> Iterator[Chunk]:
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.request.emit = items.put
        self.engine.submit(self.request)
        try:
            while True:
                try:
                    item = items.get(timeout=POLL)
                except queue.Empty:
                    self.halt.raise_if_due()  # also while the request waits its turn
                    continue
                if not _is_chunk(item):
                    break
                yield item
            self.halt.raise_if_due()  # the generation was cut short
        finally:  # a reader that stopped early (halted, closed) frees the engine first
            self.engine.cancel(self.request, wait=True)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        """The chunks without a thread: the worker hands them to the event loop."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        self.request.emit = emit
        self.engine.submit(self.request)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(items.get(), timeout=POLL)
                except TimeoutError:
                    self.halt.raise_if_due()
                    continue
                if not _is_chunk(item):
                    break
                yield item
            self.halt.raise_if_due()
        finally:  # a cancelled task frees the engine now, or after the step in flight
            self.engine.cancel(self.request)

    async def whole(self) -> list[Chunk]:
        """Every chunk, the event loop woken once at the end rather than per token (with many
        concurrent calls, per-token wake-ups crowd a server's loop)."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[BaseException | None] = loop.create_future()
        chunks: list[Chunk] = []

        def settle(item: BaseException | None) -> None:
            if not ended.done():
                ended.set_result(item)

        def emit(item: Any) -> None:
            if item is None or isinstance(item, BaseException):
                loop.call_soon_threadsafe(settle, item)
            else:
                chunks.append(item)

        self.request.emit = emit
        self.engine.submit(self.request)
        try:
            while not ended.done():
                await asyncio.wait({ended}, timeout=POLL)
                if not ended.done():
                    self.halt.raise_if_due()
        finally:  # a cancelled task frees the engine now, or after the step in flight
            self.engine.cancel(self.request)
        if (error := ended.result()) is not None:
            raise error
        self.halt.raise_if_due()
        return chunks


def _is_chunk(item: Chunk | BaseException | None) -> bool:
    """True for a chunk, False at the end; an error the engine sent is raised here."""
    if isinstance(item, BaseException):
        raise item
    return item is not None
