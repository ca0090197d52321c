"""Ready-made societies from the papers."""

from __future__ import annotations

from itertools import product
from typing import Any

from langchain_core.language_models import BaseChatModel

from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.aggregate.extract import ExtractKind
from moot.aggregate.vote import MajorityVote
from moot.graphs.debate import Debate
from moot.society import Society

MACHINESOM_STRATEGIES = ["-".join(moves) for moves in product(("debate", "reflect"), repeat=3)]
"""The 8 strategies of MachineSoM: a move (debate or reflect) for each of 3 rounds."""


def machinesom(
    overconfident: int = 0,
    strategy: str = "debate-debate-debate",
    model: str | BaseChatModel = "local",
    extract: ExtractKind = "choice",
    **sampling: Any,
) -> Society:
    """A MachineSoM society: 3 agents, the first `overconfident` of them overconfident and the
    rest easy-going; an independent first answer, then the strategy's 3 moves; the answer is
    the plurality if at least two agents give it, else none."""
    if not 0 <= overconfident <= 3:
        raise ValueError(f"overconfident must be 0 to 3 (of 3 agents), got {overconfident}")
    agents = [
        Agent(
            name=f"agent{index + 1}",
            trait="overconfident" if index < overconfident else "easy-going",
            model=model,
            **sampling,
        )
        for index in range(3)
    ]
    return Society(
        agents=agents,
        protocol=Debate.model_validate({"strategy": strategy}),
        aggregator=MajorityVote(extract=extract, min_votes=2),
    )


def machinesom_grid(
    model: str | BaseChatModel = "local", extract: ExtractKind = "choice", **sampling: Any
) -> dict[str, Society]:
    """All 4 societies (0-3 overconfident agents) x 8 strategies, keyed "oc{k}/{strategy}"."""
    return {
        f"oc{overconfident}/{strategy}": machinesom(
            overconfident, strategy, model, extract, **sampling
        )
        for overconfident in range(4)
        for strategy in MACHINESOM_STRATEGIES
    }


def self_consistency(
    agent: Agent, samples: int = 5, aggregator: Aggregator | None = None
) -> Society:
    """N independent samples from one agent's model, then any aggregator (a vote by default).

    The copies are named NAME1..NAMEn; a seeded agent's copies get seeds seed, seed+1, ...
    so the samples differ."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    copies = [
        agent.model_copy(
            update={
                "name": f"{agent.name}{number + 1}",
                "seed": None if agent.seed is None else agent.seed + number,
            }
        )
        for number in range(samples)
    ]
    return Society(
        agents=copies,
        protocol=Debate(rounds=1),
        aggregator=aggregator or MajorityVote(),
    )
