"""Cascade (FrugalGPT, RouteLLM): ask the cheapest tier first, escalate while unsure.

Each tier is one or more agents that answer in parallel; the tier's answer is the aggregator's
choice and its confidence is the agents' agreement (several samples) or the confidence they
report (token logprobs or a stated "Confidence:"). Below `threshold` the next tier is asked; the
last tier asked gives the answer. `result.details["tiers"]` holds each tier's answer, confidence
and cost. `calibrate` picks the threshold from a labelled set.

With `decide="all"` and tiers of fresh samples of one model, a cascade is an early-stopping vote
(ESC, Li et al., ICLR 2024): draw a window of samples, stop at the first window whose answers all
agree (`threshold=1`), and decide by every sample drawn, not the last window alone.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, Field

from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.aggregate.vote import Vote
from moot.graphs.base import BaseProtocol
from moot.graphs.helpers import SoloTask, answer_alone
from moot.graphs.types import RunContext, SocietyState, agent_node
from moot.result import Turn, Usage

Confidence = Literal["agreement", "reported"]


def tier_confidence(turns: Sequence[Turn], answer: str | None, source: Confidence) -> float:
    """How sure a tier is of `answer`: the share of its agents that gave it, or their mean
    reported confidence (0 for a turn that reports none)."""
    if answer is None or not turns:
        return 0.0
    agreeing = [turn for turn in turns if turn.answer == answer]
    if source == "agreement":
        return len(agreeing) / len(turns)
    return sum(turn.confidence or 0.0 for turn in agreeing) / len(agreeing)


class CascadeState(SocietyState, total=False):
    tiers: Annotated[list[dict[str, Any]], operator.add]
    """Each tier as it ran: agents, answer, confidence, usage."""


class Cascade(BaseProtocol):
    """Tiers of agents, cheapest first; each tier's answer is the society's vote."""

    kind: Literal["cascade"] = "cascade"
    """The name of this protocol in society files and specs (`moot.spec`)."""

    tiers: list[list[str]] | None = None
    """Agent names per tier (None: each agent is a tier of its own, in agent order)."""
    threshold: float = Field(default=0.7, ge=0, le=1)
    """Escalate while the tier's confidence is below this. Agreement among n samples takes the
    values k/n: two of three is 0.667, so 0.66 keeps it and 0.67 asks for all three."""
    confidence: Confidence = "agreement"
    decide: Literal["tier", "all"] = "tier"
    """Whose answers the vote counts: the last tier asked ("tier"), or every tier asked so far
    ("all"; the early-stopping vote). A tier's confidence is always its own turns'."""

    def tier_names(self, agents: list[Agent]) -> list[list[str]]:
        return self.tiers or [[agent.name] for agent in agents]

    def check(self, agents: list[Agent], aggregator: Aggregator) -> None:
        if not isinstance(aggregator, Vote):
            raise ValueError(
                "a cascade weighs each tier with a vote: give MajorityVote, WeightedVote or "
                f"ConfidenceVote, not {type(aggregator).__name__}"
            )
        names = {agent.name for agent in agents}
        unknown = sorted({n for tier in self.tier_names(agents) for n in tier} - names)
        if unknown:
            raise ValueError(f"the cascade names unknown agents: {', '.join(unknown)}")
        tiers = self.tier_names(agents)
        if any(not tier for tier in tiers):
            raise ValueError("every cascade tier needs at least one agent")
        doubled = sorted({name for tier in tiers for name in tier if tier.count(name) > 1})
        if doubled:
            raise ValueError(
                f"listed twice in one tier (an agent would agree with itself): "
                f"{', '.join(doubled)}; list each agent once"
            )
        unused = [name for name in names if not any(name in tier for tier in tiers)]
        if unused:
            raise ValueError(
                f"in no tier, so never asked: {', '.join(sorted(unused))}; add each to a "
                "tier, or leave it out of the society"
            )
        listed = [name for tier in tiers for name in tier]
        twice = sorted({name for name in listed if listed.count(name) > 1})
        if self.decide == "all" and twice:
            raise ValueError(
                f"with decide='all' every answer counts once, but {', '.join(twice)} "
                "is in more than one tier: give each tier agents of its own"
            )
        lone = [i + 1 for i, tier in enumerate(tiers[:-1]) if len(tier) == 1]
        if self.decide == "all" and self.confidence == "agreement" and lone:
            raise ValueError(
                f"tier {lone[0]} has one agent, and one answer always agrees with itself, so "
                "the early-stopping vote would stop there: give every tier but the last two or "
                "more agents (tiers: [[a, b], [c, d], ...])"
            )

    def asks_for_programs(self) -> bool:
        return True

    def recursion_limit(self, agents: list[Agent]) -> int:
        return 3 * len(self.tier_names(agents)) + 10

    def details(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"tiers": state["tiers"]} if state.get("tiers") else {}

    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        graph = StateGraph(CascadeState, context_schema=RunContext)
        graph.add_node("start", lambda state: {"round": 1, "turns": [], "tiers": []})
        graph.add_node(
            "agent_turn", agent_node(answer_alone, asynchronous=asynchronous),
            input_schema=SoloTask,
        )  # fmt: skip
        graph.add_node("weigh", self._weigh)
        graph.add_edge(START, "start")
        graph.add_conditional_edges("start", self._ask_tier, ["agent_turn"])
        graph.add_edge("agent_turn", "weigh")
        graph.add_conditional_edges("weigh", self._next, ["agent_turn", END])
        return graph

    def _ask_tier(self, state: CascadeState, runtime: Runtime[RunContext]) -> list[Send]:
        agents = runtime.context.agents
        index = {agent.name: i for i, agent in enumerate(agents)}
        tier = self.tier_names(agents)[state["round"] - 1]
        return [
            Send(
                "agent_turn",
                SoloTask(question=state["question"], round=state["round"], agent=index[name]),
            )
            for name in tier
        ]

    def _weigh(self, state: CascadeState, runtime: Runtime[RunContext]) -> CascadeState:
        """The tier's answer and confidence; stop when sure enough or at the last tier."""
        context = runtime.context
        round = state["round"]
        tiers = self.tier_names(context.agents)
        # In tier order (turns of one step arrive in any order): a tie goes to the first listed.
        listed = {name: i for i, name in enumerate(n for tier in tiers for n in tier)}
        asked = sorted(state["turns"], key=lambda turn: (turn.round, listed.get(turn.agent, 0)))
        turns = [turn for turn in asked if turn.round == round]
        vote = context.aggregator
        assert isinstance(vote, Vote)  # see check()
        tier_answer = vote.choose(turns)
        confidence = tier_confidence(turns, tier_answer, self.confidence)
        answer = tier_answer if self.decide == "tier" else vote.choose(asked)
        record = {
            "tier": round,
            "agents": tiers[round - 1],
            "answer": tier_answer,
            "confidence": confidence,
            "usage": Usage.sum([turn.usage for turn in turns]).model_dump(),
        }
        update: CascadeState = {"round": round + 1, "tiers": [record], "answer": answer}
        last = round >= len(tiers)
        # A last tier is where the cascade ends ("rounds"); a vote of every tier says whether
        # its last window of several agreed ("confident") or the samples ran out split.
        window = self.decide == "all" and len(tiers[round - 1]) > 1
        if confidence >= self.threshold and (not last or window):
            update["stop_reason"] = "confident"
        elif last:
            update["stop_reason"] = "rounds"
        return update

    def _next(self, state: CascadeState, runtime: Runtime[RunContext]) -> Any:
        return END if state.get("stop_reason") else self._ask_tier(state, runtime)


