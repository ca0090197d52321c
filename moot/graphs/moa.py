"""Mixture-of-agents (Wang et al. 2024).

Layers of proposers: layer 1 answers the question; each proposer of a later layer is shown all
replies of the layer before (its own included) in a fresh prompt and writes an improved reply.
An aggregator agent (a `Judge` whose agent has role "aggregator") synthesises the final answer
from the last layer; a vote over it also works.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage
from pydantic import Field, model_validator

import moot.prompts as prompts
from moot.agents import Agent
from moot.graphs._rounds import MAX_ROUNDS, AgentTask, RoundProtocol
from moot.graphs.helpers import note_after, show_replies
from moot.graphs.types import RunContext


class MixtureOfAgents(RoundProtocol):
    """Proposer layers; `layers` is the number of rounds (`rounds` is accepted as its alias)."""

    kind: Literal["mixture"] = "mixture"
    """The name of this protocol in society files and specs (`moot.spec`)."""

    layers: int = Field(default=3, ge=1, le=MAX_ROUNDS)

    @model_validator(mode="before")
    @classmethod
    def _layers_are_rounds(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "rounds" in data and "layers" in data and data["rounds"] != data["layers"]:
                raise ValueError(
                    f"layers={data['layers']} and rounds={data['rounds']} disagree: a mixture's "
                    "rounds are its layers, give one of them"
                )
            data["layers"] = data.get("layers", data.get("rounds", 3))
            if isinstance(data["layers"], int) and data["layers"] > MAX_ROUNDS:
                raise ValueError(f"layers: a mixture takes at most {MAX_ROUNDS} layers")
            data["rounds"] = data["layers"]
        return data

    def participants(self, agents: list[Agent]) -> list[int]:
        proposers = [index for index, agent in enumerate(agents) if agent.role == "proposer"]
        return proposers or list(range(len(agents)))

    def conversation_for(
        self, task: AgentTask, context: RunContext
    ) -> tuple[list[BaseMessage], list[str]]:
        if task["round"] == 1:
            return [HumanMessage(self.first_prompt(task["question"], context))], []
        previous = [
            turn for turn in task["turns"] if turn.round == task["round"] - 1 and not turn.failed
        ]
        if not previous:
            return [HumanMessage(self.first_prompt(task["question"], context))], []
        message = prompts.render(
            "moa/layer",
            question=task["question"],
            replies=show_replies(previous),
            format=context.format_instruction(),
        ) + note_after(task["notes"], task["round"] - 1)
        return [HumanMessage(message)], [turn.agent for turn in previous]
