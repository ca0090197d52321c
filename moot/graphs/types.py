"""The vocabulary protocols and aggregators are written in.

A protocol builds a LangGraph `StateGraph` over `SocietyState` (or a subclass) with
`RunContext` as its context schema. A node body takes the node's input state and the
`RunContext` and returns its state `Update`; a body that calls models is a generator (`Calls`)
that yields lists of `Call`s and receives their turns, in order, then returns the update.
`agent_node` makes a LangGraph node of a body, sync or async. An `Aggregator` chooses the final
answer with a body of the same kind.

Model objects live in the context, never in the state: the state is checkpointed.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Protocol, TypedDict, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langgraph.runtime import Runtime

from moot.agents import Agent
from moot.aggregate.format import AnswerFormat
from moot.result import StopReason, Turn

MAX_ROUNDS = 100
"""The most rounds a protocol takes: every prompt carries the whole debate so far, so a run's
work grows with the square of its rounds (Du et al. use 2-4; a real model's context window
ends long before 100)."""


class SocietyState(TypedDict, total=False):
    """State every protocol graph keeps (checkpointed, so it holds no model objects).

    A protocol that needs more keys subclasses it; every key written by parallel branches
    needs a reducer.
    """

    question: str
    """The question being answered."""
    round: int
    """The round that runs next (1-based)."""
    turns: Annotated[list[Turn], operator.add]
    """All turns so far; agents of one round append in parallel."""
    answer: str | None
    """The final answer, once aggregated."""
    stop_reason: StopReason | None
    """Set when the run should end (the graph then aggregates), and why."""
    notes: Annotated[list[dict[str, Any]], operator.add]
    """Moderator notes: {"round": r, "text": ...}, shown to the agents after round r."""
    fallback: str | None
    """Why the answer is not what the aggregator's own agent gave (it failed), if so."""


@dataclass(frozen=True)
class Speaker:
    """Who is called for a turn."""

    agent: Agent
    """The agent: its system prompt, sampling, tools, time limit and retries."""
    model: BaseChatModel
    """Its chat model."""
    answer_format: AnswerFormat
    """How it is asked to state its answer, and how the answer is read from its reply."""


@dataclass(frozen=True)
class Call:
    """One model call a node asks for; it comes back as a `Turn`."""

    speaker: Speaker
    """Who answers."""
    conversation: list[BaseMessage]
    """The messages after the system prompt (which comes from the agent)."""
    round: int
    """The round the turn belongs to."""
    peers: list[str] = field(default_factory=list)
    """Agents whose replies the conversation shows (recorded in the turn)."""
    system_prompt: bool = True
    """Whether the agent's system prompt comes first (some published prompts have none)."""


Update = Mapping[str, Any]
"""A node's state update."""
Calls = Generator[list[Call], list[Turn], Update]
"""A node body that calls models: yields batches of calls, receives their turns in order, and
returns its update."""


class Caller(Protocol):
    """Makes a node's calls. A run puts its own in the context: each call is made with the
    agent's retries and time limit and the run's cache, and a call that fails comes back as a
    failed turn, never as an exception (a LangGraph step is all-or-nothing, so one raising
    agent would throw away its siblings' answers)."""

    def call(self, calls: list[Call]) -> list[Turn]:
        """The turns of `calls`, made one after another (sync runs)."""
        ...

    async def acall(self, calls: list[Call]) -> list[Turn]:
        """The turns of `calls`, made concurrently (async runs)."""
        ...


@dataclass(frozen=True)
class RunContext:
    """The runtime context of a society's graph: the live objects of one run."""

    agents: list[Agent]
    """The society's agents, in order."""
    models: list[BaseChatModel]
    """The agents' chat models, in agent order (agents naming one spec share one object)."""
    aggregator: Aggregator
    """How the final answer is chosen; also the answer format agents are asked for."""
    caller: Caller
    """Makes the calls that node bodies yield (`agent_node` hands them over)."""
    aggregator_models: dict[str, BaseChatModel] = field(default_factory=dict)
    """Models of the aggregator's own agents (a judge, a ranker, a fuser), by agent name."""
    moderated: bool = False
    """Pause after each round (but the last) for a moderator (a LangGraph interrupt)."""
    answer_format: AnswerFormat | None = None
    """How agents state and are read for their answers, when not the aggregator's way (typed
    answers, or the format chosen for the question)."""
    memo: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)
    """What a protocol keeps between the nodes of this run so as not to compute it twice (a
    debate keeps each agent's conversation and adds one round to it). Not checkpointed: a
    resumed run starts with an empty one. Nodes running in parallel write distinct keys."""

    def speaker(self, index: int, answer_format: AnswerFormat | None = None) -> Speaker:
        """Agent `index` with its model, reading answers in `answer_format` (default: the
        run's)."""
        fmt = answer_format or self.answer_format or self.aggregator
        return Speaker(self.agents[index], self.models[index], fmt)

    def aggregator_speaker(self, agent: Agent, answer_format: AnswerFormat) -> Speaker:
        """One of the aggregator's own agents with its model."""
        return Speaker(agent, self.aggregator_models[agent.name], answer_format)

    def format_instruction(self) -> str:
        """The text that tells agents how to state their answer."""
        instruction = self.memo.get(_INSTRUCTION)
        if instruction is None:
            instruction = self.memo[_INSTRUCTION] = (
                self.answer_format or self.aggregator
            ).instruction()
        return instruction


