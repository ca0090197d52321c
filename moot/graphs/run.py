"""One run of a society: the object that owns it from the question to the result.

Every way to run a society (`run`, `arun`, `stream`, `astream`, `resume`, `aresume`) takes the
same keywords, `RunOptions`, and makes a `Run` of the society's parts with them. The run checks
the question before any model is called, opens the call cache and the checkpointer, builds its
context (the agents' models and the `CallRunner` that makes their calls) and takes its graph
from the protocol, streams it (sync or async), asks the moderator at each pause and resumes,
and builds the `Result` from the final state.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast
from uuid import uuid4

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, StreamMode

from moot.agents import Agent
from moot.aggregate.extract import kind_for
from moot.aggregate.format import AnswerFormat
from moot.aggregate.schema import SchemaAnswers
from moot.cache import CallCache
from moot.checkpoints import (
    Moderation,
    Moderator,
    aheld_run,
    async_saver,
    check_storable,
    database_errors,
    held_run,
    nothing_to_resume,
    open_saver,
    serializer,
    thread_taken,
)
from moot.errors import ConfigError, ContextLengthError
from moot.events import Event, ResultEvent, events_of
from moot.graphs._runtime import CallRunner
from moot.graphs._tool_loop import bind, cannot_call_tools
from moot.graphs.base import BaseProtocol, Graph
from moot.graphs.helpers import valid_text
from moot.graphs.types import Aggregator, RunContext
from moot.result import Result, result_of_state

Checkpoint = str | Path | BaseCheckpointSaver[Any] | None
"""Where a run saves its turns: a SQLite file path, a PostgreSQL database's `postgresql://` URL
(shared by processes and machines), or a LangGraph checkpointer (an async run needs an
async-capable one, such as AsyncSqliteSaver, or a path or URL)."""
Cache = str | Path | CallCache | None
"""Where identical model calls are answered from: a SQLite file path or a `CallCache`."""


class RunOptions(TypedDict, total=False):
    """How one run goes: the keywords every way to run a society takes."""

    config: RunnableConfig
    """A LangChain config merged into the run's (callbacks, tags, metadata, limits)."""
    checkpoint: Checkpoint
    """Where every finished turn is saved, so that a killed run can resume (`resume`)."""
    thread_id: str
    """The run's thread in the checkpoint (needed with one)."""
    moderator: Moderator
    """Called after each round but the last; may add a note for the agents or stop the
    debate."""
    fresh: bool
    """Start over on a thread that already holds a run, which is refused otherwise."""
    cache: Cache
    """Answers identical seeded or greedy model calls from earlier runs; hits are counted in
    `usage.cached_calls` and cost nothing."""


class CompiledGraphs:
    """Compiled graphs by protocol object, the `size` latest kept: compiling costs more than
    a short run's turns. A protocol's graph is built once per protocol object (a copy is
    another object, with a graph of its own)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._graphs: OrderedDict[tuple[int, bool], tuple[BaseProtocol, Graph]] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, protocol: BaseProtocol, *, asynchronous: bool) -> Graph:
        key = (id(protocol), asynchronous)
        with self._lock:
            known = self._graphs.get(key)
            if known is not None and known[0] is protocol:  # (held here: its id is its own)
                self._graphs.move_to_end(key)
                return known[1]
        graph = protocol.build(asynchronous=asynchronous).compile()
        with self._lock:
            self._graphs[key] = (protocol, graph)
            while len(self._graphs) > self.size:
                self._graphs.popitem(last=False)
        return graph


GRAPHS = CompiledGraphs()
"""The graphs runs without a checkpointer use (one with a checkpointer compiles its own)."""
_OPTIONS = frozenset(RunOptions.__optional_keys__)
_WATCHED: list[StreamMode] = ["values"]
STREAM_MODES: list[StreamMode] = ["messages", "updates", "values"]
"""What `stream` watches: tokens (split by agent), each node's update, the state."""


