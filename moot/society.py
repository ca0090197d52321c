"""A society: agents, the protocol they follow, and how their answers are combined."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, cast
from uuid import uuid4

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StreamMode
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from moot.agents import Agent
from moot.aggregate.vote import Aggregator, Judge, MajorityVote, PairwiseRank
from moot.checkpoints import Moderation, Moderator, serializer, sqlite_saver
from moot.errors import ConfigError, ContextLengthError
from moot.graphs._runtime import RunContext
from moot.graphs.cascade import Cascade
from moot.graphs.critic import CriticLoop
from moot.graphs.debate import Debate
from moot.graphs.moa import MixtureOfAgents
from moot.graphs.pipeline import Pipeline
from moot.graphs.router import Router
from moot.result import Result, Turn, Usage, round_stats

Protocol = Debate | MixtureOfAgents | CriticLoop | Router | Cascade | Pipeline


class TokenEvent(BaseModel):
    """A piece of an agent's reply, as the model streams it."""

    kind: Literal["token"] = "token"
    agent: str
    round: int
    text: str


class TurnEvent(BaseModel):
    """An agent finished its turn."""

    kind: Literal["turn"] = "turn"
    turn: Turn


class ResultEvent(BaseModel):
    """The run is over; always the last event."""

    kind: Literal["result"] = "result"
    result: Result


Event = TokenEvent | TurnEvent | ResultEvent
_STREAM_MODES: list[StreamMode] = ["messages", "updates", "values"]
_RUN_MODES: list[StreamMode] = ["values"]
Checkpoint = str | Path | BaseCheckpointSaver[Any] | None
"""Where a run saves its turns: a SQLite file path or a LangGraph checkpointer."""


