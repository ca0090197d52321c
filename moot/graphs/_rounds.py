"""Round-based protocols: every round fans out one call per participant, then joins.

Between rounds the join decides whether to go on: all rounds run, consensus reached, or the
token budget spent. Subclasses say who takes part and what each one is shown.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypedDict, cast

from langchain_core.messages import BaseMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send, interrupt
from pydantic import Field

from moot.agents import Agent
from moot.graphs.base import BaseProtocol
from moot.graphs.types import MAX_ROUNDS, Call, Calls, RunContext, SocietyState, Update, agent_node
from moot.result import StopReason, Turn


class AgentTask(TypedDict):
    """What an agent's turn in a round is built from (`conversation_for`)."""

    question: str
    round: int
    agent: int
    turns: list[Turn]
    notes: list[dict[str, Any]]


class AgentTurn(TypedDict):
    """What one agent's branch of a round receives through `Send`: its conversation, built
    when the round fans out. Built there, in the one thread that fans out, a debate's
    conversations cost a third of what they cost in the round's worker threads, which contend
    for the interpreter; and a checkpoint stores each branch's messages, not every turn so far.
    """

    round: int
    agent: int
    conversation: list[BaseMessage]
    peers: list[str]


class RoundProtocol(BaseProtocol):
    """Shared settings and graph of round-based protocols."""

    rounds: int = Field(default=2, ge=1, le=MAX_ROUNDS)
    """Most rounds to run; round 1 is the first, independent answer."""
    consensus: float | None = Field(default=None, gt=0, le=1)
    """Stop after a round in which at least this share of answering agents agree (1.0: all)."""
    token_budget: int | None = Field(default=None, ge=1)
    """Stop after the round in which the run's total tokens reach this many."""

    def conversation_for(
        self, task: AgentTask, context: RunContext
    ) -> tuple[list[BaseMessage], list[str]]:
        """The agent's conversation for this turn (no system prompt), and the peers it shows."""
        raise NotImplementedError

    def sends_system_prompt(self) -> bool:
        """Whether each call starts with the agent's system prompt."""
        return True

    def recursion_limit(self, agents: list[Agent]) -> int:
        # start, then (agent_turn, end_round) per round, then aggregate; with slack.
        return 2 * self.rounds + 10

    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        """The uncompiled graph; run it with a `RunContext` as context."""
        graph = StateGraph(SocietyState, context_schema=RunContext)
        graph.add_node("start", _start)
        graph.add_node(
            "agent_turn", agent_node(self._agent_turn, asynchronous=asynchronous),
            input_schema=AgentTurn,
        )  # fmt: skip
        graph.add_node("end_round", self._end_round)
        graph.add_node("aggregate", agent_node(self._aggregate, asynchronous=asynchronous))
        graph.add_edge(START, "start")
        graph.add_conditional_edges("start", self._next_round, ["agent_turn", "aggregate"])
        graph.add_edge("agent_turn", "end_round")
        graph.add_conditional_edges("end_round", self._next_round, ["agent_turn", "aggregate"])
        graph.add_edge("aggregate", END)
        return graph

    def _next_round(self, state: SocietyState, runtime: Runtime[RunContext]) -> list[Send] | str:
        if state.get("stop_reason"):
            return "aggregate"
        round, sends = state.get("round") or 1, []
        for index in self.participants(runtime.context.agents):
            task = AgentTask(
                question=state["question"],
                round=round,
                agent=index,
                turns=state.get("turns") or [],
                notes=state.get("notes") or [],
            )
            conversation, peers = self.conversation_for(task, runtime.context)
            branch = AgentTurn(round=round, agent=index, conversation=conversation, peers=peers)
            sends.append(Send("agent_turn", branch))
        return sends

    def takes_moderator(self) -> bool:
        return True

    def _end_round(self, state: SocietyState, runtime: Runtime[RunContext]) -> SocietyState:
        reason = self._stop_reason(state, runtime.context)
        round = state.get("round") or 1
        update: SocietyState = {"round": round + 1, "stop_reason": reason}
        if runtime.context.moderated and reason is None:
            # The node reruns from here on resume; everything above is pure.
            decision = interrupt({"round": round})
            if decision.get("stop"):
                update["stop_reason"] = "moderator"
            if decision.get("note"):
                update["notes"] = [{"round": round, "text": decision["note"]}]
        return update

    def _stop_reason(self, state: SocietyState, context: RunContext) -> StopReason | None:
        round, turns = state.get("round") or 1, state.get("turns") or []
        this_round = [turn for turn in turns if turn.round == round]
        if this_round and all(turn.failed for turn in this_round):
            return "failed"  # nobody answered: more rounds would fail the same way
        if round >= self.rounds:
            return "rounds"
        if self.consensus is not None:
            # Over every agent of the round: one with no answer (failed, unreadable) agrees
            # with nobody, so consensus 1.0 means every agent gave the same answer.
            names = self._names(context)
            spoke = [turn for turn in this_round if turn.agent in names]
            counts = Counter(turn.answer for turn in spoke if turn.answer is not None)
            enough = sum(counts.values()) >= min(2, len(names))
            if enough and max(counts.values()) / len(spoke) >= self.consensus:
                return "consensus"
        spent = sum(turn.usage.total_tokens for turn in turns)
        if self.token_budget is not None and spent >= self.token_budget:
            return "token_budget"
        return None

    def _names(self, context: RunContext) -> list[str]:
        agents = context.agents
        return [agents[index].name for index in self.participants(agents)]

    def _agent_turn(self, branch: AgentTurn, context: RunContext) -> Calls:
        if "conversation" not in branch:  # checkpointed before branches got their conversation
            old = cast(AgentTask, branch)
            branch = AgentTurn(round=old["round"], agent=old["agent"], conversation=[], peers=[])
            branch["conversation"], branch["peers"] = self.conversation_for(old, context)
        speaker = context.speaker(branch["agent"])
        system = self.sends_system_prompt()
        call = Call(speaker, branch["conversation"], branch["round"], branch["peers"], system)
        turns = yield [call]
        return {"turns": turns}

    def _aggregate(self, state: SocietyState, context: RunContext) -> Update | Calls:
        return context.aggregator.aggregate(state, context, self._names(context))


def _start(state: SocietyState) -> SocietyState:
    """Round 1 comes next, with no answer or stop reason yet (a thread may hold those of an
    earlier run)."""
    return {"round": 1, "turns": [], "notes": [], "answer": None, "stop_reason": None}
