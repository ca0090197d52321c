"""Pipeline: agents in order, each doing its part (e.g. parse, solve, verify) on what the
previous one wrote; the last one's answer is the result. Each stage is a round."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

import moot.prompts as prompts
from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.graphs.base import BaseProtocol
from moot.graphs.helpers import require_answer_format_only
from moot.graphs.types import Call, Calls, RunContext, SocietyState, agent_node


class Pipeline(BaseProtocol):
    """Each agent, in order, is a stage; its role says what the stage does."""

    kind: Literal["pipeline"] = "pipeline"
    """The name of this protocol in society files and specs (`moot.spec`)."""

    def check(self, agents: list[Agent], aggregator: Aggregator) -> None:
        require_answer_format_only(aggregator, "a pipeline's answer is its last stage's")

    def first_prompt(self, question: str, context: RunContext) -> str:
        return prompts.render(
            "pipeline/first",
            question=question,
            role=context.agents[0].role,
            format=context.format_instruction(),
        )

    def recursion_limit(self, agents: list[Agent]) -> int:
        return len(agents) + 10

    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        graph = StateGraph(SocietyState, context_schema=RunContext)
        graph.add_node("start", lambda state: {"round": 1, "turns": []})
        graph.add_node("stage", agent_node(self._stage, asynchronous=asynchronous))
        graph.add_edge(START, "start")
        graph.add_edge("start", "stage")
        graph.add_conditional_edges("stage", self._continue)
        return graph

    def _continue(self, state: SocietyState, runtime: Runtime[RunContext]) -> str:
        return END if state["round"] > len(runtime.context.agents) else "stage"

    def _stage(self, state: SocietyState, context: RunContext) -> Calls:
        stage = state["round"] - 1
        if stage == 0:
            message = self.first_prompt(state["question"], context)
        else:
            previous = state["turns"][-1]
            message = prompts.render(
                "pipeline/next",
                question=state["question"],
                previous=f"{previous.role}, {previous.agent}",
                text=previous.text if not previous.failed else f"(failed: {previous.error})",
                role=context.agents[stage].role,
                format=context.format_instruction(),
            )
        (turn,) = yield [Call(context.speaker(stage), [HumanMessage(message)], state["round"])]
        update: SocietyState = {"turns": [turn], "round": state["round"] + 1}
        if state["round"] >= len(context.agents):
            update["answer"] = turn.answer
        return update