class TierOutcome(BaseModel):
    """One tier's answer to one labelled question."""

    correct: bool
    confidence: float
    tokens: int


class Calibration(BaseModel):
    """The threshold a labelled set recommends, and what it gave on that set."""

    threshold: float
    accuracy: float
    tokens_per_question: float
    escalated: float
    """Share of questions sent past the first tier."""
    strongest_accuracy: float


def simulate(profiles: list[list[TierOutcome]], threshold: float) -> tuple[float, float, float]:
    """(accuracy, tokens per question, share escalated) of a cascade at `threshold`, each tier
    deciding alone (`decide="tier"`)."""
    correct = tokens = escalated = 0.0
    for tiers in profiles:
        for position, outcome in enumerate(tiers):
            tokens += outcome.tokens
            if outcome.confidence >= threshold or position == len(tiers) - 1:
                correct += outcome.correct
                escalated += position > 0
                break
    count = len(profiles)
    return correct / count, tokens / count, escalated / count


def calibrate(profiles: list[list[TierOutcome]], margin: float = 0.02) -> Calibration:
    """The cheapest threshold whose accuracy stays within `margin` of the strongest tier's."""
    if not profiles:
        raise ValueError("calibration needs at least one labelled question")
    strongest = sum(tiers[-1].correct for tiers in profiles) / len(profiles)
    candidates = sorted({o.confidence for tiers in profiles for o in tiers} | {0.0, 1.0 + 1e-9})
    best: Calibration | None = None
    for threshold in candidates:
        accuracy, tokens, escalated = simulate(profiles, threshold)
        if accuracy >= strongest - margin and (best is None or tokens < best.tokens_per_question):
            best = Calibration(
                threshold=min(threshold, 1.0),
                accuracy=accuracy,
                tokens_per_question=tokens,
                escalated=escalated,
                strongest_accuracy=strongest,
            )
    assert best is not None  # the highest threshold always escalates to the strongest tier
    return best
