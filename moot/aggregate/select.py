"""Selection instead of discussion (SLM-MUX, ICLR 2026): on small models, picking the source
whose own samples agree most beats having the sources talk each other round."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from moot.aggregate.base import Aggregator
from moot.result import latest_turns

if TYPE_CHECKING:
    from moot.graphs.types import RunContext, SocietyState, Update

SourceKey = Literal["model", "kind", "model+kind"]
"""What makes agents one source of answers: their model, their kind (text or program), or both."""


def sourced_answers(
    state: SocietyState, context: RunContext, names: list[str], group_by: SourceKey
) -> list[tuple[object, str | None]]:
    """(source, latest answer) of each agent in `names`, in agent order (None: no answer)."""
    index = {agent.name: i for i, agent in enumerate(context.agents)}
    sourced: list[tuple[object, str | None]] = []
    for turn, name in zip(latest_turns(state["turns"], names), names, strict=True):
        agent = context.agents[index[name]]
        model = id(context.models[index[name]])
        key: object = {"model": model, "kind": agent.kind}.get(group_by, (model, agent.kind))
        sourced.append((key, turn.answer if turn else None))
    return sourced


class ConsistencySelect(Aggregator):
    """Group the agents (by model, by kind, or both), take each group's most common answer
    and how many of its agents gave it (its self-consistency), and answer with the group
    that agrees most. Ties go to the earlier group in agent order.

    One group (every agent on one model, all text) makes it the plain majority vote.
    """

    kind: Literal["select"] = "select"

    group_by: SourceKey = "model+kind"
    """What makes a source: the agent's model, its kind (text or program), or both."""
    min_share: float = Field(default=0.0, ge=0, le=1)
    """A group's answer counts only if at least this share of its agents gave it."""

    def aggregate(self, state: SocietyState, context: RunContext, names: list[str]) -> Update:
        groups: dict[object, list[str | None]] = {}
        for source, answer in sourced_answers(state, context, names, self.group_by):
            groups.setdefault(source, []).append(answer)
        best: tuple[float, str] | None = None
        for answers in groups.values():
            counts = Counter(answer for answer in answers if answer is not None)
            if not counts:
                continue
            answer, count = counts.most_common(1)[0]
            share = count / len(answers)
            if share >= self.min_share and (best is None or share > best[0]):
                best = (share, answer)
        return {"answer": best[1] if best else None}
