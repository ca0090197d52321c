"""The protocol contract: what `Society` needs from a protocol, built-in or your own.

A protocol is a pydantic model of its settings that builds a LangGraph `StateGraph` over
`SocietyState` (or a subclass) with `RunContext` as its context schema. The graph receives
{"question": ...}, appends every agent's `Turn` to "turns" and ends with "answer" set; it
usually ends by calling `context.aggregator.aggregate(...)`. Nodes that call agents are written
once with `agent_node` and work in sync and async runs. The names come from
`moot.graphs.types` (the vocabulary) and are exported here too. See `moot.graphs.debate` for a
full example and the README for a small one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from moot.agents import Agent
from moot.aggregate.vote import MajorityVote
from moot.config import Config
from moot.graphs.helpers import question_prompt
from moot.graphs.types import (
    Aggregator,
    Call,
    Calls,
    RunContext,
    SocietyState,
    Speaker,
    Update,
    agent_node,
)

__all__ = [
    "BaseProtocol",
    "Call",
    "Calls",
    "Graph",
    "RunContext",
    "SocietyState",
    "Speaker",
    "Update",
    "agent_node",
]

Graph = CompiledStateGraph[Any, RunContext, Any, Any]
"""A protocol's compiled graph."""


class BaseProtocol(Config, ABC):
    """How a society's agents interact. Subclass it, give it settings as fields, define `build`.

    Every method but `build` has a default that suits a protocol in which all agents answer.
    """

    def participants(self, agents: list[Agent]) -> list[int]:
        """Indices of the agents whose answers are aggregated and counted in the round
        statistics (`result.conformity`); the others judge, criticise or route. Default: all."""
        return list(range(len(agents)))

    def check(self, agents: list[Agent], aggregator: Aggregator) -> None:
        """Raise `ValueError` (or `moot.ConfigError`) if the protocol cannot run with these
        agents and this aggregator; `Society` calls it when it is built. Default: accept."""

    def default_aggregator(self) -> Aggregator:
        """The aggregator of a society that names none. Default: a majority vote in the format
        each question asks for ("auto")."""
        return MajorityVote(extract="auto")

    def first_prompt(self, question: str, context: RunContext) -> str:
        """The first prompt an agent sees; a run checks that it fits each model's context
        window before any call. Default: the question and the answer format."""
        return question_prompt(question, context)

    def takes_moderator(self) -> bool:
        """Whether the graph pauses between rounds for a moderator (`run(moderator=...)`).
        Default: no, so a run given one is refused rather than never asking it."""
        return False

    def asks_for_programs(self) -> bool:
        """Whether a program agent (`Agent(kind="program")`) is asked for a program, which moot
        runs. Default: no, so a society with one is refused (it would fail every turn)."""
        return False

    def asks_in_answer_format(self) -> bool:
        """Whether the prompts ask for the run's answer format (typed answers need it), rather
        than in fixed words of their own. Default: they do."""
        return True

    def recursion_limit(self, agents: list[Agent]) -> int:
        """The most graph steps a run may take (LangGraph's `recursion_limit`). Default: 25."""
        return 25

    @abstractmethod
    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        """The uncompiled graph. With `asynchronous=True` its agent nodes are async (a round's
        calls run as tasks); `agent_node(body, asynchronous=...)` gives either from one body."""

    def details(self, state: dict[str, Any]) -> dict[str, Any]:
        """What the protocol adds to `result.details` from the run's final state (default:
        nothing), e.g. a router's chosen experts."""
        return {}
