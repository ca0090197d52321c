"""A society: agents, the protocol they follow, and how their answers are combined."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Literal, Unpack

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.graph import StateGraph
from pydantic import BaseModel, Field, field_validator, model_validator

from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.aggregate.schema import SchemaAnswers
from moot.aggregate.vote import MajorityVote
from moot.config import Config
from moot.events import Event
from moot.graphs.base import BaseProtocol
from moot.graphs.debate import Debate
from moot.graphs.run import STREAM_MODES, Run, RunOptions
from moot.graphs.types import RunContext
from moot.result import Result
from moot.spec import MAX_AGENTS, SocietySpec, society_fields, spec_of


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

    @field_validator("agents")
    @classmethod
    def _names_are_unique(cls, agents: list[Agent]) -> list[Agent]:
        counts = Counter(agent.name for agent in agents)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(f"agent names must be unique; repeated: {', '.join(repeated)}")
        return agents

    @model_validator(mode="after")
    def _protocol_fits(self) -> Society:
        if "aggregator" not in self.model_fields_set:
            self.aggregator = self.protocol.default_aggregator()
        self.protocol.check(self.agents, self.aggregator)
        programs = [agent.name for agent in self.agents if agent.kind == "program"]
        if programs and not self.protocol.asks_for_programs():
            raise ValueError(
                f"{type(self.protocol).__name__} never asks an agent for a program, so program "
                f"agents {', '.join(programs)} would fail every turn: run them in a Debate, "
                "Cascade or Router (a protocol of your own that asks for programs: override "
                "asks_for_programs)"
            )
        deciders = [a.name for a in self.aggregator.agents() if a.kind == "program"]
        if deciders:
            raise ValueError(
                f"{type(self.aggregator).__name__}'s {', '.join(deciders)} is a program agent, "
                "but judges and fusers are asked in words, never for a program: give it kind text"
            )
        if programs and self.answer_schema is not None:
            raise ValueError(
                f"program agents {', '.join(programs)} print one value, but answer_schema asks "
                "for an object of fields: drop answer_schema, or make them text agents"
            )
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

    @classmethod
    def from_spec(
        cls, spec: SocietySpec | Mapping[str, Any], *, model: str | BaseChatModel | None = None
    ) -> Society:
        """The society a spec (or a society file's mapping) describes; `model` replaces every
        agent's model."""
        return cls(**society_fields(spec, model=model))

    def to_spec(self) -> SocietySpec:
        """This society as data: `Society.from_spec(society.to_spec())` builds it again, and
        `to_spec().file_data()` is what a society file holds."""
        return spec_of(self)

    def check(self, question: str) -> None:
        """Refuse a question that cannot run, before any model is called (as every run does
        first): an empty one, or one whose first prompt fills a model's context window."""
        self._run(question, {}).check()

    def context(self, question: str | None = None) -> RunContext:
        """The runtime context of a run on `question`: the agents' loaded models and the
        aggregator's."""
        return self._run(question, {}).context(question)

    # -- running ------------------------------------------------------------------------------
    # Every way to run takes the same keywords, `RunOptions` (moot.graphs.run): `config`,
    # `checkpoint` and `thread_id` (every finished turn is saved, so a killed run can resume),
    # `moderator` (called after each round but the last), `fresh` (start a thread's run over)
    # and `cache` (identical seeded or greedy calls answered from earlier runs).

    def run(self, question: str, **options: Unpack[RunOptions]) -> Result:
        """Run the society on `question` and return the full record."""
        return self._run(question, options).result()

    async def arun(self, question: str, **options: Unpack[RunOptions]) -> Result:
        """`run` for async code: a round's agents run as tasks."""
        return await self._run(question, options).aresult()

    def stream(self, question: str, **options: Unpack[RunOptions]) -> Iterator[Event]:
        """Tokens as agents write them, each finished turn, and finally the result."""
        return self._run(question, options, streaming=True).events()

    def astream(self, question: str, **options: Unpack[RunOptions]) -> AsyncIterator[Event]:
        """`stream` for async code."""
        return self._run(question, options, streaming=True).aevents()

    def resume(self, **options: Unpack[RunOptions]) -> Result:
        """Finish the run saved under `checkpoint` and `thread_id`: finished turns are kept,
        only the rest is run."""
        return self._run(None, options).result()

    async def aresume(self, **options: Unpack[RunOptions]) -> Result:
        """`resume` for async code."""
        return await self._run(None, options).aresult()

    def _run(self, question: str | None, options: RunOptions, streaming: bool = False) -> Run:
        return Run(
            self.agents,
            self.protocol,
            self.aggregator,
            self.typed_answers(),
            self.max_concurrency,
            question,
            RunOptions(**options),
            list(STREAM_MODES) if streaming else ["values"],
        )

    def result_of_state(self, state: dict[str, Any]) -> Result:
        """The `Result` a run of this society with graph state `state` (a checkpoint's saved
        values) returns: its answer format, tiers and other protocol details included."""
        return self._run(state.get("question"), {})._result(state)

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
