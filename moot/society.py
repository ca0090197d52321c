"""A society: agents, the protocol they follow, and how their answers are combined."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.graph import StateGraph
from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from moot._driver import STREAM_MODES, Cache, Checkpoint, Graph, adrive, drive
from moot.agents import Agent
from moot.aggregate.base import Aggregator, AnswerFormat
from moot.aggregate.extract import kind_for
from moot.aggregate.schema import SchemaAnswers
from moot.aggregate.vote import MajorityVote
from moot.checkpoints import Moderator
from moot.config import Config
from moot.events import Event, ResultEvent, events_of
from moot.graphs._runtime import RunContext
from moot.graphs.base import BaseProtocol
from moot.graphs.debate import Debate
from moot.result import Result, result_of_state

MAX_AGENTS = 1000
"""The most agents a society takes (a ceiling against typos like --agents 10000)."""


class Society(Config):
    """Agents that answer one question together under a protocol."""

    agents: list[Agent] = Field(min_length=1, max_length=MAX_AGENTS)
    """The participants, in order; order decides vote ties (at most 1,000)."""
    protocol: BaseProtocol = Field(default_factory=Debate)
    """How the agents interact: `Debate`, `MixtureOfAgents`, `CriticLoop`, `Router`,
    `Cascade`, `Pipeline`, or your own `moot.BaseProtocol`."""
    aggregator: Aggregator = Field(default_factory=MajorityVote)
    """How the final answer is chosen (a vote, `Judge`, `PairwiseRank`, or your own
    `moot.Aggregator`), and the answer format agents are asked for."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Most model calls in flight at once within a round (None: all agents of the round, up
    to 16)."""
    answer_schema: type[BaseModel] | None = None
    """Typed answers: a pydantic model each agent's answer must fill, given as a JSON object at
    the end of its reply (read leniently). `result.answer_object` is the winning instance; a
    reply that does not fit is an answer of None with the reason in `turn.answer_error`."""
    vote_on: str | None = None
    """With `answer_schema`: the field the vote compares (None: the whole object)."""

    _compiled: dict[bool, Graph] = PrivateAttr(default_factory=dict)

    @field_validator("agents")
    @classmethod
    def _names_are_unique(cls, agents: list[Agent]) -> list[Agent]:
        names = [agent.name for agent in agents]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"agent names must be unique; repeated: {', '.join(duplicates)}")
        return agents

    @model_validator(mode="after")
    def _protocol_fits(self) -> Society:
        if "aggregator" not in self.model_fields_set:
            self.aggregator = self.protocol.default_aggregator()
        self.protocol.check(self.agents, self.aggregator)
        if self.vote_on is not None and self.answer_schema is None:
            raise ValueError("vote_on names a field of answer_schema: give answer_schema too")
        if self.answer_schema is not None and not self.protocol.asks_in_answer_format():
            raise ValueError(
                "answer_schema needs prompts that ask for it, but this protocol asks in fixed "
                "words (a published prompt set): use moot's prompts for typed answers"
            )
        self.typed_answers()  # an unknown vote_on field fails here
        return self

    def typed_answers(self) -> SchemaAnswers | None:
        """The answer format of `answer_schema`, if the society has one."""
        if self.answer_schema is None:
            return None
        return SchemaAnswers(schema_=self.answer_schema, vote_on=self.vote_on)

    def graph(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        """The protocol's uncompiled LangGraph graph (with async agent nodes if asked)."""
        return self.protocol.build(asynchronous=asynchronous)

    def compile(self, *, asynchronous: bool = False, **compile_options: Any) -> Graph:
        """The compiled graph (cached when compiled without options, e.g. a checkpointer)."""
        if compile_options:
            return self.graph(asynchronous=asynchronous).compile(**compile_options)
        if asynchronous not in self._compiled:
            self._compiled[asynchronous] = self.graph(asynchronous=asynchronous).compile()
        return self._compiled[asynchronous]

    def answer_format_for(self, question: str | None) -> AnswerFormat | None:
        """How this society's agents answer `question`, where not simply the aggregator's
        format: typed answers, or the format "auto" chooses for the question (None: the
        aggregator's)."""
        typed = self.typed_answers()
        if typed is not None:
            return typed
        if self.aggregator.extract == "auto" and question is not None:
            return AnswerFormat(extract=kind_for(question))
        return None

    def format_name(self, question: str | None) -> str:
        """The name of the answer format of a run on `question` (shown with its result)."""
        chosen = self.answer_format_for(question) or self.aggregator
        if self.typed_answers() is not None:
            return "schema"
        return chosen.extract if isinstance(chosen.extract, str) else "custom"

    def context(self, moderated: bool = False, question: str | None = None) -> RunContext:
        """The runtime context: the agents' loaded models and the aggregator's."""
        return RunContext(
            agents=self.agents,
            models=[agent.chat_model() for agent in self.agents],
            aggregator=self.aggregator,
            aggregator_models={
                agent.name: agent.chat_model() for agent in self.aggregator.agents()
            },
            moderated=moderated,
            answer_format=self.answer_format_for(question),
        )

    # -- running ------------------------------------------------------------------------------
    # Every method takes: `config` (a LangChain RunnableConfig merged into the run's),
    # `checkpoint` (a SQLite file path or a LangGraph checkpointer) with `thread_id`, which saves
    # every finished turn so a killed run can resume, and `moderator`, called after each round
    # but the last, which may add a note for the agents or stop the debate. A new question on a
    # thread that already holds a run is refused, unless `fresh=True` clears the thread first.
    # `cache` (a SQLite file path or a `moot.CallCache`) answers identical seeded or greedy model
    # calls from earlier runs; hits are counted in `usage.cached_calls` and cost nothing.

    def run(
        self,
        question: str,
        *,
        config: RunnableConfig | None = None,
        checkpoint: Checkpoint = None,
        thread_id: str | None = None,
        moderator: Moderator | None = None,
        fresh: bool = False,
        cache: Cache = None,
    ) -> Result:
        """Run the society on `question` and return the full record."""
        parts = drive(
            self, question, config, checkpoint, thread_id, moderator, fresh=fresh, cache=cache
        )
        return self._last(parts)

    async def arun(
        self,
        question: str,
        *,
        config: RunnableConfig | None = None,
        checkpoint: Checkpoint = None,
        thread_id: str | None = None,
        moderator: Moderator | None = None,
        fresh: bool = False,
        cache: Cache = None,
    ) -> Result:
        """`run` for async code: a round's agents run as tasks."""
        parts = adrive(
            self, question, config, checkpoint, thread_id, moderator, fresh=fresh, cache=cache
        )
        return await self._alast(parts)

    def stream(
        self,
        question: str,
        *,
        config: RunnableConfig | None = None,
        checkpoint: Checkpoint = None,
        thread_id: str | None = None,
        moderator: Moderator | None = None,
        fresh: bool = False,
        cache: Cache = None,
    ) -> Iterator[Event]:
        """Tokens as agents write them, each finished turn, and finally the result."""
        final: dict[str, Any] = {}
        parts = drive(
            self, question, config, checkpoint, thread_id, moderator, STREAM_MODES, fresh, cache
        )
        for mode, chunk in parts:
            if mode == "values":
                final = chunk
            else:
                yield from events_of(mode, chunk)
        yield ResultEvent(result=self._result(final))

    async def astream(
        self,
        question: str,
        *,
        config: RunnableConfig | None = None,
        checkpoint: Checkpoint = None,
        thread_id: str | None = None,
        moderator: Moderator | None = None,
        fresh: bool = False,
        cache: Cache = None,
    ) -> AsyncIterator[Event]:
        """`stream` for async code."""
        final: dict[str, Any] = {}
        parts = adrive(
            self, question, config, checkpoint, thread_id, moderator, STREAM_MODES, fresh, cache
        )
        async for mode, chunk in parts:
            if mode == "values":
                final = chunk
            else:
                for event in events_of(mode, chunk):
                    yield event
        yield ResultEvent(result=self._result(final))

    def resume(
        self,
        *,
        checkpoint: Checkpoint,
        thread_id: str,
        config: RunnableConfig | None = None,
        moderator: Moderator | None = None,
        cache: Cache = None,
    ) -> Result:
        """Finish a checkpointed run: finished turns are kept, only the rest is run."""
        return self._last(drive(self, None, config, checkpoint, thread_id, moderator, cache=cache))

    async def aresume(
        self,
        *,
        checkpoint: Checkpoint,
        thread_id: str,
        config: RunnableConfig | None = None,
        moderator: Moderator | None = None,
        cache: Cache = None,
    ) -> Result:
        """`resume` for async code."""
        return await self._alast(
            adrive(self, None, config, checkpoint, thread_id, moderator, cache=cache)
        )

    def _last(self, parts: Iterator[tuple[str, Any]]) -> Result:
        final: dict[str, Any] = {}
        for _, chunk in parts:
            final = chunk
        return self._result(final)

    async def _alast(self, parts: AsyncIterator[tuple[str, Any]]) -> Result:
        final: dict[str, Any] = {}
        async for _, chunk in parts:
            final = chunk
        return self._result(final)

    # -- LangChain ----------------------------------------------------------------------------
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

    # -- helpers ------------------------------------------------------------------------------
    def _result(self, state: dict[str, Any]) -> Result:
        names = [self.agents[index].name for index in self.protocol.participants(self.agents)]
        details = {
            **self.protocol.details(state),
            **({"fallback": state["fallback"]} if state.get("fallback") else {}),
        }
        result = result_of_state(state, [agent.name for agent in self.agents], names, details)
        result.answer_format = self.format_name(state.get("question"))
        typed = self.typed_answers()
        if typed is None or result.answer is None:
            return result
        given = [turn for turn in result.turns if turn.answer == result.answer]
        if not given:  # an answer no turn gave (an aggregator's own): nothing to parse
            return result
        last = max(turn.round for turn in given)  # the latest round's first agent
        winner = next(turn for turn in given if turn.round == last)
        return result.model_copy(update={"answer_object": typed.parse(winner.text)})
