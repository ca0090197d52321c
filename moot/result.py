"""What a run produces: turns, their usage and the final answer."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field


class Usage(BaseModel):
    """Tokens, model calls and money, for one turn or summed over a run."""

    input_tokens: int = 0
    """Prompt tokens sent to the model."""
    output_tokens: int = 0
    """Tokens the model generated."""
    total_tokens: int = 0
    """input_tokens + output_tokens."""
    calls: int = 0
    """Model calls made, failed calls and retries included (not calls answered by the cache)."""
    retries: int = 0
    """Calls that repeated a failed call (a rate limit, a server error, a dropped connection)."""
    cached_calls: int = 0
    """Calls answered from the call cache: no model ran; their tokens are the stored reply's."""
    cost: float | None = None
    """Money spent, in the unit of the prices given (`price_in`, `price_out` per million
    tokens); None when no model in it had prices. Cache hits cost nothing."""

    def __add__(self, other: Usage) -> Usage:
        costs = [usage.cost for usage in (self, other) if usage.cost is not None]
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            calls=self.calls + other.calls,
            retries=self.retries + other.retries,
            cached_calls=self.cached_calls + other.cached_calls,
            cost=sum(costs) if costs else None,
        )

    @classmethod
    def sum(cls, usages: list[Usage]) -> Usage:
        total = cls()
        for usage in usages:
            total = total + usage
        return total


def format_cost(cost: float | None) -> str:
    """A cost in the unit of the prices given, with the digits fractions of a cent need."""
    if cost is None:
        return "-"
    return f"{cost:.6f}".rstrip("0").rstrip(".") if cost else "0"


class FusionStats(BaseModel):
    """How a fused model (`moot.fusion.FusedChatModel`) produced a reply."""

    strategy: str
    """prob, logit or colm."""
    models: list[str]
    """The fused models' file names, base model first."""
    tokens_by_model: list[int]
    """Tokens each model gave: colm, the tokens it generated; prob and logit, the tokens it
    gave the highest probability of all models."""
    evaluated_by_model: list[int]
    """Tokens each model decoded (its uncached prompt and every step)."""
    deferral_rate: float | None = None
    """colm: share of the reply's tokens the base deferred to the assistant."""


class ToolCall(BaseModel):
    """One tool call an agent made during its turn."""

    name: str
    """The tool's name as the model called it."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: str | None = None
    """What the tool returned (as the model was shown it), or None when it failed."""
    error: str | None = None
    """Why the call failed: the tool raised, no tool has that name, or the call was malformed."""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    def summary(self) -> str:
        """One line: `name(arguments) -> result` (or `-> error: ...`)."""
        arguments = ", ".join(f"{name}={value!r}" for name, value in self.arguments.items())
        outcome = self.result if self.error is None else f"error: {self.error}"
        return f"{self.name}({arguments}) -> {outcome}"


class Turn(BaseModel):
    """One agent's contribution in one round."""

    round: int
    """1-based round number; round 1 is the independent first answer."""
    agent: str
    """Name of the agent that spoke."""
    role: str
    """The agent's role (debater, critic, ...)."""
    text: str = ""
    """Everything the model replied; empty when the call failed."""
    answer: str | None = None
    """The answer extracted from `text`, or None when none could be found."""
    answer_error: str | None = None
    """Why no answer could be read, where the format says (typed answers: the parse error)."""
    peers: list[str] = Field(default_factory=list)
    """Agents whose previous answers this turn was shown."""
    usage: Usage = Field(default_factory=Usage)
    """What this turn cost."""
    confidence: float | None = None
    """How sure the model was of `answer`, in [0, 1]: from token logprobs when the model gave
    them, else from a "Confidence:" line in the reply, else None."""
    error: str | None = None
    """Why the model call failed, or None when it succeeded."""
    fusion: FusionStats | None = None
    """For a fused model's reply: which model gave how many tokens (None otherwise)."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    """The tools the agent called before its reply, in order (their usage is in `usage`)."""

    @property
    def failed(self) -> bool:
        return self.error is not None


class RoundStats(BaseModel):
    """How the participants' answers stood after one round."""

    round: int
    answers: dict[str, int]
    """Each distinct answer and how many agents gave it (failed or unreadable turns left out)."""
    changed: list[str]
    """Agents whose answer differs from their own answer of the round before."""
    agreement: float
    """Share of the round's agents that gave the most common answer (an agent whose turn
    failed or gave no readable answer counts, agreeing with nobody; 0 when none answered)."""


