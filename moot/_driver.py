"""How a society runs: the one driver behind `run`, `arun`, `stream`, `astream`, `resume` and
`aresume`. It checks the question, compiles the protocol's graph (with a checkpointer when
asked), streams it with the agents' models as runtime context, and at each moderator pause asks
the moderator and resumes.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import uuid4

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StreamMode

from moot.cache import CallCache
from moot.checkpoints import (
    Moderation,
    Moderator,
    aheld_run,
    async_sqlite_saver,
    held_run,
    nothing_to_resume,
    serializer,
    sqlite_saver,
    thread_taken,
)
from moot.errors import ConfigError, ContextLengthError
from moot.graphs._runtime import RunContext, valid_text
from moot.graphs._tool_loop import bind

if TYPE_CHECKING:
    from moot.society import Society

RUN_MODES: list[StreamMode] = ["values"]
STREAM_MODES: list[StreamMode] = ["messages", "updates", "values"]
Checkpoint = str | Path | BaseCheckpointSaver[Any] | None
"""Where a run saves its turns: a SQLite file path or a LangGraph checkpointer (an async run
needs an async-capable one, such as AsyncSqliteSaver, or a path)."""
Graph = CompiledStateGraph[Any, RunContext, Any, Any]
Cache = str | Path | CallCache | None
"""Where identical model calls are answered from: a SQLite file path or a `CallCache`."""


def drive(
    society: Society,
    question: str | None,
    config: RunnableConfig | None,
    checkpoint: Checkpoint,
    thread_id: str | None,
    moderator: Moderator | None,
    modes: list[StreamMode] = RUN_MODES,
    fresh: bool = False,
    cache: Cache = None,
) -> Iterator[tuple[str, Any]]:
    """Stream the graph's parts; at each moderator pause, ask and resume (question None:
    resume a checkpointed run)."""
    if inspect.iscoroutinefunction(moderator):
        raise ConfigError("a sync run takes a sync moderator; use arun for async ones")
    run = _Run(society, question, config, thread_id, moderator, modes)
    with ExitStack() as stack:
        run.open_cache(cache, stack.callback)
        saver = run.saver(checkpoint, stack)
        if saver is not None:
            held = held_run(saver, run.thread)
            if question is None and held is None:
                raise nothing_to_resume(run.thread, _where(checkpoint))
            if question is not None and held is not None and not fresh:
                raise thread_taken(run.thread, held, _where(checkpoint))
            if question is not None and held is not None:
                saver.delete_thread(run.thread)
            if question is None and held is not None:
                run.resumes(held["question"])
        graph = run.graph(saver, asynchronous=False)
        config = run.sync_config()
        inputs: Any = run.inputs()
        while True:
            pause = None
            for mode, chunk in graph.stream(inputs, config, **run.stream_options(graph)):
                pause = run.pause_in(mode, chunk) or pause
                if mode in modes:
                    yield mode, chunk
            if pause is None:
                return
            decision = run.decide(pause, graph.get_state(run.config).values)
            if inspect.iscoroutine(decision):
                decision.close()
                raise ConfigError("a sync run takes a sync moderator; use arun for async ones")
            inputs = Command(resume=decision.model_dump())


async def adrive(
    society: Society,
    question: str | None,
    config: RunnableConfig | None,
    checkpoint: Checkpoint,
    thread_id: str | None,
    moderator: Moderator | None,
    modes: list[StreamMode] = RUN_MODES,
    fresh: bool = False,
    cache: Cache = None,
) -> AsyncIterator[tuple[str, Any]]:
    run = _Run(society, question, config, thread_id, moderator, modes)
    async with AsyncExitStack() as stack:
        run.open_cache(cache, stack.callback)
        path = checkpoint if isinstance(checkpoint, (str, Path)) else None
        saver = await stack.enter_async_context(async_sqlite_saver(path)) if path else None
        saver = run.saver(saver or checkpoint, None)
        if saver is not None:
            held = await aheld_run(saver, run.thread)
            if question is None and held is None:
                raise nothing_to_resume(run.thread, _where(checkpoint))
            if question is not None and held is not None and not fresh:
                raise thread_taken(run.thread, held, _where(checkpoint))
            if question is not None and held is not None:
                await saver.adelete_thread(run.thread)
            if question is None and held is not None:
                run.resumes(held["question"])
        graph = run.graph(saver, asynchronous=True)
        inputs: Any = run.inputs()
        while True:
            pause = None
            stream = graph.astream(inputs, run.config, **run.stream_options(graph))
            async for mode, chunk in stream:
                pause = run.pause_in(mode, chunk) or pause
                if mode in modes:
                    yield mode, chunk
            if pause is None:
                return
            decision = run.decide(pause, (await graph.aget_state(run.config)).values)
            if inspect.isawaitable(decision):
                decision = (await decision) or Moderation()
            inputs = Command(resume=decision.model_dump())


def _where(checkpoint: Checkpoint) -> str:
    return str(checkpoint) if isinstance(checkpoint, (str, Path)) else "the checkpointer"


def checked_context(society: Society, question: str, moderated: bool) -> RunContext:
    """Refuse what cannot run before any model is called."""
    if not question.strip():
        raise ConfigError("the question is empty: give the text of the question to answer")
    context = society.context(moderated, question)
    for agent, model in zip(society.agents, context.models, strict=True):
        if agent.tools:
            bind(model, agent)  # a model that cannot call tools is refused now
    first_prompt = society.protocol.first_prompt(question, context)
    checked: set[int] = set()
    for agent, model in zip(society.agents, context.models, strict=True):
        if id(model) not in checked:
            checked.add(id(model))
            _check_fits(model, agent.system_prompt() + "\n" + first_prompt)
    return context


class _Run:
    """What the sync and async drivers share: the run's config, context, checkpointer and the
    moderator's pauses."""

    def __init__(
        self,
        society: Society,
        question: str | None,
        config: RunnableConfig | None,
        thread_id: str | None,
        moderator: Moderator | None,
        modes: list[StreamMode],
    ) -> None:
        # Text must be valid Unicode to reach a model or a checkpoint (no lone surrogates).
        question = None if question is None else valid_text(question)
        self.society, self.question, self.thread_id = society, question, thread_id
        self.moderator = moderator
        moderated = moderator is not None
        # A new question is checked before anything is opened; a resumed run is not.
        self.context = (
            checked_context(society, question, moderated)
            if question is not None
            else society.context(moderated)
        )
        # max_concurrency also sizes LangGraph's thread pool, whose default (cores + 4) would
        # split a wide round into waves; a huge society must not start a thread per agent.
        defaults: RunnableConfig = {
            "recursion_limit": society.protocol.recursion_limit(society.agents),
            "max_concurrency": society.max_concurrency or min(len(society.agents), 16),
        }
        self.config: RunnableConfig = {**defaults, **(config or {})}
        self.calls_at_once = self.config["max_concurrency"] or 1
        # Moderator pauses arrive in "updates".
        self.modes = [*modes, "updates"] if moderated and "updates" not in modes else modes

    def resumes(self, question: str) -> None:
        """A resumed run answers its saved question in the format chosen for it."""
        answer_format = self.society.answer_format_for(question)
        self.context = replace(self.context, answer_format=answer_format)

    def sync_config(self) -> RunnableConfig:
        """The config of a sync run: its calls wait for one of `calls_at_once` slots, and
        LangGraph's pool gets a thread more, which its stream waiter takes while tokens stream
        (with exactly `max_concurrency` threads, one call at a time would never start)."""
        self.context = replace(self.context, slots=threading.BoundedSemaphore(self.calls_at_once))
        return {**self.config, "max_concurrency": self.calls_at_once + 1}

    def open_cache(self, cache: Cache, on_exit: Callable[[Callable[[], None]], Any]) -> None:
        """Give the run's agents the call cache; one opened here is closed by `on_exit`."""
        if cache is None:
            return
        opened = cache if isinstance(cache, CallCache) else CallCache(cache)
        if opened is not cache:
            on_exit(opened.close)
        self.context = replace(self.context, cache=opened)

    def saver(
        self, checkpoint: Checkpoint, stack: ExitStack | None
    ) -> BaseCheckpointSaver[Any] | None:
        """The checkpointer for `checkpoint`; a moderated run without one gets this run's
        memory (an interrupt needs a checkpointer)."""
        saver: BaseCheckpointSaver[Any] | None = None
        if isinstance(checkpoint, (str, Path)):
            assert stack is not None  # async runs open their paths themselves
            saver, connection = sqlite_saver(checkpoint)
            stack.callback(connection.close)
        elif checkpoint is not None:
            saver = checkpoint
        elif self.moderator is not None:
            saver, self.thread_id = InMemorySaver(serde=serializer()), self.thread_id or uuid4().hex
        if saver is not None:
            if self.thread_id is None:
                raise ConfigError(
                    "a checkpointed run needs a thread id: pass thread_id= (CLI: --thread)"
                )
            configurable = {**self.config.get("configurable", {}), "thread_id": self.thread_id}
            self.config["configurable"] = configurable
        return saver

    @property
    def thread(self) -> str:
        assert self.thread_id is not None  # set by saver() whenever there is a checkpointer
        return self.thread_id

    def graph(self, saver: BaseCheckpointSaver[Any] | None, *, asynchronous: bool) -> Graph:
        if saver is None:
            return self.society.compile(asynchronous=asynchronous)
        return self.society.compile(asynchronous=asynchronous, checkpointer=saver)

    def inputs(self) -> Any:
        return None if self.question is None else {"question": self.question}

    def stream_options(self, graph: Graph) -> dict[str, Any]:
        options: dict[str, Any] = {"context": self.context, "stream_mode": self.modes}
        if graph.checkpointer:
            # Save each finished turn before the next step starts (LangGraph 1.2 fails on
            # durability="sync" without a checkpointer).
            options["durability"] = "sync"
        return options

    def pause_in(self, mode: str, chunk: Any) -> dict[str, Any] | None:
        """The moderator pause this stream part announces, if any."""
        if mode == "updates" and isinstance(chunk, dict) and "__interrupt__" in chunk:
            interrupts = cast(dict[str, Any], chunk)["__interrupt__"]
            return cast(dict[str, Any], interrupts[0].value)
        return None

    def decide(self, pause: dict[str, Any], values: dict[str, Any]) -> Any:
        """The moderator's decision at `pause`, given the paused state's values (awaitable
        when the moderator is a coroutine function)."""
        assert self.moderator is not None  # only moderated runs pause
        turns = [turn for turn in values.get("turns", []) if turn.round == pause["round"]]
        return self.moderator(pause["round"], turns) or Moderation()


def _check_fits(model: BaseChatModel, prompt: str) -> None:
    """Raise if the first prompt alone fills a model whose context window is known."""
    window = getattr(model, "context_window", None)
    if not isinstance(window, int):
        return
    needed = model.get_num_tokens(prompt)
    if needed >= window:
        raise ContextLengthError(
            f"the question needs {needed} prompt tokens but the model's context window is "
            f"{window}: shorten the question or load the model with a larger n_ctx"
        )
