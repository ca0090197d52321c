"""The last step of a run: vote over the agents' latest answers, or have the aggregator's own
agents read them (a judge, or LLM-Blender's pairwise ranker and fuser)."""

from __future__ import annotations

import asyncio
import re

from langchain_core.messages import BaseMessage, HumanMessage

from moot import prompts
from moot.agents import Agent
from moot.aggregate.vote import AnswerFormat, Judge, PairwiseRank
from moot.graphs._runtime import (
    RunContext,
    SocietyState,
    Speaker,
    acall_agent,
    call_agent,
    latest_turns,
)
from moot.result import Turn

_BETTER = re.compile(r"better\s*:\s*\**\s*([AB])\b", re.IGNORECASE)


def read_preference(text: str) -> str | None:
    """ "A" or "B" from a comparison's last "Better:" line, or None."""
    found = _BETTER.findall(text)
    return found[-1].upper() if found else None


_PREFERENCE = AnswerFormat(extract=read_preference)
Request = tuple[Speaker, list[BaseMessage], int, list[str]]
"""Who to call, on what, in which round, showing which peers."""


def _aggregator_speaker(context: RunContext, agent: Agent, answer_format: AnswerFormat) -> Speaker:
    return Speaker(agent, context.aggregator_models[agent.name], answer_format)


def _shown(turns: list[Turn]) -> str:
    return "\n\n".join(
        prompts.render("debate/peer", peer=turn.agent, text=turn.text) for turn in turns
    )


def _synthesis(
    state: SocietyState, context: RunContext, agent: Agent, prompt: str, shown: list[Turn]
) -> Request:
    """A judge's or fuser's call: read `shown` and write the final answer."""
    message = prompts.render(
        prompt,
        question=state["question"],
        replies=_shown(shown),
        format=context.format_instruction(),
    )
    round = max((turn.round for turn in shown), default=1)
    speaker = _aggregator_speaker(context, agent, context.aggregator)
    return speaker, [HumanMessage(message)], round, [turn.agent for turn in shown]


def _comparisons(state: SocietyState, context: RunContext, candidates: list[Turn]) -> list[Request]:
    """Every ordered pair of candidates, for the ranker's judge."""
    ranker = context.aggregator
    assert isinstance(ranker, PairwiseRank)
    judge = _aggregator_speaker(context, ranker.judge, _PREFERENCE)
    requests: list[Request] = []
    for first in candidates:
        for second in candidates:
            if first is not second:
                message = prompts.render(
                    "aggregate/compare",
                    question=state["question"],
                    first=first.text,
                    second=second.text,
                )
                requests.append(
                    (judge, [HumanMessage(message)], first.round, [first.agent, second.agent])
                )
    return requests


def rank(candidates: list[Turn], comparisons: list[Turn]) -> list[Turn]:
    """Candidates by pairwise wins (ties keep agent order); a comparison shows (A, B) as peers."""
    wins = {turn.agent: 0 for turn in candidates}
    for comparison in comparisons:
        first, second = comparison.peers
        if comparison.answer == "A":
            wins[first] += 1
        elif comparison.answer == "B":
            wins[second] += 1
    return sorted(candidates, key=lambda turn: -wins[turn.agent])


def aggregate(state: SocietyState, context: RunContext, names: list[str]) -> SocietyState:
    """Vote over, or have the aggregator's agents read, the named agents' latest answers."""
    aggregator = context.aggregator
    latest = latest_turns(state["turns"], names)
    candidates = [turn for turn in latest if turn is not None]
    if isinstance(aggregator, Judge):
        request = _synthesis(state, context, aggregator.agent, aggregator.prompt_name(), candidates)
        turn = _call(request)
        return {"answer": turn.answer, "turns": [turn]}
    if isinstance(aggregator, PairwiseRank):
        comparisons = [_call(request) for request in _comparisons(state, context, candidates)]
        fusion, answer = _fusion(state, context, candidates, comparisons)
        if fusion is None:
            return {"answer": answer, "turns": comparisons}
        fused = _call(fusion)
        return {"answer": fused.answer, "turns": [*comparisons, fused]}
    return {"answer": aggregator.choose(latest)}


async def aaggregate(state: SocietyState, context: RunContext, names: list[str]) -> SocietyState:
    """`aggregate` for async graphs: comparisons run concurrently as tasks."""
    aggregator = context.aggregator
    candidates = [turn for turn in latest_turns(state["turns"], names) if turn is not None]
    if isinstance(aggregator, Judge):
        request = _synthesis(state, context, aggregator.agent, aggregator.prompt_name(), candidates)
        turn = await _acall(request)
        return {"answer": turn.answer, "turns": [turn]}
    if isinstance(aggregator, PairwiseRank):
        requests = _comparisons(state, context, candidates)
        comparisons = list(await asyncio.gather(*(_acall(request) for request in requests)))
        fusion, answer = _fusion(state, context, candidates, comparisons)
        if fusion is None:
            return {"answer": answer, "turns": comparisons}
        fused = await _acall(fusion)
        return {"answer": fused.answer, "turns": [*comparisons, fused]}
    return aggregate(state, context, names)


def _fusion(
    state: SocietyState, context: RunContext, candidates: list[Turn], comparisons: list[Turn]
) -> tuple[Request | None, str | None]:
    """The fuser's call on the top-ranked candidates, or (no fuser) the top answer."""
    ranker = context.aggregator
    assert isinstance(ranker, PairwiseRank)
    ranked = rank(candidates, comparisons)
    if ranker.fuser is None or not ranked:
        return None, ranked[0].answer if ranked else None
    top = ranked[: ranker.top_k]
    return _synthesis(state, context, ranker.fuser, "aggregate/synthesise", top), None


def _call(request: Request) -> Turn:
    who, conversation, round, peers = request
    return call_agent(who, conversation, round=round, peers=peers)


async def _acall(request: Request) -> Turn:
    who, conversation, round, peers = request
    return await acall_agent(who, conversation, round=round, peers=peers)
