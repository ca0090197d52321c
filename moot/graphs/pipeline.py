"""Pipeline: agents in order, each doing its part (e.g. parse, solve, verify) on what the
previous one wrote; the last one's answer is the result. Each stage is a round."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict

from moot import prompts
from moot.agents import Agent
from moot.graphs._runtime import RunContext, SocietyState, acall_agent, call_agent, speaker
from moot.result import Turn


class Pipeline(BaseModel):
    """Each agent, in order, is a stage; its role says what the stage does."""

    model_config = ConfigDict(extra="forbid")

    def participants(self, agents: list[Agent]) -> list[int]:
        return list(range(len(agents)))

    def check(self, agents: list[Agent]) -> None:
        """Any agents will do."""

    def first_prompt(self, question: str, context: RunContext) -> str:
        return prompts.render(
            "pipeline/first",
            question=question,
            role=context.agents[0].role,
            format=context.format_instruction(),
        )

    def recursion_limit(self) -> int:
        return 64

    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        graph = StateGraph(SocietyState, context_schema=RunContext)
        graph.add_node("start", lambda state: {"round": 1, "turns": []})
        graph.add_node("stage", self._astage if asynchronous else self._stage)
        graph.add_edge(START, "start")
        graph.add_edge("start", "stage")
        graph.add_conditional_edges("stage", self._continue)
        return graph

    def _continue(self, state: SocietyState, runtime: Runtime[RunContext]) -> str:
        return END if state["round"] > len(runtime.context.agents) else "stage"

    def _ask(self, state: SocietyState, context: RunContext) -> list[BaseMessage]:
        stage = state["round"] - 1
        if stage == 0:
            return [HumanMessage(self.first_prompt(state["question"], context))]
        previous = state["turns"][-1]
        message = prompts.render(
            "pipeline/next",
            question=state["question"],
            previous=f"{previous.role}, {previous.agent}",
            text=previous.text if not previous.failed else f"(failed: {previous.error})",
            role=context.agents[stage].role,
            format=context.format_instruction(),
        )
        return [HumanMessage(message)]

    def _after(self, state: SocietyState, context: RunContext, turn: Turn) -> SocietyState:
        update: SocietyState = {"turns": [turn], "round": state["round"] + 1}
        if state["round"] >= len(context.agents):
            update["answer"] = turn.answer
        return update

    def _stage(self, state: SocietyState, runtime: Runtime[RunContext]) -> SocietyState:
        who = speaker(runtime.context, state["round"] - 1)
        turn = call_agent(who, self._ask(state, runtime.context), round=state["round"], peers=[])
        return self._after(state, runtime.context, turn)

    async def _astage(self, state: SocietyState, runtime: Runtime[RunContext]) -> SocietyState:
        who = speaker(runtime.context, state["round"] - 1)
        conversation = self._ask(state, runtime.context)
        turn = await acall_agent(who, conversation, round=state["round"], peers=[])
        return self._after(state, runtime.context, turn)
