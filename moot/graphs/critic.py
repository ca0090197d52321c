"""Critic loop (self-refine with critics): draft, criticise, revise.

A generator writes a draft; the critics review it in parallel and each ends with a verdict;
if they all accept, the run stops, else the reviser (the generator when there is none) revises
the draft in light of the critiques. `rounds` bounds the drafts; the last draft is the answer.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import Field

import moot.prompts as prompts
from moot.agents import Agent
from moot.aggregate.base import Aggregator, AnswerFormat
from moot.aggregate.extract import last_labelled
from moot.graphs._rounds import MAX_ROUNDS, AgentTask
from moot.graphs.base import BaseProtocol
from moot.graphs.helpers import require_answer_format_only, show_replies
from moot.graphs.types import Call, Calls, RunContext, SocietyState, agent_node
from moot.result import StopReason, Turn, latest_turns


def read_verdict(text: str) -> str | None:
    """ "accept" or "revise" from the reply's last "Verdict:" line, or None."""
    found = last_labelled(text, "verdict", "accept|revise")
    return found.lower() if found else None


_VERDICT_FORMAT = AnswerFormat(extract=read_verdict)


class CriticLoop(BaseProtocol):
    """A generator, one or more critics (role "critic") and an optional reviser."""

    kind: Literal["critic"] = "critic"
    """The name of this protocol in society files and specs (`moot.spec`)."""

    rounds: int = Field(default=3, ge=1, le=MAX_ROUNDS)
    """Most drafts; critics review every draft but the last."""
    token_budget: int | None = Field(default=None, ge=1)
    """Stop revising once the run's total tokens reach this many."""

    def roles(self, agents: list[Agent]) -> tuple[int, list[int], int]:
        """Indices of the generator, the critics and the reviser."""
        by_role: dict[str, list[int]] = {}
        for index, agent in enumerate(agents):
            by_role.setdefault(agent.role, []).append(index)
        generator = (by_role.get("generator") or [0])[0]
        critics = by_role.get("critic", [])
        reviser = (by_role.get("reviser") or [generator])[0]
        return generator, critics, reviser

    def check(self, agents: list[Agent], aggregator: Aggregator) -> None:
        generator, critics, _ = self.roles(agents)
        if not critics:
            raise ValueError("a critic loop needs at least one agent with role 'critic'")
        if agents[generator].role == "critic":
            raise ValueError("a critic loop needs a generator: give one agent role 'generator'")
        require_answer_format_only(aggregator, "a critic loop's answer is its last draft")

    def participants(self, agents: list[Agent]) -> list[int]:
        generator, _, reviser = self.roles(agents)
        return sorted({generator, reviser})

    def recursion_limit(self, agents: list[Agent]) -> int:
        return 3 * self.rounds + 10

    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        graph = StateGraph(SocietyState, context_schema=RunContext)
        graph.add_node("start", lambda state: {"round": 1, "turns": [], "stop_reason": None})
        graph.add_node("write", agent_node(self._write, asynchronous=asynchronous))
        graph.add_node(
            "critique", agent_node(self._critique, asynchronous=asynchronous),
            input_schema=AgentTask,
        )  # fmt: skip
        graph.add_node("review", self._review)
        graph.add_node("finish", self._finish)
        graph.add_edge(START, "start")
        graph.add_edge("start", "write")
        graph.add_conditional_edges("write", self._after_write, ["critique", "finish"])
        graph.add_edge("critique", "review")
        graph.add_conditional_edges(
            "review", lambda state: "finish" if state.get("stop_reason") else "write"
        )
        graph.add_edge("finish", END)
        return graph

    def _last_draft(self, turns: list[Turn], context: RunContext) -> Turn | None:
        names = [context.agents[index].name for index in self.participants(context.agents)]
        drafts = [turn for turn in latest_turns(turns, names) if turn is not None]
        return max(drafts, key=lambda turn: turn.round) if drafts else None

    # -- nodes --------------------------------------------------------------------------
    def _write(self, state: SocietyState, context: RunContext) -> Calls:
        """The generator's draft (round 1), or the reviser's revision in light of critiques."""
        generator, _, reviser = self.roles(context.agents)
        round = state["round"]
        conversation: list[BaseMessage] = [
            HumanMessage(self.first_prompt(state["question"], context))
        ]
        if round > 1:
            draft = self._last_draft(state["turns"], context)
            if draft is not None:
                conversation.append(AIMessage(content=draft.text))
            critiques = [
                turn
                for turn in state["turns"]
                if turn.round == round - 1 and turn.role == "critic" and not turn.failed
            ]
            message = prompts.render(
                "critic/revise",
                critiques=show_replies(critiques),
                format=context.format_instruction(),
            )
            conversation.append(HumanMessage(message))
        writer = context.speaker(generator if round == 1 else reviser)
        turns = yield [Call(writer, conversation, round)]
        return {"turns": turns}

    def _after_write(self, state: SocietyState, runtime: Runtime[RunContext]) -> Any:
        if state["round"] >= self.rounds:
            return "finish"
        _, critics, _ = self.roles(runtime.context.agents)
        return [
            Send(
                "critique",
                AgentTask(
                    question=state["question"],
                    round=state["round"],
                    agent=index,
                    turns=state["turns"],
                    notes=[],
                ),
            )
            for index in critics
        ]

    def _critique(self, task: AgentTask, context: RunContext) -> Calls:
        draft = self._last_draft(task["turns"], context)
        message = prompts.render(
            "critic/review", question=task["question"], draft=draft.text if draft else ""
        )
        critic = context.speaker(task["agent"], _VERDICT_FORMAT)
        turns = yield [Call(critic, [HumanMessage(message)], task["round"])]
        return {"turns": turns}

    def _review(self, state: SocietyState) -> SocietyState:
        round = state["round"]
        critiques = [t for t in state["turns"] if t.round == round and t.role == "critic"]
        reason: StopReason | None = None
        if critiques and all(turn.answer == "accept" for turn in critiques):
            reason = "accepted"
        elif self.token_budget is not None and (
            sum(turn.usage.total_tokens for turn in state["turns"]) >= self.token_budget
        ):
            reason = "token_budget"
        return {"round": round + 1, "stop_reason": reason}

    def _finish(self, state: SocietyState, runtime: Runtime[RunContext]) -> SocietyState:
        draft = self._last_draft(state["turns"], runtime.context)
        return {
            "answer": draft.answer if draft else None,
            "stop_reason": state.get("stop_reason") or "rounds",
        }
