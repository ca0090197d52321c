"""Ready-made societies from the papers."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from itertools import product, zip_longest
from typing import Any, Literal, ParamSpec, cast

from langchain_core.language_models import BaseChatModel

from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.aggregate.extract import ExtractKind, kind_for
from moot.aggregate.vote import MajorityVote
from moot.graphs.cascade import Cascade
from moot.graphs.debate import Debate, PromptSet, RoundStrategy
from moot.society import Society
from moot.spec import AgentSpec, SocietySpec, society_fields

P = ParamSpec("P")
DEFAULT_AGENTS, DEFAULT_ROUNDS = 3, 2
"""The society `moot debate` runs when no flag says otherwise: this many text agents and
rounds, decided by a vote."""
DEFAULT_PROGRAMS = DEFAULT_AGENTS
"""Where the answer is a number (and moot's prompts ask), the default society is instead
the text agents and as many program agents answering once, two at a time (text 1 with
program 1, ...) until two agree, by majority vote of every answer given: on the 1.5B no debate
round measured beat the vote of the first answers, program agents are right on arithmetic
where text agents slip, and stopping early gave the same answers for 26-45% fewer tokens
(BENCHMARKS.md, issue 38)."""


DEBATE_FLAGS = ("rounds", "programs", "decide", "consensus", "update", "anonymous", "peers_shown")
"""`moot debate`'s settings that shape a debate: given any of them (or --moderate), a numeric
question gets the text debate's defaults for the rest, not the mixed vote."""


VOTED_KINDS = ("number", "choice")
"""Answer formats whose default society (in moot's prompts) answers once and votes: a number
(with program agents) and a choice. On MMLU the vote of 3 first answers scored as well as the
3x2 debate at a quarter of its tokens (46% against 44%, BENCHMARKS.md, issue 17)."""


def default_society_flags(settings: Mapping[str, Any], question: str) -> dict[str, Any]:
    """`moot debate`'s --rounds, --programs and --decide where not given: for a question whose
    answer is a number or a choice, asked in moot's prompts, with no flag that shapes a debate,
    one round and a vote (a number also gets as many program agents as text agents, and
    --stop-early); else the text debate's defaults for those not given: 2 rounds, no program
    agents, and in moot's prompts the trajectory vote (every round's answers, a changed one
    counting half; re-decided offline, stored debates were right more often by it than by the
    last round's vote on every task measured, BENCHMARKS.md), in a paper's the last round's."""
    kind = _kind_of(settings.get("extract"), question)
    implied = {"rounds": 1, "decide": "vote"} if settings.get("stop_early") else {}
    given = [
        settings.get(key)
        for key in (*DEBATE_FLAGS, "moderate")
        if key not in implied or settings.get(key) != implied[key]  # what --stop-early means
    ]
    shaped = any(value is not None and value is not False for value in given)  # 0 is given
    if kind in VOTED_KINDS and (settings.get("prompts") or "moot") == "moot" and not shaped:
        if kind == "choice":
            return {"rounds": 1, "programs": 0, "decide": "vote"}
        programs = settings.get("agents") or DEFAULT_AGENTS
        return {"rounds": 1, "programs": programs, "decide": "vote", "stop_early": True}
    rounds = 1 if settings.get("stop_early") else DEFAULT_ROUNDS  # (it answers once)
    debates = (settings.get("rounds") or rounds) > 1
    moot_prompts = (settings.get("prompts") or "moot") == "moot"
    text = {
        "rounds": rounds,
        "programs": 0,
        "decide": "trajectory" if debates and moot_prompts else "vote",
    }
    return {key: text[key] if settings.get(key) is None else settings[key] for key in text}


def early_stopping_vote(text: list[str], programs: list[str], window: int = 2) -> Cascade:
    """An early-stopping vote (ESC, Li et al. 2024) over the named agents: drawn in turns, text
    first (text 1, program 1, text 2, ...), `window` at a time, so a window of two holds both
    ways of answering; it stops at the first window that agrees and decides by all drawn."""
    drawn = [name for pair in zip_longest(text, programs) for name in pair if name is not None]
    windows = [drawn[start : start + window] for start in range(0, len(drawn), window)]
    return Cascade(tiers=windows, threshold=1.0, decide="all")


def default_method(extract: object, prompt_set: str = "moot") -> str:
    """The default society for answers in `extract` as a bench method (`moot bench --methods
    default`)."""
    if prompt_set == "moot" and extract == "number":
        return f"vote-{DEFAULT_AGENTS}-pal{DEFAULT_PROGRAMS}-stop2"
    if prompt_set == "moot" and extract == "choice":
        return f"vote-{DEFAULT_AGENTS}"
    if prompt_set == "moot":
        return f"debate-{DEFAULT_AGENTS}x{DEFAULT_ROUNDS}-trajectory"
    return f"debate-{DEFAULT_AGENTS}x{DEFAULT_ROUNDS}"


def _kind_of(extract: object, question: str) -> object:
    """The answer format: `extract`, or what "auto" reads in the question."""
    return kind_for(question) if extract == "auto" else extract


MACHINESOM_STRATEGIES = ["-".join(moves) for moves in product(("debate", "reflect"), repeat=3)]
"""The 8 strategies of MachineSoM: a move (debate or reflect) for each of 3 rounds."""


def machinesom_spec(
    overconfident: int = 0,
    strategy: str = "debate-debate-debate",
    model: str | BaseChatModel = "local",
    extract: ExtractKind = "choice",
    prompts: Literal["moot", "som"] = "moot",
    reflector_seed: int = 0,
    **sampling: Any,
) -> SocietySpec:
    """A MachineSoM society: 3 agents, the first `overconfident` of them overconfident and the
    rest easy-going; an independent first answer, then the strategy's 3 moves; the answer is
    the plurality if at least two agents give it, else none.

    `prompts="som"` runs it as zjunlp/MachineSoM's code does: their prompts for the task
    (MMLU's for choice answers, MATH's for boxed or numeric ones), and in each debate round
    one agent, drawn at random (`reflector_seed`), reflects while the other two debate."""
    if not 0 <= overconfident <= 3:
        raise ValueError(f"overconfident must be 0 to 3 (of 3 agents), got {overconfident}")
    names = [f"agent{index + 1}" for index in range(3)]
    moves = cast(list[RoundStrategy], [move.strip() for move in strategy.split("-")])
    prompt_set: PromptSet = "moot"
    if prompts == "som":
        prompt_set = _som_prompt_set(extract)
        draw = random.Random(reflector_seed)
        moves = [{draw.choice(names): "reflect"} if m == "debate" else m for m in moves]
    agents = [
        AgentSpec(
            name=name,
            trait="overconfident" if index < overconfident else "easy-going",
            model=model,
            **sampling,
        )
        for index, name in enumerate(names)
    ]
    return SocietySpec(
        agents=agents,
        protocol=Debate(strategy=moves, prompt_set=prompt_set),
        aggregator=MajorityVote(extract=extract, min_votes=2),
    )


def _built(make_spec: Callable[P, SocietySpec]) -> Callable[P, Society]:
    """A preset that builds the society of `make_spec`, taking the same arguments."""

    @functools.wraps(make_spec)
    def make(*args: P.args, **kwargs: P.kwargs) -> Society:
        return Society(**society_fields(make_spec(*args, **kwargs)))

    make.__name__ = make.__qualname__ = make_spec.__name__.removesuffix("_spec")
    return make


machinesom = _built(machinesom_spec)


def _som_prompt_set(extract: ExtractKind) -> PromptSet:
    if extract == "choice":
        return "som-mmlu"
    if extract in ("boxed", "number"):
        return "som-math"
    raise ValueError(
        f"MachineSoM's prompts cover multiple-choice (MMLU) and math answers, not {extract!r} "
        "(their chess prompts are not reproduced): use prompts='moot'"
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
        AgentSpec.of(agent).model_copy(
            update={
                "name": f"{agent.name}{number + 1}",
                "seed": None if agent.seed is None else agent.seed + number,
            }
        )
        for number in range(samples)
    ]
    spec = SocietySpec(
        agents=copies, protocol=Debate(rounds=1), aggregator=aggregator or MajorityVote()
    )
    return Society(**society_fields(spec))
