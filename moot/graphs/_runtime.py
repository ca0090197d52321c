"""What every protocol graph shares: the runtime context and one guarded agent call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp

from moot import prompts
from moot.agents import Agent
from moot.aggregate.vote import MajorityVote
from moot.result import Turn, Usage


@dataclass(frozen=True)
class RunContext:
    """Runtime context of a society's graph: live objects that are never checkpointed."""

    agents: list[Agent]
    models: list[BaseChatModel]
    """The agents' chat models, in agent order (agents naming one spec share one object)."""
    aggregator: MajorityVote

    def format_instruction(self) -> str:
        return prompts.load(self.aggregator.format_prompt())


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


def _request(
    context: RunContext, index: int, conversation: list[BaseMessage], round: int
) -> tuple[list[BaseMessage], RunnableConfig]:
    """The messages (system prompt first) and the run config, tagged so streams split by agent."""
    agent = context.agents[index]
    messages = [SystemMessage(content=agent.system_prompt()), *merge_user_messages(conversation)]
    config: RunnableConfig = {
        "tags": [f"moot:agent:{agent.name}"],
        "metadata": {"moot_agent": agent.name, "moot_round": round},
    }
    return messages, config


def _turn(
    context: RunContext,
    index: int,
    round: int,
    peers: list[str],
    reply: AIMessage | None,
    error: Exception | None,
) -> Turn:
    agent = context.agents[index]
    if reply is None:
        return Turn(
            round=round,
            agent=agent.name,
            role=agent.role,
            peers=peers,
            usage=Usage(calls=1),
            error=f"{type(error).__name__}: {error}",
        )
    text = reply.text
    return Turn(
        round=round,
        agent=agent.name,
        role=agent.role,
        text=text,
        answer=context.aggregator.extractor()(text),
        peers=peers,
        usage=usage_of(reply),
    )


def call_agent(
    context: RunContext,
    index: int,
    conversation: list[BaseMessage],
    *,
    round: int,
    peers: list[str],
) -> Turn:
    """Call agent `index` on `conversation` (without its system prompt) and record the turn.

    A failing model call becomes a failed turn: a LangGraph superstep is all-or-nothing, so an
    exception here would throw away the sibling agents' answers of the same round.
    """
    messages, config = _request(context, index, conversation, round)
    agent = context.agents[index]
    try:
        reply = context.models[index].invoke(messages, config=config, **agent.sampling())
    except GraphBubbleUp:
        raise
    except Exception as error:  # noqa: BLE001 - any model failure is recorded, not raised
        return _turn(context, index, round, peers, None, error)
    return _turn(context, index, round, peers, reply, None)


async def acall_agent(
    context: RunContext,
    index: int,
    conversation: list[BaseMessage],
    *,
    round: int,
    peers: list[str],
) -> Turn:
    """`call_agent` for async graphs: the model call runs as a task on the event loop."""
    messages, config = _request(context, index, conversation, round)
    agent = context.agents[index]
    try:
        reply = await context.models[index].ainvoke(messages, config=config, **agent.sampling())
    except GraphBubbleUp:
        raise
    except Exception as error:  # noqa: BLE001
        return _turn(context, index, round, peers, None, error)
    return _turn(context, index, round, peers, reply, None)
