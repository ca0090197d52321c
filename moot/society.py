"""A society: agents, the protocol they follow, and how their answers are combined."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StreamMode
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from moot.agents import Agent
from moot.aggregate.vote import Aggregator, Judge, MajorityVote
from moot.errors import ConfigError, ContextLengthError
from moot.graphs._runtime import RunContext
from moot.graphs.critic import CriticLoop
from moot.graphs.debate import Debate
from moot.graphs.moa import MixtureOfAgents
from moot.result import Result, Turn, Usage, round_stats

Protocol = Debate | MixtureOfAgents | CriticLoop


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


class Society(BaseModel):
    """Agents that answer one question together under a protocol."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    agents: list[Agent] = Field(min_length=1)
    """The participants, in order; order decides vote ties."""
    protocol: Protocol = Field(default_factory=Debate)
    """How the agents interact: `Debate(...)`, `MixtureOfAgents(...)`, `CriticLoop(...)`."""
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

    def context(self) -> RunContext:
        """The runtime context: the agents' loaded models and the aggregator."""
        judge = self.aggregator.agent if isinstance(self.aggregator, Judge) else None
        return RunContext(
            agents=self.agents,
            models=[agent.chat_model() for agent in self.agents],
            aggregator=self.aggregator,
            judge_model=judge.chat_model() if judge else None,
        )

    def run(self, question: str, *, config: RunnableConfig | None = None) -> Result:
        """Run the society on `question` and return the full record."""
        context = self._checked_context(question)
        state = self.compile().invoke({"question": question}, self._config(config), context=context)
        return self._result(question, state)

    async def arun(self, question: str, *, config: RunnableConfig | None = None) -> Result:
        """`run` for async code: agents of a round run as tasks."""
        context = self._checked_context(question)
        state = await self.compile(asynchronous=True).ainvoke(
            {"question": question}, self._config(config), context=context
        )
        return self._result(question, state)

    def stream(self, question: str, *, config: RunnableConfig | None = None) -> Iterator[Event]:
        """Tokens as agents write them, each finished turn, and finally the result."""
        context = self._checked_context(question)
        final: dict[str, Any] = {}
        for mode, chunk in self.compile().stream(
            {"question": question}, self._config(config), context=context, stream_mode=_STREAM_MODES
        ):
            if mode == "values":
                final = cast(dict[str, Any], chunk)
            else:
                yield from _events(mode, chunk)
        yield ResultEvent(result=self._result(question, final))

    async def astream(
        self, question: str, *, config: RunnableConfig | None = None
    ) -> AsyncIterator[Event]:
        """`stream` for async code."""
        context = self._checked_context(question)
        final: dict[str, Any] = {}
        async for mode, chunk in self.compile(asynchronous=True).astream(
            {"question": question}, self._config(config), context=context, stream_mode=_STREAM_MODES
        ):
            if mode == "values":
                final = cast(dict[str, Any], chunk)
            else:
                for event in _events(mode, chunk):
                    yield event
        yield ResultEvent(result=self._result(question, final))

    def _config(self, config: RunnableConfig | None) -> RunnableConfig:
        # max_concurrency also sizes LangGraph's thread pool, whose default (cores + 4) would
        # split a wide round into waves.
        merged: RunnableConfig = {
            "recursion_limit": self.protocol.recursion_limit(),
            "max_concurrency": self.max_concurrency or len(self.agents),
        }
        return {**merged, **(config or {})}

    def _checked_context(self, question: str) -> RunContext:
        """Refuse what cannot run before any model is called."""
        if not question.strip():
            raise ConfigError("the question is empty: give the text of the question to answer")
        context = self.context()
        first_prompt = self.protocol.first_prompt(question, context)
        checked: set[int] = set()
        for agent, model in zip(self.agents, context.models, strict=True):
            if id(model) not in checked:
                checked.add(id(model))
                _check_fits(model, agent.system_prompt() + "\n" + first_prompt)
        return context

    def _result(self, question: str, state: dict[str, Any]) -> Result:
        order = {agent.name: index for index, agent in enumerate(self.agents)}
        last = len(order)  # a judge is not among the agents: its turn goes last
        turns = sorted(
            state.get("turns", []), key=lambda turn: (turn.round, order.get(turn.agent, last))
        )
        names = [self.agents[index].name for index in self.protocol.participants(self.agents)]
        return Result(
            question=question,
            answer=state.get("answer"),
            turns=turns,
            usage=Usage.sum([turn.usage for turn in turns]),
            rounds=max((turn.round for turn in turns), default=0),
            stop_reason=state.get("stop_reason") or "rounds",
            conformity=round_stats(turns, names),
        )


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