@dataclass
class Run:
    """One run of a society's graph."""

    agents: list[Agent]
    """The society's agents, in order."""
    protocol: BaseProtocol
    """How they interact; it builds the graph."""
    aggregator: Aggregator
    """How the final answer is chosen."""
    typed: SchemaAnswers | None
    """The answer format of typed answers (`Society.answer_schema`), if any."""
    max_concurrency: int | None
    """Most model calls in flight at once (None: all agents of a round, up to 16)."""
    question: str | None
    """The question; None resumes the run saved under the options' thread."""
    options: RunOptions = field(default_factory=lambda: RunOptions())
    modes: list[StreamMode] = field(default_factory=lambda: list(_WATCHED))
    """The stream parts handed on (`stream` wants tokens and updates too)."""
    runner: CallRunner = field(default_factory=CallRunner)
    """Makes the run's calls, with its call cache; a sync run's also bounds them."""
    resumed: bool = field(default=False, init=False)
    """Whether the run continues one saved in its checkpoint."""

    # -- reading it -----------------------------------------------------------------------------

    def result(self) -> Result:
        """Run to the end (`Society.run`, `resume`) and give the full record."""
        final: dict[str, Any] = {}
        for _, chunk in self._parts():
            final = chunk
        return self._result(final)

    async def aresult(self) -> Result:
        """`result` for async code: a round's agents run as tasks."""
        final: dict[str, Any] = {}
        async for _, chunk in self._aparts():
            final = chunk
        return self._result(final)

    def events(self) -> Iterator[Event]:
        """Tokens as agents write them, each finished turn, and finally the result."""
        final: dict[str, Any] = {}
        for mode, chunk in self._parts():
            if mode == "values":
                final = chunk
            else:
                yield from events_of(mode, chunk)
        yield ResultEvent(result=self._result(final))

    async def aevents(self) -> AsyncIterator[Event]:
        """`events` for async code."""
        final: dict[str, Any] = {}
        async for mode, chunk in self._aparts():
            if mode == "values":
                final = chunk
            else:
                for event in events_of(mode, chunk):
                    yield event
        yield ResultEvent(result=self._result(final))

    # -- before any call ----------------------------------------------------------------------

    def check(self) -> RunContext:
        """The context of a run on the question, or the error that refuses it before any model
        is called (no question, a model that cannot call the agent's tools, a first prompt that
        fills a model's context window)."""
        question = valid_text(self.question or "")
        if not question.strip():
            raise ConfigError("the question is empty: give the text of the question to answer")
        context = self.context(question)
        for agent, model in zip(self.agents, context.models, strict=True):
            if agent.tools and not self.runner.profile(model).tool_calling:
                raise cannot_call_tools(agent, model)
            if agent.tools:
                bind(model, agent)  # the model may still refuse these tools (its template)
        first_prompt = self.protocol.first_prompt(question, context)
        checked: set[int] = set()
        for agent, model in zip(self.agents, context.models, strict=True):
            window = self.runner.profile(model).context_window
            if window is None or id(model) in checked:
                continue
            checked.add(id(model))
            needed = model.get_num_tokens(agent.system_prompt() + "\n" + first_prompt)
            if needed >= window:
                raise ContextLengthError(
                    f"the question needs {needed} prompt tokens but the model's context window "
                    f"is {window}: shorten the question or load the model with a larger n_ctx"
                )
        return context

    def context(self, question: str | None) -> RunContext:
        """The runtime context: the agents' loaded models and the aggregator's, and the run's
        call runner."""
        return RunContext(
            agents=self.agents,
            models=[agent.chat_model() for agent in self.agents],
            aggregator=self.aggregator,
            caller=self.runner,
            aggregator_models={
                agent.name: agent.chat_model() for agent in self.aggregator.agents()
            },
            moderated=self.options.get("moderator") is not None,
            answer_format=self.answer_format(question),
        )

    def answer_format(self, question: str | None) -> AnswerFormat | None:
        """How the agents answer `question`, where not simply the aggregator's way: typed
        answers, or the format "auto" chooses for the question."""
        if self.typed is not None:
            return self.typed
        if self.aggregator.extract == "auto" and question is not None:
            return AnswerFormat(extract=kind_for(question))
        return None

    def format_name(self, question: str | None) -> str:
        """The name of the answer format of a run on `question` (shown with its result)."""
        if self.typed is not None:
            return "schema"
        chosen = self.answer_format(question) or self.aggregator
        return chosen.extract if isinstance(chosen.extract, str) else "custom"

    # -- streaming ----------------------------------------------------------------------------

    def _parts(self) -> Iterator[tuple[str, Any]]:
        """The graph's stream parts, sync; at each moderator pause, ask and resume."""
        if inspect.iscoroutinefunction(self.options.get("moderator")):
            raise ConfigError("a sync run takes a sync moderator; use arun for async ones")
        context = self._begin()
        with ExitStack() as stack:
            self._open_cache(stack)
            checkpoint: Any = self.options.get("checkpoint")
            stack.enter_context(database_errors(checkpoint))
            if isinstance(checkpoint, (str, Path)):
                checkpoint, connection = open_saver(checkpoint)
                stack.callback(connection.close)
            saver = self._saver(checkpoint)
            if saver is not None and self._claim(held_run(saver, self._thread)):
                saver.delete_thread(self._thread)
            graph, config, options = self._start(saver, context, asynchronous=False)
            inputs: Any = None if self.resumed else {"question": self.question}
            while True:
                pause = None
                for mode, chunk in graph.stream(inputs, config, **options):
                    pause = _pause_in(mode, chunk) or pause
                    if mode in self.modes:
                        yield mode, chunk
                if pause is None:
                    return
                decision = self._decide(pause, graph.get_state(config).values)
                if inspect.iscoroutine(decision):
                    decision.close()
                    raise ConfigError("a sync run takes a sync moderator; use arun for async ones")
                inputs = Command(resume=decision.model_dump())

    async def _aparts(self) -> AsyncIterator[tuple[str, Any]]:
        context = self._begin()
        async with AsyncExitStack() as stack:
            self._open_cache(stack)
            checkpoint: Any = self.options.get("checkpoint")
            stack.enter_context(database_errors(checkpoint))
            if isinstance(checkpoint, (str, Path)):
                checkpoint = await stack.enter_async_context(async_saver(checkpoint))
            saver = self._saver(checkpoint)
            if saver is not None and self._claim(await aheld_run(saver, self._thread)):
                await saver.adelete_thread(self._thread)
            graph, config, options = self._start(saver, context, asynchronous=True)
            inputs: Any = None if self.resumed else {"question": self.question}
            while True:
                pause = None
                async for mode, chunk in graph.astream(inputs, config, **options):
                    pause = _pause_in(mode, chunk) or pause
                    if mode in self.modes:
                        yield mode, chunk
                if pause is None:
                    return
                decision = self._decide(pause, (await graph.aget_state(config)).values)
                if inspect.isawaitable(decision):
                    decision = (await decision) or Moderation()
                inputs = Command(resume=decision.model_dump())

    def _begin(self) -> RunContext | None:
        """Check the options, and a new question before anything is opened (a resumed run's
        question is read from its checkpoint)."""
        unknown = sorted(set(self.options) - _OPTIONS)
        if unknown:
            raise TypeError(f"a run got an unexpected keyword argument {unknown[0]!r}")
        if self.options.get("moderator") is not None and not self.protocol.takes_moderator():
            raise ConfigError(
                f"{type(self.protocol).__name__} has no rounds for a moderator to pause between "
                "(a Debate or MixtureOfAgents does): leave out the moderator (--moderate)"
            )
        if self.question is None:
            self.resumed = True
            if self.options.get("checkpoint") is None:
                raise ConfigError("resume needs the run's checkpoint= and thread_id=")
            if self.options.get("fresh"):
                raise ConfigError("fresh=True starts a run over: give the question (run)")
            check_storable(self.options.get("checkpoint"), self.options.get("thread_id"))
            return None
        # Text must be valid Unicode to reach a model or a checkpoint (no lone surrogates).
        self.question = valid_text(self.question)
        check_storable(self.options.get("checkpoint"), self.options.get("thread_id"), self.question)
        return self.check()

    def _open_cache(self, stack: ExitStack | AsyncExitStack) -> None:
        """Give the run the call cache; one opened here is closed with the run."""
        cache = self.options.get("cache")
        if cache is None:
            return
        opened = cache if isinstance(cache, CallCache) else CallCache(cache)
        if opened is not cache:
            stack.callback(opened.close)
        self.runner.cache = opened

    def _saver(self, saver: BaseCheckpointSaver[Any] | None) -> BaseCheckpointSaver[Any] | None:
        """The run's checkpointer; a moderated run without one gets this run's memory (an
        interrupt needs a checkpointer)."""
        if saver is None and self.options.get("moderator") is not None:
            saver = InMemorySaver(serde=serializer())
            self.options["thread_id"] = self.options.get("thread_id") or uuid4().hex
        if saver is not None and self.options.get("thread_id") is None:
            raise ConfigError(
                "a checkpointed run needs a thread id: pass thread_id= (CLI: --thread)"
            )
        return saver

    @property
    def _thread(self) -> str:
        return self.options.get("thread_id") or ""

    def _claim(self, held: dict[str, Any] | None) -> bool:
        """Check the thread against the run saved on it (`held`); True when a fresh start must
        clear it first. A resumed run takes its question from it."""
        where = self.options.get("checkpoint")
        where = str(where) if isinstance(where, (str, Path)) else "the checkpointer"
        if self.question is None:
            if held is None:
                raise nothing_to_resume(self._thread, where)
            self.question = held["question"]
            return False
        if held is not None and not self.options.get("fresh"):
            raise thread_taken(self._thread, held, where)
        return held is not None

    def _start(
        self,
        saver: BaseCheckpointSaver[Any] | None,
        context: RunContext | None,
        *,
        asynchronous: bool,
    ) -> tuple[Graph, RunnableConfig, dict[str, Any]]:
        """The compiled graph, its config and how to stream it."""
        # max_concurrency also sizes LangGraph's thread pool, whose default (cores + 4) would
        # split a wide round into waves; a huge society must not start a thread per agent.
        config: RunnableConfig = {
            "recursion_limit": self.protocol.recursion_limit(self.agents),
            "max_concurrency": self.max_concurrency or min(len(self.agents), 16),
            **(self.options.get("config") or {}),
        }
        if not asynchronous:
            # A sync run's calls wait for one of `max_concurrency` slots, and LangGraph's pool
            # gets a thread more, which its stream waiter takes while tokens stream (with
            # exactly `max_concurrency` threads, one call at a time would never start).
            calls = config.get("max_concurrency") or 1
            self.runner.slots = threading.BoundedSemaphore(calls)
            config["max_concurrency"] = calls + 1
        context = context or self.context(self.question)
        modes = self.modes
        if context.moderated and "updates" not in modes:
            modes = [*modes, "updates"]  # moderator pauses arrive there
        options: dict[str, Any] = {"context": context, "stream_mode": modes}
        if saver is None:
            return GRAPHS.of(self.protocol, asynchronous=asynchronous), config, options
        config["configurable"] = {**config.get("configurable", {}), "thread_id": self._thread}
        # Save each finished turn before the next step starts (LangGraph fails on
        # durability="sync" without a checkpointer).
        options["durability"] = "sync"
        graph = self.protocol.build(asynchronous=asynchronous).compile(checkpointer=saver)
        return graph, config, options

    def _decide(self, pause: dict[str, Any], values: dict[str, Any]) -> Any:
        """The moderator's decision at `pause`, given the paused state's values (awaitable
        when the moderator is a coroutine function)."""
        moderator = self.options.get("moderator")
        assert moderator is not None  # only moderated runs pause
        turns = [turn for turn in values.get("turns", []) if turn.round == pause["round"]]
        return moderator(pause["round"], turns) or Moderation()

    # -- after the last step ------------------------------------------------------------------

    def _result(self, state: dict[str, Any]) -> Result:
        agents, protocol = self.agents, self.protocol
        names = [agents[index].name for index in protocol.participants(agents)]
        details = {
            **protocol.details(state),
            **({"fallback": state["fallback"]} if state.get("fallback") else {}),
        }
        result = result_of_state(state, [agent.name for agent in agents], names, details)
        result.answer_format = self.format_name(state.get("question"))
        if self.typed is None or result.answer is None:
            return result
        given = [turn for turn in result.turns if turn.answer == result.answer]
        if not given:  # an answer no turn gave (an aggregator's own): nothing to parse
            return result
        last = max(turn.round for turn in given)  # the latest round's first agent
        winner = next(turn for turn in given if turn.round == last)
        return result.model_copy(update={"answer_object": self.typed.parse(winner.text)})


def _pause_in(mode: str, chunk: Any) -> dict[str, Any] | None:
    """The moderator pause this stream part announces, if any."""
    if mode == "updates" and isinstance(chunk, dict) and "__interrupt__" in chunk:
        interrupts = cast(dict[str, Any], chunk)["__interrupt__"]
        return cast(dict[str, Any], interrupts[0].value)
    return None