StopReason = Literal[
    "rounds", "consensus", "token_budget", "accepted", "moderator", "confident", "failed"
]
"""Why a run ended: "rounds" (every round ran; a router's or pipeline's single pass),
"consensus" (enough agents agreed), "token_budget" (the budget was spent), "accepted" (every
critic accepted the draft), "moderator" (the moderator stopped it), "confident" (a cascade tier
was sure enough; with `decide="all"` the last window too, where "rounds" means no window
agreed), "failed" (every agent's call failed in a whole round)."""


class Result(BaseModel):
    """The outcome of running a society on one question."""

    question: str
    answer: str | None
    """The aggregated final answer, or None when no answer won."""
    answer_object: Any = None
    """With `Society(answer_schema=...)`: the winning answer as an instance of the schema (None
    when no answer won); `answer` is then its vote key (the `vote_on` field, or its JSON)."""
    turns: list[Turn]
    """Every turn in order of round, then agent order (a judge's turn comes last)."""
    usage: Usage
    """Usage summed over all turns."""
    rounds: int
    """Rounds actually run."""
    stop_reason: StopReason = "rounds"
    """Why the run ended (see `StopReason`)."""
    answer_format: str | None = None
    """The answer format agents were asked for and read in ("number", "choice", "yesno",
    "short", ...; what "auto" chose for this question), "schema" for typed answers."""
    conformity: list[RoundStats] = Field(default_factory=list)
    """Per round: answer distribution, who changed their answer, agreement."""
    details: dict[str, Any] = Field(default_factory=dict)
    """What the protocol adds (its `details()`): a router's chosen experts ("route"), a
    cascade's tiers ("tiers"); and "fallback": why the answer is a vote although a judge or
    fuser was to give it (it failed or gave no answer)."""

    def round_turns(self, round: int) -> list[Turn]:
        return [turn for turn in self.turns if turn.round == round]


def round_stats(turns: list[Turn], participants: list[str]) -> list[RoundStats]:
    """Conformity per round over the participants' turns (judges and critics are not counted)."""
    stats: list[RoundStats] = []
    previous: dict[str, str] = {}
    for round in sorted({turn.round for turn in turns}):
        current = {
            turn.agent: turn.answer
            for turn in turns
            if turn.round == round and turn.agent in participants and turn.answer is not None
        }
        counts = Counter(current[name] for name in participants if name in current)
        changed = [
            name
            for name in participants
            if name in current and name in previous and current[name] != previous[name]
        ]
        spoke = {t.agent for t in turns if t.round == round and t.agent in participants}
        stats.append(
            RoundStats(
                round=round,
                answers=dict(counts),
                changed=changed,
                agreement=max(counts.values()) / len(spoke) if counts else 0.0,
            )
        )
        previous.update(current)
    return stats


def latest_turns(turns: list[Turn], names: list[str]) -> list[Turn | None]:
    """Each named agent's most recent successful turn, in the order of `names`."""
    latest: dict[str, Turn] = {}
    for turn in sorted(turns, key=lambda turn: turn.round):
        if not turn.failed:
            latest[turn.agent] = turn
    return [latest.get(name) for name in names]


def result_of_state(
    state: dict[str, Any],
    agents: list[str],
    participants: list[str],
    details: dict[str, Any] | None = None,
) -> Result:
    """The `Result` of a graph's final state: turns by round, then in the order of `agents`
    (others, such as a judge, last); conformity over `participants`."""
    order = {agent: index for index, agent in enumerate(agents)}
    turns = sorted(
        state.get("turns", []), key=lambda turn: (turn.round, order.get(turn.agent, len(order)))
    )
    return Result(
        question=state.get("question", ""),
        answer=state.get("answer"),
        turns=turns,
        usage=Usage.sum([turn.usage for turn in turns]),
        rounds=max((turn.round for turn in turns), default=0),
        stop_reason=state.get("stop_reason") or "rounds",
        conformity=round_stats(turns, participants),
        details=details or {},
    )