class Society(BaseModel):
    """Agents that answer one question together under a protocol."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    agents: list[Agent] = Field(min_length=1)
    """The participants, in order; order decides vote ties."""
    protocol: Protocol = Field(default_factory=Debate)
    """How the agents interact: `Debate`, `MixtureOfAgents`, `CriticLoop`, `Router`,
    `Cascade` or `Pipeline`."""
    aggregator: Aggregator = Field(default_factory=MajorityVote)
    """How the final answer is chosen (`MajorityVote` or `Judge`), and the answer format."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Most model calls in flight at once within a round (None: all agents of the round)."""

    _compiled: dict[bool, CompiledStateGraph[Any, RunContext, Any, Any]] = PrivateAttr(
        default_factory=dict
    )

    @field_validator("agents")
    @classmethod
    def _names_are_unique(cls, agents: list[Agent]) -> list[Agent]:
        names = [agent.name for agent in agents]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"agent names must be unique; repeated: {', '.join(duplicates)}")
        return agents

    @model_validator(mode="after")
    def _protocol_fits_agents(self) -> Society:
        self.protocol.check(self.agents)
        if isinstance(self.protocol, Cascade) and not hasattr(self.aggregator, "choose"):
            raise ValueError("a cascade needs a vote (MajorityVote, WeightedVote, ConfidenceVote)")
        return self

    def graph(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        """The protocol's uncompiled LangGraph graph (with async agent nodes if asked)."""
        return self.protocol.build(asynchronous=asynchronous)

    def compile(
        self, *, asynchronous: bool = False, **compile_options: Any
    ) -> CompiledStateGraph[Any, RunContext, Any, Any]:
        """The compiled graph (cached when compiled without options, e.g. a checkpointer)."""
        if compile_options:
            return self.graph(asynchronous=asynchronous).compile(**compile_options)
        if asynchronous not in self._compiled:
            self._compiled[asynchronous] = self.graph(asynchronous=asynchronous).compile()
        return self._compiled[asynchronous]

    def context(self, moderated: bool = False) -> RunContext:
        """The runtime context: the agents' loaded models and the aggregator."""
        own = self.aggregator.agents() if isinstance(self.aggregator, (Judge, PairwiseRank)) else []
        return RunContext(
            agents=self.agents,
            models=[agent.chat_model() for agent in self.agents],
            aggregator=self.aggregator,
            aggregator_models={agent.name: agent.chat_model() for agent in own},
            moderated=moderated,
        )

    def run(
        self,
        question: str,
        *,
        config: RunnableConfig | None = None,
        checkpoint: Checkpoint = None,
        thread_id: str | None = None,
        moderator: Moderator | None = None,
    ) -> Result:
        """Run the society on `question` and return the full record.

        `checkpoint` (a SQLite file path, or any LangGraph checkpointer) with `thread_id` saves
        every finished turn, so a killed run can `resume`. `moderator` is called after each
        round (but the last) and may add a note for the agents or stop the debate.
        """
        return self._final(self._drive(question, config, checkpoint, thread_id, moderator))

    def resume(
        self,
        *,
        checkpoint: Checkpoint,
        thread_id: str,
        moderator: Moderator | None = None,
        config: RunnableConfig | None = None,
    ) -> Result:
        """Finish a checkpointed run: finished turns are kept, only the rest is run."""
        return self._final(self._drive(None, config, checkpoint, thread_id, moderator))

    def stream(
        self,
        question: str,
        *,
        config: RunnableConfig | None = None,
        checkpoint: Checkpoint = None,
        thread_id: str | None = None,
        moderator: Moderator | None = None,
    ) -> Iterator[Event]:
        """Tokens as agents write them, each finished turn, and finally the result."""
        parts = self._drive(question, config, checkpoint, thread_id, moderator, _STREAM_MODES)
        final: dict[str, Any] = {}
        for mode, chunk in parts:
            if mode == "values":
                final = chunk
            else:
                yield from _events(mode, chunk)
        yield ResultEvent(result=self._result(final))

    async def arun(
        self,
        question: str,
        *,
        config: RunnableConfig | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        thread_id: str | None = None,
    ) -> Result:
        """`run` for async code: agents of a round run as tasks (checkpointer: an async-capable
        LangGraph checkpointer such as AsyncSqliteSaver)."""
        final: dict[str, Any] = {}
        parts = self._adrive(question, config, checkpointer, thread_id, ["values"])
        async for _, chunk in parts:
            final = chunk
        return self._result(final)

    async def astream(
        self, question: str, *, config: RunnableConfig | None = None
    ) -> AsyncIterator[Event]:
        """`stream` for async code."""
        final: dict[str, Any] = {}
        async for mode, chunk in self._adrive(question, config, None, None, _STREAM_MODES):
            if mode == "values":
                final = chunk
            else:
                for event in _events(mode, chunk):
                    yield event
        yield ResultEvent(result=self._result(final))

    def _final(self, parts: Iterator[tuple[str, Any]]) -> Result:
        final: dict[str, Any] = {}
        for _, chunk in parts:
            final = chunk
        return self._result(final)

    def _drive(
        self,
        question: str | None,
        config: RunnableConfig | None,
        checkpoint: Checkpoint,
        thread_id: str | None,
        moderator: Moderator | None,
        modes: list[StreamMode] = _RUN_MODES,
    ) -> Iterator[tuple[str, Any]]:
        """Stream the graph's parts; at each moderator pause, ask and resume. None resumes."""
        moderated = moderator is not None
        context = self._checked_context(question, moderated) if question is not None else None
        with self._session(config, checkpoint, thread_id, moderated) as (graph, run_config):
            context = context or self.context(moderated)
            inputs: Any = None if question is None else {"question": question}
            while True:
                pause: dict[str, Any] | None = None
                for mode, chunk in graph.stream(
                    inputs,
                    run_config,
                    context=context,
                    stream_mode=_modes(modes, moderated),
                    **_durability(graph),
                ):
                    if mode == "updates" and "__interrupt__" in chunk:
                        interrupts = cast(dict[str, Any], chunk)["__interrupt__"]
                        pause = interrupts[0].value
                    elif mode in modes:
                        yield mode, chunk
                if pause is None or moderator is None:
                    return
                round_turns = [
                    turn
                    for turn in graph.get_state(run_config).values.get("turns", [])
                    if turn.round == pause["round"]
                ]
                decision = moderator(pause["round"], round_turns) or Moderation()
                inputs = Command(resume=decision.model_dump())

    async def _adrive(
        self,
        question: str,
        config: RunnableConfig | None,
        checkpointer: BaseCheckpointSaver[Any] | None,
        thread_id: str | None,
        modes: list[StreamMode],
    ) -> AsyncIterator[tuple[str, Any]]:
        context = self._checked_context(question, False)
        with self._session(config, checkpointer, thread_id, False, asynchronous=True) as session:
            graph, run_config = session
            async for mode, chunk in graph.astream(
                {"question": question},
                run_config,
                context=context,
                stream_mode=modes,
                **_durability(graph),
            ):
                yield mode, chunk

    @contextmanager
    def _session(
        self,
        config: RunnableConfig | None,
        checkpoint: Checkpoint,
        thread_id: str | None,
        moderated: bool,
        asynchronous: bool = False,
    ) -> Iterator[tuple[CompiledStateGraph[Any, RunContext, Any, Any], RunnableConfig]]:
        """The compiled graph and run config, with a checkpointer when one is needed."""
        run_config = self._config(config)
        connection = None
        saver: BaseCheckpointSaver[Any] | None = None
        if isinstance(checkpoint, (str, Path)):
            if asynchronous:
                raise ConfigError(
                    "an async run takes a checkpointer object (e.g. AsyncSqliteSaver), not a path"
                )
            saver, connection = sqlite_saver(checkpoint)
        elif checkpoint is not None:
            saver = checkpoint
        elif moderated:  # an interrupt needs a checkpointer; this run's memory will do
            saver, thread_id = InMemorySaver(serde=serializer()), thread_id or uuid4().hex
        if saver is None:
            yield self.compile(asynchronous=asynchronous), run_config
            return
        if thread_id is None:
            raise ConfigError(
                "a checkpointed run needs a thread id: pass thread_id= (CLI: --thread)"
            )
        run_config["configurable"] = {**run_config.get("configurable", {}), "thread_id": thread_id}
        try:
            yield self.compile(asynchronous=asynchronous, checkpointer=saver), run_config
        finally:
            if connection is not None:
                connection.close()

    def as_runnable(self, output: Literal["answer", "result"] = "answer") -> Runnable[Any, Any]:
        """This society as an LCEL Runnable (input: a question, prompt, messages or dict)."""
        from moot.integrations.langchain import as_runnable

        return as_runnable(self, output)

    def as_chat_model(self, name: str = "moot-society") -> BaseChatModel:
        """This society as a LangChain chat model that replies with its answer."""
        from moot.integrations.langchain import SocietyChatModel

        return SocietyChatModel(society=self, model_name=name)

    def as_tool(self, name: str, description: str) -> BaseTool:
        """This society as a tool that takes a question and returns the answer."""
        from moot.integrations.langchain import as_tool

        return as_tool(self, name, description)

    def _config(self, config: RunnableConfig | None) -> RunnableConfig:
        # max_concurrency also sizes LangGraph's thread pool, whose default (cores + 4) would
        # split a wide round into waves.
        merged: RunnableConfig = {
            "recursion_limit": self.protocol.recursion_limit(),
            "max_concurrency": self.max_concurrency or len(self.agents),
        }
        return {**merged, **(config or {})}

    def _checked_context(self, question: str, moderated: bool) -> RunContext:
        """Refuse what cannot run before any model is called."""
        if not question.strip():
            raise ConfigError("the question is empty: give the text of the question to answer")
        context = self.context(moderated)
        first_prompt = self.protocol.first_prompt(question, context)
        checked: set[int] = set()
        for agent, model in zip(self.agents, context.models, strict=True):
            if id(model) not in checked:
                checked.add(id(model))
                _check_fits(model, agent.system_prompt() + "\n" + first_prompt)
        return context

    def _result(self, state: dict[str, Any]) -> Result:
        order = {agent.name: index for index, agent in enumerate(self.agents)}
        last = len(order)  # a judge is not among the agents: its turn goes last
        turns = sorted(
            state.get("turns", []), key=lambda turn: (turn.round, order.get(turn.agent, last))
        )
        names = [self.agents[index].name for index in self.protocol.participants(self.agents)]
        return Result(
            question=state.get("question", ""),
            answer=state.get("answer"),
            turns=turns,
            usage=Usage.sum([turn.usage for turn in turns]),
            rounds=max((turn.round for turn in turns), default=0),
            stop_reason=state.get("stop_reason") or "rounds",
            conformity=round_stats(turns, names),
            details={key: state[key] for key in ("route", "tiers") if state.get(key)},
        )


def _modes(modes: list[StreamMode], moderated: bool) -> list[StreamMode]:
    """The stream modes to ask for: moderator pauses arrive in "updates"."""
    return [*modes, "updates"] if moderated and "updates" not in modes else modes


def _durability(graph: CompiledStateGraph[Any, RunContext, Any, Any]) -> dict[str, Any]:
    """Save each finished turn before the next step starts, when there is a checkpointer.

    (LangGraph 1.2 fails on durability="sync" without one.)
    """
    return {"durability": "sync"} if graph.checkpointer else {}


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


def _events(mode: str, chunk: Any) -> Iterator[Event]:
    if mode == "messages":
        message, metadata = chunk
        if "moot_agent" in metadata and message.text:
            yield TokenEvent(
                agent=metadata["moot_agent"], round=metadata["moot_round"], text=message.text
            )
    elif mode == "updates":
        for update in chunk.values():
            for turn in (update or {}).get("turns", []):
                yield TurnEvent(turn=turn)
