"""Aggregators with agents of their own: a judge (or MoA's aggregator) that reads the replies
and writes the final answer, and LLM-Blender's pairwise ranker and fuser."""

from __future__ import annotations

from typing import Literal

from langchain_core.messages import HumanMessage
from pydantic import Field

import moot.prompts as prompts
from moot.agents import Agent
from moot.aggregate.base import Aggregator, AnswerFormat
from moot.aggregate.extract import last_labelled
from moot.aggregate.vote import MajorityVote
from moot.graphs.helpers import show_replies
from moot.graphs.types import Call, Calls, RunContext, SocietyState
from moot.result import Turn, latest_turns


def read_preference(text: str) -> str | None:
    """ "A" or "B" from a comparison's last "Better:" line, or None."""
    found = last_labelled(text, "better", "[AB]")
    return found.upper() if found else None


_PREFERENCE = AnswerFormat(extract=read_preference)


def _synthesis(
    state: SocietyState, context: RunContext, agent: Agent, prompt: str, shown: list[Turn]
) -> Call:
    """A judge's or fuser's call: read `shown` and write the final answer."""
    message = prompts.render(
        prompt,
        question=state["question"],
        replies=show_replies(shown),
        format=context.format_instruction(),
    )
    round = max((turn.round for turn in shown), default=1)
    # Read in the format the judge was asked for (what "auto" chose for the question).
    speaker = context.aggregator_speaker(agent, context.answer_format or context.aggregator)
    return Call(speaker, [HumanMessage(message)], round, [turn.agent for turn in shown])


class Judge(Aggregator):
    """An agent that reads every participant's latest reply and writes the final answer.

    A judge (role "judge") decides which answer is right; an aggregator (role "aggregator", as in
    mixture-of-agents) synthesises one answer from all replies. The final answer is read from
    its reply; its turn is part of the record.
    """

    kind: Literal["judge"] = "judge"
    """The name of this aggregator in society files and specs (`moot.spec`)."""

    agent: Agent
    """Who judges; its role picks the prompt (aggregate/judge or aggregate/synthesise)."""

    def prompt_name(self) -> str:
        return "aggregate/synthesise" if self.agent.role == "aggregator" else "aggregate/judge"

    def agents(self) -> list[Agent]:
        return [self.agent]

    def aggregate(self, state: SocietyState, context: RunContext, names: list[str]) -> Calls:
        latest = latest_turns(state["turns"], names)
        candidates = [turn for turn in latest if turn is not None]
        call = _synthesis(state, context, self.agent, self.prompt_name(), candidates)
        (turn,) = yield [call]
        if turn.answer is not None:
            return {"answer": turn.answer, "turns": [turn]}
        # The judge failed or said nothing usable: the participants' vote still stands.
        why = turn.error or "its reply held no answer"
        return {
            "answer": MajorityVote(extract=self.extract).choose(latest),
            "turns": [turn],
            "fallback": f"the {self.agent.role} {self.agent.name} failed ({why}): the answer "
            "is the vote over the latest answers",
        }


class PairwiseRank(Aggregator):
    """LLM-Blender: a judge compares every pair of candidates in both orders (cancelling
    position bias), candidates are ranked by wins, and a fuser writes one answer from the top
    `top_k` (without a fuser, the top candidate's answer wins)."""

    kind: Literal["rank"] = "rank"
    """The name of this aggregator in society files and specs (`moot.spec`)."""

    judge: Agent
    fuser: Agent | None = None
    top_k: int = Field(default=2, ge=1)

    def agents(self) -> list[Agent]:
        return [self.judge, *([self.fuser] if self.fuser else [])]

    def aggregate(self, state: SocietyState, context: RunContext, names: list[str]) -> Calls:
        candidates = [turn for turn in latest_turns(state["turns"], names) if turn is not None]
        comparisons = yield self._comparisons(state, context, candidates)
        ranked = rank(candidates, comparisons)
        if self.fuser is None or not ranked:
            return {"answer": ranked[0].answer if ranked else None, "turns": comparisons}
        top = ranked[: self.top_k]
        (fused,) = yield [_synthesis(state, context, self.fuser, "aggregate/synthesise", top)]
        if fused.answer is not None:
            return {"answer": fused.answer, "turns": [*comparisons, fused]}
        why = fused.error or "its reply held no answer"
        return {
            "answer": ranked[0].answer,
            "turns": [*comparisons, fused],
            "fallback": f"the fuser {self.fuser.name} failed ({why}): the answer is the "
            "top-ranked candidate's",
        }

    def _comparisons(
        self, state: SocietyState, context: RunContext, candidates: list[Turn]
    ) -> list[Call]:
        """Every ordered pair of candidates, for the judge; a comparison shows (A, B) as peers."""
        judge = context.aggregator_speaker(self.judge, _PREFERENCE)
        return [
            Call(
                judge,
                [
                    HumanMessage(
                        prompts.render(
                            "aggregate/compare",
                            question=state["question"],
                            first=first.text,
                            second=second.text,
                        )
                    )
                ],
                first.round,
                [first.agent, second.agent],
            )
            for first in candidates
            for second in candidates
            if first is not second
        ]


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