_INSTRUCTION = ("format_instruction",)


NodeBody = Callable[[Any, RunContext], "Update | Calls"]
"""A node body: (input state, context) -> update, or a generator of calls returning one."""


def agent_node(body: NodeBody, *, asynchronous: bool) -> Callable[..., Any]:
    """A LangGraph node running `body`: a sync node makes each batch of calls one after
    another, an async node makes them concurrently."""
    if asynchronous:

        async def anode(state: Any, *, runtime: Runtime[RunContext]) -> Update:
            context = runtime.context
            plan = body(state, context)
            if isinstance(plan, Generator):
                return await adrive(plan, context.caller.acall)
            return plan

        return anode

    def node(state: Any, *, runtime: Runtime[RunContext]) -> Update:
        context = runtime.context
        plan = body(state, context)
        return drive(plan, context.caller.call) if isinstance(plan, Generator) else plan

    return node


Step = TypeVar("Step")
Value = TypeVar("Value")


def drive(steps: Generator[Step, Any, Value], run: Callable[[Step], Any]) -> Value:
    """Carry a generator of steps to its end: each step it yields is `run`, and what that gives
    (or raises) is sent (or thrown) back into it. A node body's calls and a call's own steps
    (its attempts, its tool loop) are written once as such generators, for this pump and
    `adrive`."""
    pump = _Pump(steps)
    while pump.advance():
        pump.outcome = _outcome(run, pump.step)
    return pump.value


async def adrive(
    steps: Generator[Step, Any, Value], run: Callable[[Step], Awaitable[Any]]
) -> Value:
    """`drive` for async code: each step's `run` is awaited."""
    pump = _Pump(steps)
    while pump.advance():
        try:
            pump.outcome = (await run(pump.step), None)
        except Exception as error:  # noqa: BLE001 - thrown into the generator, which decides
            pump.outcome = (None, error)
    return pump.value


def _outcome(run: Callable[[Step], Any], step: Step) -> tuple[Any, Exception | None]:
    try:
        return run(step), None
    except Exception as error:  # noqa: BLE001 - thrown into the generator, which decides
        return None, error


class _Pump(Generic[Step, Value]):
    """A generator of steps in progress: what `drive` and `adrive` share."""

    def __init__(self, steps: Generator[Step, Any, Value]) -> None:
        self.steps = steps
        self.outcome: tuple[Any, Exception | None] = (None, None)
        """What the last step gave, or raised."""
        self.step: Step
        self.value: Value

    def advance(self) -> bool:
        """Hand the last outcome back and take the next step; False once the generator has
        returned its `value`."""
        sent, raised = self.outcome
        try:
            self.step = self.steps.send(sent) if raised is None else self.steps.throw(raised)
        except StopIteration as finished:
            self.value = finished.value
            return False
        return True


class Aggregator(AnswerFormat, ABC):
    """Chooses a run's final answer; subclass it to write your own (`moot.Aggregator`).

    It is also the run's answer format (`extract`). A protocol's graph calls `aggregate` in its
    last step. (It is defined here, beside `RunContext`, because each names the other.)
    """

    def agents(self) -> list[Agent]:
        """Agents of the aggregator's own (a judge, a ranker), whose models a run loads."""
        return []

    @abstractmethod
    def aggregate(
        self, state: SocietyState, context: RunContext, names: list[str]
    ) -> Update | Calls:
        """The state update holding "answer" (and any turns of its own), from the latest turns
        of the agents named `names`. To call models, be a generator: yield lists of `Call`
        and receive their turns (see `Judge`)."""
