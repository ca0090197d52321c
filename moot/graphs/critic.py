"""Critic loop (self-refine with critics): draft, criticise, revise.

A generator writes a draft; the critics review it in parallel and each ends with a verdict;
if they all accept, the run stops, else the reviser (the generator when there is none) revises
the draft in light of the critiques. `rounds` bounds the drafts; the last draft is the answer.
"""

from __future__ import annotations

import re
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, ConfigDict, Field

from moot import prompts
from moot.agents import Agent
from moot.aggregate.vote import AnswerFormat
from moot.graphs._rounds import AgentTask
from moot.graphs._runtime import (
    RunContext,
    SocietyState,
    Speaker,
    acall_agent,
    call_agent,
    latest_turns,
    question_prompt,
)
from moot.result import StopReason, Turn

_VERDICT = re.compile(r"verdict\s*:\s*\**\s*(accept|revise)", re.IGNORECASE)


def read_verdict(text: str) -> str | None:
    """ "accept" or "revise" from the reply's last "Verdict:" line, or None."""
    found = _VERDICT.findall(text)
    return found[-1].lower() if found else None


_VERDICT_FORMAT = AnswerFormat(extract=read_verdict)


class CriticLoop(BaseModel):
    """A generator, one or more critics (role "critic") and an optional reviser."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(default=3, ge=1)
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

    def check(self, agents: list[Agent]) -> None:
        generator, critics, _ = self.roles(agents)
        if not critics:
            raise ValueError("a critic loop needs at least one agent with role 'critic'")
        if agents[generator].role == "critic":
            raise ValueError("a critic loop needs a generator: give one agent role 'generator'")

    def participants(self, agents: list[Agent]) -> list[int]:
        generator, _, reviser = self.roles(agents)
        return sorted({generator, reviser})

    def first_prompt(self, question: str, context: RunContext) -> str:
        return question_prompt(question, context)

    def recursion_limit(self) -> int:
        return 3 * self.rounds + 10

    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        graph = StateGraph(SocietyState, context_schema=RunContext)
        graph.add_node("start", lambda state: {"round": 1, "turns": [], "stop_reason": None})
        if asynchronous:
            graph.add_node("write", self._awrite)
            graph.add_node("critique", self._acritique, input_schema=AgentTask)
        else:
            graph.add_node("write", self._write)
            graph.add_node("critique", self._critique, input_schema=AgentTask)
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

    # -- conversations ------------------------------------------------------------------
    def _writer_request(
        self, state: SocietyState, context: RunContext
    ) -> tuple[Speaker, list[BaseMessage]]:
        generator, _, reviser = self.roles(context.agents)
        round = state["round"]
        index = generator if round == 1 else reviser
        who = Speaker(context.agents[index], context.models[index], context.aggregator)
        conversation: list[BaseMessage] = [
            HumanMessage(self.first_prompt(state["question"], context))
        ]
        if round > 1:
            draft, critiques = self._last_draft(state, context), self._critiques(state, round - 1)
            if draft is not None:
                conversation.append(AIMessage(content=draft.text))
            text = "\n\n".join(
                prompts.render("debate/peer", peer=turn.agent, text=turn.text) for turn in critiques
            )
            conversation.append(
                HumanMessage(
                    prompts.render(
                        "critic/revise", critiques=text, format=context.format_instruction()
                    )
                )
            )
        return who, conversation

    def _last_draft(self, state: SocietyState, context: RunContext) -> Turn | None:
        names = [context.agents[index].name for index in self.participants(context.agents)]
        drafts = [turn for turn in latest_turns(state["turns"], names) if turn is not None]
        return max(drafts, key=lambda turn: turn.round) if drafts else None

    def _critiques(self, state: SocietyState, round: int) -> list[Turn]:
        return [
            turn
            for turn in state["turns"]
            if turn.round == round and turn.role == "critic" and not turn.failed
        ]

    def _critic_request(self, task: AgentTask, context: RunContext) -> tuple[Speaker, list[Any]]:
        index = task["agent"]
        draft = self._last_draft({"turns": task["turns"]}, context)
        message = prompts.render(
            "critic/review", question=task["question"], draft=draft.text if draft else ""
        )
        who = Speaker(context.agents[index], context.models[index], _VERDICT_FORMAT)
        return who, [HumanMessage(message)]

    # -- nodes --------------------------------------------------------------------------
    def _write(self, state: SocietyState, runtime: Runtime[RunContext]) -> SocietyState:
        who, conversation = self._writer_request(state, runtime.context)
        return {"turns": [call_agent(who, conversation, round=state["round"], peers=[])]}

    async def _awrite(self, state: SocietyState, runtime: Runtime[RunContext]) -> SocietyState:
        who, conversation = self._writer_request(state, runtime.context)
        return {"turns": [await acall_agent(who, conversation, round=state["round"], peers=[])]}

    def _after_write(self, state: SocietyState, runtime: Runtime[RunContext]) -> Any:
        if state["round"] >= self.rounds:
            return "finish"
        _, critics, _ = self.roles(runtime.context.agents)
        task = {"question": state["question"], "round": state["round"], "turns": state["turns"]}
        return [Send("critique", AgentTask(**task, agent=index, notes=[])) for index in critics]  # type: ignore[typeddict-item]

    def _critique(self, state: AgentTask, *, runtime: Runtime[RunContext]) -> SocietyState:
        who, conversation = self._critic_request(state, runtime.context)
        return {"turns": [call_agent(who, conversation, round=state["round"], peers=[])]}

    async def _acritique(self, state: AgentTask, *, runtime: Runtime[RunContext]) -> SocietyState:
        who, conversation = self._critic_request(state, runtime.context)
        turn = await acall_agent(who, conversation, round=state["round"], peers=[])
        return {"turns": [turn]}

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
        draft = self._last_draft(state, runtime.context)
        return {
            "answer": draft.answer if draft else None,
            "stop_reason": state.get("stop_reason") or "rounds",
        }
