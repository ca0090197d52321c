"""Routing (mixture-of-experts gating): pick the expert agents for each question.

By rules (regular expressions per expert), by embedding similarity between the question and
the experts' descriptions, or by an LLM router agent (role "router"). The top-k experts answer
in parallel and the aggregator combines them; the choice is in `result.details["route"]`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from langchain_core.embeddings import Embeddings
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import Field, PrivateAttr

import moot.prompts as prompts
from moot.agents import Agent
from moot.aggregate.base import Aggregator, AnswerFormat
from moot.aggregate.extract import last_labelled, normalise_text
from moot.graphs.base import BaseProtocol
from moot.graphs.helpers import SoloTask, answer_alone
from moot.graphs.types import Call, Calls, RunContext, SocietyState, Update, agent_node


class RouterState(SocietyState, total=False):
    route: list[str]
    """The experts the router chose."""


class Router(BaseProtocol):
    """Route each question to `top_k` experts (every agent but the router agent)."""

    kind: Literal["router"] = "router"
    """The name of this protocol in society files and specs (`moot.spec`)."""

    by: Literal["rules", "embedding", "llm"] = "rules"
    rules: dict[str, list[str]] = Field(default_factory=dict)
    """by="rules": expert name -> regular expressions; experts are ranked by patterns matched."""
    top_k: int = Field(default=1, ge=1)
    fallback: str | None = None
    """The expert when nothing matches (default: the first expert)."""
    embeddings: Embeddings | None = None
    """by="embedding": any LangChain Embeddings (default: llama.cpp on the embedded GGUF)."""

    _expert_vectors: dict[str, list[float]] = PrivateAttr(default_factory=dict)

    def experts(self, agents: list[Agent]) -> list[int]:
        return [index for index, agent in enumerate(agents) if agent.role != "router"]

    def participants(self, agents: list[Agent]) -> list[int]:
        return self.experts(agents)

    def check(self, agents: list[Agent], aggregator: Aggregator) -> None:
        names = {agents[index].name for index in self.experts(agents)}
        mentioned = set(self.rules) | ({self.fallback} if self.fallback else set())
        unknown = sorted(mentioned - names)
        if unknown:
            raise ValueError(f"the router names unknown experts: {', '.join(unknown)}")
        if self.by == "llm" and not any(agent.role == "router" for agent in agents):
            raise ValueError("by='llm' needs an agent with role 'router'")
        coding = [a.name for a in agents if a.role == "router" and a.kind == "program"]
        if self.by == "llm" and coding:
            raise ValueError(
                f"router agent {', '.join(coding)} is a program agent, but a router names "
                "experts in words: give it kind text (program agents can be experts)"
            )
        if not names:
            raise ValueError("a router needs at least one expert (an agent not in role 'router')")

    def asks_for_programs(self) -> bool:
        return True

    def recursion_limit(self, agents: list[Agent]) -> int:
        return 12

    def details(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"route": state["route"]} if state.get("route") else {}

    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        graph = StateGraph(RouterState, context_schema=RunContext)
        graph.add_node("route", agent_node(self._route, asynchronous=asynchronous))
        graph.add_node(
            "expert", agent_node(answer_alone, asynchronous=asynchronous), input_schema=SoloTask
        )
        graph.add_node("aggregate", agent_node(self._aggregate, asynchronous=asynchronous))
        graph.add_edge(START, "route")
        graph.add_conditional_edges("route", self._fan_out, ["expert"])
        graph.add_edge("expert", "aggregate")
        graph.add_edge("aggregate", END)
        return graph

    # -- choosing ----------------------------------------------------------------------------
    def choose(self, question: str, agents: list[Agent]) -> list[str]:
        """Experts for `question` by rules or embeddings (the LLM router is a graph step)."""
        experts = [agents[index] for index in self.experts(agents)]
        if self.by == "embedding":
            scores = self._similarities(question, experts)
        else:
            scores = {
                expert.name: float(
                    sum(bool(re.search(p, question, re.I)) for p in self.rules.get(expert.name, []))
                )
                for expert in experts
            }
        ranked = sorted(experts, key=lambda expert: -scores[expert.name])
        chosen = [expert.name for expert in ranked if scores[expert.name] > 0][: self.top_k]
        return chosen or [self.fallback or experts[0].name]

    def _similarities(self, question: str, experts: list[Agent]) -> dict[str, float]:
        if self.embeddings is None:
            from moot.models.embeddings import LlamaEmbeddings

            self.embeddings = LlamaEmbeddings()
        missing = [expert for expert in experts if expert.name not in self._expert_vectors]
        if missing:
            texts = [expert.description or f"{expert.name}: {expert.role}" for expert in missing]
            for expert, vector in zip(missing, self.embeddings.embed_documents(texts), strict=True):
                self._expert_vectors[expert.name] = vector
        query = self.embeddings.embed_query(question)
        # Shifted to stay positive: every expert gets a score, the best ones win.
        return {e.name: 2.0 + _cosine(query, self._expert_vectors[e.name]) for e in experts}

    def _llm_call(self, state: RouterState, context: RunContext) -> Call:
        """The router agent's call: pick experts from their descriptions."""
        agents = context.agents
        router = next(index for index, agent in enumerate(agents) if agent.role == "router")
        experts = [agents[index] for index in self.experts(agents)]
        listing = "\n".join(f"- {e.name}: {e.description or e.role}" for e in experts)
        message = prompts.render(
            "router/choose", question=state["question"], experts=listing, count=self.top_k
        )
        names = [expert.name for expert in experts]

        def read(text: str) -> str | None:
            line = last_labelled(text, "experts?", ".+")
            picked = [normalise_text(name) for name in (line.split(",") if line else [])]
            valid = [name for name in names if normalise_text(name) in picked]
            return ",".join(valid[: self.top_k]) or None

        return Call(context.speaker(router, AnswerFormat(extract=read)), [HumanMessage(message)], 1)

    # -- nodes --------------------------------------------------------------------------
    def _route(self, state: RouterState, context: RunContext) -> Update | Calls:
        if self.by != "llm":
            return {
                "round": 1,
                "turns": [],
                "route": self.choose(state["question"], context.agents),
            }
        return self._route_by_llm(state, context)

    def _route_by_llm(self, state: RouterState, context: RunContext) -> Calls:
        (turn,) = yield [self._llm_call(state, context)]
        fallback = self.fallback or context.agents[self.experts(context.agents)[0]].name
        route = turn.answer.split(",") if turn.answer else [fallback]
        return {"round": 1, "turns": [turn], "route": route}

    def _fan_out(self, state: RouterState, runtime: Runtime[RunContext]) -> list[Send]:
        index = {agent.name: i for i, agent in enumerate(runtime.context.agents)}
        return [
            Send("expert", SoloTask(question=state["question"], round=1, agent=index[name]))
            for name in state["route"]
        ]

    def _aggregate(self, state: RouterState, context: RunContext) -> Update | Calls:
        return context.aggregator.aggregate(state, context, state["route"])


def _cosine(first: list[float], second: list[float]) -> float:
    dot = sum(a * b for a, b in zip(first, second, strict=True))
    norms = math.sqrt(sum(a * a for a in first)) * math.sqrt(sum(b * b for b in second))
    return dot / norms if norms else 0.0
