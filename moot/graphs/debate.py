"""Multi-agent debate (Du et al. 2023).

Round 1: every agent answers the question on its own. Round r > 1: every agent is shown the
other agents' answers from round r-1 and gives an updated answer, continuing its own
conversation. The calls of one round are independent, so they fan out in parallel (`Send`) and
join in `end_round`. The final answer is a vote over each agent's latest answer.
"""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, Field

from moot import prompts
from moot.graphs._runtime import RunContext, acall_agent, call_agent
from moot.result import Turn


class DebateState(TypedDict, total=False):
    """State of a debate graph (checkpointed; holds no model objects)."""

    question: str
    round: int
    """The round that runs next (1-based); after the last round it is rounds + 1."""
    turns: Annotated[list[Turn], operator.add]
    """All turns so far; agents of one round append in parallel."""
    answer: str | None


class AgentTask(TypedDict):
    """What one agent's branch of a round receives through `Send`."""

    question: str
    round: int
    agent: int
    turns: list[Turn]


def latest_answers(turns: list[Turn], agent_names: list[str]) -> list[str | None]:
    """Each agent's answer from its most recent successful turn, in agent order."""
    latest: dict[str, str | None] = {}
    for turn in sorted(turns, key=lambda turn: turn.round):
        if not turn.failed:
            latest[turn.agent] = turn.answer
    return [latest.get(name) for name in agent_names]


class Debate(BaseModel):
    """Du et al.'s debate: `rounds` counts the first, independent answer."""

    rounds: int = Field(default=2, ge=1)

    def recursion_limit(self) -> int:
        # start, then (agent_turn, end_round) per round, then aggregate; with slack.
        return 2 * self.rounds + 10

    def build(
        self, *, asynchronous: bool = False
    ) -> StateGraph[DebateState, RunContext, DebateState, DebateState]:
        """The uncompiled graph; run it with a `RunContext` as context.

        `asynchronous=True` gives the agent node an async body, so a round's calls run as tasks
        under `ainvoke`; the default sync body runs them in LangGraph's thread pool.
        """
        graph = StateGraph(DebateState, context_schema=RunContext)
        graph.add_node("start", _start)
        if asynchronous:
            graph.add_node("agent_turn", _aagent_turn, input_schema=AgentTask)
        else:
            graph.add_node("agent_turn", _agent_turn, input_schema=AgentTask)
        graph.add_node("end_round", _end_round)
        graph.add_node("aggregate", _aggregate)
        graph.add_edge(START, "start")
        graph.add_conditional_edges("start", self._next_round, ["agent_turn", "aggregate"])
        graph.add_edge("agent_turn", "end_round")
        graph.add_conditional_edges("end_round", self._next_round, ["agent_turn", "aggregate"])
        graph.add_edge("aggregate", END)
        return graph

    def _next_round(self, state: DebateState, runtime: Runtime[RunContext]) -> list[Send] | str:
        if state["round"] > self.rounds:
            return "aggregate"
        return [
            Send(
                "agent_turn",
                AgentTask(
                    question=state["question"],
                    round=state["round"],
                    agent=index,
                    turns=state.get("turns", []),
                ),
            )
            for index in range(len(runtime.context.agents))
        ]


def _start(state: DebateState) -> DebateState:
    return {"round": 1, "turns": [], "answer": None}


def _end_round(state: DebateState) -> DebateState:
    return {"round": state["round"] + 1}


def _aggregate(state: DebateState, runtime: Runtime[RunContext]) -> DebateState:
    names = [agent.name for agent in runtime.context.agents]
    return {"answer": runtime.context.aggregator.vote(latest_answers(state["turns"], names))}


def conversation_for(task: AgentTask, context: RunContext) -> tuple[list[BaseMessage], list[str]]:
    """Agent `task["agent"]`'s conversation for its turn, and the peers it is shown.

    The conversation replays the agent's own earlier replies, each followed by the message that
    showed it the others' answers, so every prompt extends the agent's previous one.
    """
    me = context.agents[task["agent"]].name
    answer_format = context.format_instruction()
    conversation: list[BaseMessage] = [
        HumanMessage(
            content=prompts.render(
                "debate/question", question=task["question"], format=answer_format
            )
        )
    ]
    by_round: dict[int, list[Turn]] = {}
    for turn in task["turns"]:
        by_round.setdefault(turn.round, []).append(turn)
    peers: list[str] = []
    for past_round in range(1, task["round"]):
        others: list[Turn] = []
        for turn in by_round.get(past_round, []):
            if turn.agent == me:
                if not turn.failed:
                    conversation.append(AIMessage(content=turn.text))
            elif not turn.failed:
                others.append(turn)
        peers = [turn.agent for turn in others]
        if others:
            shown = "\n\n".join(
                prompts.render("debate/peer", peer=turn.agent, text=turn.text) for turn in others
            )
            message = prompts.render("debate/update", peers=shown, format=answer_format)
        else:
            message = prompts.render("debate/reflect", format=answer_format)
        conversation.append(HumanMessage(content=message))
    return conversation, peers


def _agent_turn(state: AgentTask, *, runtime: Runtime[RunContext]) -> DebateState:
    conversation, peers = conversation_for(state, runtime.context)
    turn = call_agent(
        runtime.context, state["agent"], conversation, round=state["round"], peers=peers
    )
    return {"turns": [turn]}


async def _aagent_turn(state: AgentTask, *, runtime: Runtime[RunContext]) -> DebateState:
    conversation, peers = conversation_for(state, runtime.context)
    turn = await acall_agent(
        runtime.context, state["agent"], conversation, round=state["round"], peers=peers
    )
    return {"turns": [turn]}
