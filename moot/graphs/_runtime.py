"""What every protocol graph shares: the runtime context, one guarded agent call, aggregation."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp
from langgraph.runtime import Runtime

from moot import prompts
from moot.agents import Agent
from moot.aggregate.confidence import logprob_confidence, stated_confidence
from moot.aggregate.vote import Aggregator, AnswerFormat
from moot.result import StopReason, Turn, Usage


@dataclass(frozen=True)
class RunContext:
    """Runtime context of a society's graph: live objects that are never checkpointed."""

    agents: list[Agent]
    models: list[BaseChatModel]
    """The agents' chat models, in agent order (agents naming one spec share one object)."""
    aggregator: Aggregator
    aggregator_models: dict[str, BaseChatModel] = field(default_factory=dict)
    """Models of the aggregator's own agents (a judge, a ranker, a fuser), by agent name."""
    moderated: bool = False
    """Pause after each round (but the last) for a moderator (a LangGraph interrupt)."""

    def format_instruction(self) -> str:
        return prompts.load(self.aggregator.format_prompt())


class SocietyState(TypedDict, total=False):
    """State every protocol graph keeps (checkpointed; holds no model objects)."""

    question: str
    round: int
    """The round that runs next (1-based)."""
    turns: Annotated[list[Turn], operator.add]
    """All turns so far; agents of one round append in parallel."""
    answer: str | None
    stop_reason: StopReason | None
    """Set when the run should end; the graph then aggregates."""
    notes: Annotated[list[dict[str, Any]], operator.add]
    """Moderator notes: {"round": r, "text": ...}, shown to the agents after round r."""
    route: list[str]
    """The experts a router chose."""
    tiers: Annotated[list[dict[str, Any]], operator.add]
    """A cascade's tiers as they ran: agents, answer, confidence, usage."""


def question_prompt(question: str, context: RunContext) -> str:
    """The first prompt of every protocol: the question and the answer format."""
    return prompts.render("debate/question", question=question, format=context.format_instruction())


def note_after(notes: list[dict[str, Any]], round: int) -> str:
    """The moderator's note given after `round`, as text to append to a prompt ("" if none)."""
    texts = [note["text"] for note in notes if note["round"] == round]
    return "".join("\n\n" + prompts.render("debate/moderator", note=text) for text in texts)


def usage_of(message: AIMessage) -> Usage:
    metadata: dict[str, Any] = dict(message.usage_metadata or {})
    input_tokens = int(metadata.get("input_tokens", 0))
    output_tokens = int(metadata.get("output_tokens", 0))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=int(metadata.get("total_tokens", input_tokens + output_tokens)),
        calls=1,
    )


def merge_user_messages(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Join consecutive user messages, which some chat templates reject.

    They arise when an agent's own turn failed and its conversation has no reply in between.
    """
    merged: list[BaseMessage] = []
    for message in messages:
        if merged and isinstance(message, HumanMessage) and isinstance(merged[-1], HumanMessage):
            merged[-1] = HumanMessage(content=f"{merged[-1].text}\n\n{message.text}")
        else:
            merged.append(message)
    return merged


@dataclass(frozen=True)
class Speaker:
    """Who is called for a turn: the agent, its model, and how its answer is read."""

    agent: Agent
    model: BaseChatModel
    answer_format: AnswerFormat


def speaker(context: RunContext, index: int) -> Speaker:
    return Speaker(context.agents[index], context.models[index], context.aggregator)


def _request(
    who: Speaker, conversation: list[BaseMessage], round: int
) -> tuple[list[BaseMessage], RunnableConfig]:
    """The messages (system prompt first) and the run config, tagged so streams split by agent."""
    messages = [
        SystemMessage(content=who.agent.system_prompt()),
        *merge_user_messages(conversation),
    ]
    config: RunnableConfig = {
        "tags": [f"moot:agent:{who.agent.name}"],
        "metadata": {"moot_agent": who.agent.name, "moot_round": round},
    }
    return messages, config


def _turn(
    who: Speaker,
    round: int,
    peers: list[str],
    reply: BaseMessage | None,
    error: Exception | None,
) -> Turn:
    agent = who.agent
    if reply is None:
        return Turn(
            round=round,
            agent=agent.name,
            role=agent.role,
            peers=peers,
            usage=Usage(calls=1),
            error=f"{type(error).__name__}: {error}",
        )
    assert isinstance(reply, AIMessage)
    text = reply.text
    confidence = logprob_confidence(reply.response_metadata.get("logprobs"))
    return Turn(
        round=round,
        agent=agent.name,
        role=agent.role,
        text=text,
        answer=who.answer_format.extractor()(text),
        peers=peers,
        usage=usage_of(reply),
        confidence=confidence if confidence is not None else stated_confidence(text),
    )


def call_agent(
    who: Speaker, conversation: list[BaseMessage], *, round: int, peers: list[str]
) -> Turn:
    """Call `who` on `conversation` (without its system prompt) and record the turn.

    A failing model call becomes a failed turn: a LangGraph superstep is all-or-nothing, so an
    exception here would throw away the sibling agents' answers of the same round.
    """
    messages, config = _request(who, conversation, round)
    try:
        reply = who.model.invoke(messages, config=config, **who.agent.sampling())
    except GraphBubbleUp:
        raise
    except Exception as error:  # noqa: BLE001 - any model failure is recorded, not raised
        return _turn(who, round, peers, None, error)
    return _turn(who, round, peers, reply, None)


async def acall_agent(
    who: Speaker, conversation: list[BaseMessage], *, round: int, peers: list[str]
) -> Turn:
    """`call_agent` for async graphs: the model call runs as a task on the event loop."""
    messages, config = _request(who, conversation, round)
    try:
        reply = await who.model.ainvoke(messages, config=config, **who.agent.sampling())
    except GraphBubbleUp:
        raise
    except Exception as error:  # noqa: BLE001
        return _turn(who, round, peers, None, error)
    return _turn(who, round, peers, reply, None)


def latest_turns(turns: list[Turn], names: list[str]) -> list[Turn | None]:
    """Each named agent's most recent successful turn, in the order of `names`."""
    latest: dict[str, Turn] = {}
    for turn in sorted(turns, key=lambda turn: turn.round):
        if not turn.failed:
            latest[turn.agent] = turn
    return [latest.get(name) for name in names]


class SoloTask(TypedDict):
    """One agent answering the question on its own (a router's expert, a cascade tier's agent)."""

    question: str
    round: int
    agent: int


def answer_alone(state: SoloTask, *, runtime: Runtime[RunContext]) -> SocietyState:
    """Node: agent `state["agent"]` answers the question alone."""
    conversation: list[BaseMessage] = [
        HumanMessage(question_prompt(state["question"], runtime.context))
    ]
    who = speaker(runtime.context, state["agent"])
    return {"turns": [call_agent(who, conversation, round=state["round"], peers=[])]}


async def aanswer_alone(state: SoloTask, *, runtime: Runtime[RunContext]) -> SocietyState:
    conversation: list[BaseMessage] = [
        HumanMessage(question_prompt(state["question"], runtime.context))
    ]
    who = speaker(runtime.context, state["agent"])
    return {"turns": [await acall_agent(who, conversation, round=state["round"], peers=[])]}
