"""The society of a `moot debate` or `moot run` command, as a spec: made from the flags or read
from the society file, and stored beside the checkpoints so that `moot resume` rebuilds it.

Runs stored before specs kept the command's settings instead ({"command": "debate", "agents": 3,
...}, or the society file's path); `resume` still reads those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moot.aggregate.base import Aggregator
from moot.aggregate.crosscheck import CrossCheckVote
from moot.aggregate.select import ConsistencySelect
from moot.aggregate.trajectory import TrajectoryVote
from moot.aggregate.vote import MajorityVote
from moot.cli._common import count, positive
from moot.errors import ConfigError, ModelSpecError
from moot.graphs.base import BaseProtocol
from moot.graphs.debate import Debate, answer_format_of
from moot.presets import early_stopping_vote
from moot.society import Society
from moot.society_file import SocietyFile
from moot.spec import (
    MAX_AGENTS,
    AgentSpec,
    NamedModel,
    SocietySpec,
    SpecError,
    society_fields,
    with_model,
)

SETTINGS = (
    "command", "agents", "rounds", "model", "model_option", "extract", "temperature",
    "max_tokens", "max_concurrency", "consensus", "society", "timeout", "retries", "tools",
    "tool_choice", "prompts", "seed", "programs", "update", "anonymous", "peers_shown", "decide",
    "stop_early",
)  # fmt: skip
"""The flags that shape a command's society (the keys of a run stored before specs, which had
none of the last six)."""


def command_society(settings: Mapping[str, Any]) -> tuple[SocietySpec, Society]:
    """The spec a command's settings describe, and its society."""
    if settings["command"] == "run":
        return _file_society(settings)
    spec = debate_spec(settings)
    return spec, _society(spec)


def stored(spec: SocietySpec) -> dict[str, Any]:
    """What `moot resume` needs of a run: its spec, as a society file would hold it."""
    return {"spec": spec.file_data()}


def recalled(data: Mapping[str, Any]) -> Society:
    """The society of a stored run (a spec, or the settings of a run stored before specs)."""
    if "spec" in data:
        return _society(SocietySpec.model_validate(data["spec"]))
    return command_society(data)[1]


DECIDERS: dict[str, type[Aggregator]] = {
    "vote": MajorityVote,
    "trajectory": TrajectoryVote,
    "select": ConsistencySelect,
    "crosscheck": CrossCheckVote,
}
"""`moot debate --decide`: how the final answer is chosen from the agents' answers."""


def add_society_flags(parser: Any) -> None:
    """The flags of `moot debate` (and `moot mcp`) that add program agents and set the
    debate's settings against conformity (issue 38). None when not given."""
    parser.add_argument(
        "--programs",
        type=count,
        help="add this many program agents: each answers with a Python program that moot runs "
        "in a sandbox (README: program agents); 0, or as many as text agents for a numeric "
        "question when no flag shapes a debate",
    )
    parser.add_argument(
        "--update",
        choices=["open", "keep"],
        help="how agents are asked to update: open, taking the peers' replies as advice (the "
        "default), or keep, keeping their answer unless they find an error in it",
    )
    parser.add_argument(
        "--anonymous", action="store_true", default=None, help="show peers without names"
    )
    parser.add_argument(
        "--peers-shown", type=positive, metavar="K", help="show each agent K peers, not all"
    )
    parser.add_argument(
        "--stop-early",
        action="store_true",
        default=None,
        help="answer once, two agents at a time (text 1 and program 1, then 2 and 2...), "
        "stopping at the first two that agree, and vote over every answer given: an "
        "early-stopping vote, as right as the vote of all for fewer tokens (BENCHMARKS.md)",
    )
    parser.add_argument(
        "--decide",
        choices=list(DECIDERS),
        help="how the answer is chosen: vote (over the last round; the default for one "
        "round, or a paper's prompts), trajectory (every round scores, a changed answer half; "
        "the default for a debate in moot's prompts), select (the most self-consistent source), "
        "crosscheck (the "
        "answer most sources reached); with one model, select and crosscheck need --programs "
        "to differ from the vote",
    )


def debate_spec(settings: Mapping[str, Any]) -> SocietySpec:
    """`moot debate`'s society: N text agents and K program agents on one model (agent N and
    program N seeded SEED+N-1), Du et al.'s debate, and a decision in the format the prompts
    ask for (a vote unless --decide names another)."""
    texts, programs = settings["agents"], settings.get("programs") or 0
    if texts > MAX_AGENTS:  # before making them
        raise ConfigError(f"--agents: a society takes at most {MAX_AGENTS:,} agents")
    if texts + programs > MAX_AGENTS:
        raise ConfigError(
            f"--agents {texts:,} and {programs:,} program agents (--programs; a number question "
            f"gets as many as --agents by default) come to {texts + programs:,}, but a society "
            f"takes at most {MAX_AGENTS:,} agents"
        )
    keys = ("temperature", "max_tokens", "timeout", "retries")
    fields = {key: settings[key] for key in keys if settings.get(key) is not None}
    tools = {key: settings[key] for key in ("tools", "tool_choice") if settings.get(key)}
    seed = settings.get("seed")
    prompt_set = settings.get("prompts") or "moot"
    for flag, given in (
        ("--programs", programs),
        ("--update keep", settings.get("update") == "keep"),
    ):
        if given and prompt_set != "moot":
            raise ConfigError(
                f"{flag}: that is asked in moot's prompts, not {prompt_set}'s: use --prompts moot"
            )

    def agents(prefix: str, number: int, **kind: Any) -> list[AgentSpec]:
        return [
            AgentSpec(
                name=f"{prefix}{n}",
                model="model",
                seed=None if seed is None else seed + n - 1,
                **fields,
                **kind,
            )
            for n in range(1, number + 1)
        ]

    decide = DECIDERS[settings.get("decide") or "vote"]
    text, coders = agents("agent", texts, **tools), agents("program", programs, kind="program")
    protocol: BaseProtocol = Debate(
        rounds=settings["rounds"],
        consensus=settings.get("consensus"),
        prompt_set=prompt_set,
        update_style=settings.get("update") or "open",
        anonymous=bool(settings.get("anonymous")),
        peers_shown=settings.get("peers_shown"),
    )
    if settings.get("stop_early"):
        _check_stop_early(settings, texts + programs)
        protocol = early_stopping_vote([a.name for a in text], [a.name for a in coders])
    return SocietySpec(
        models={
            "model": NamedModel(spec=settings["model"], **dict(settings.get("model_option", [])))
        },
        # Tools are for text agents: a program agent computes in its program.
        agents=[*text, *coders],
        protocol=protocol,
        aggregator=decide(extract=settings.get("extract") or _stored_before_auto(prompt_set)),
        max_concurrency=settings.get("max_concurrency"),
    )


def _check_stop_early(settings: Mapping[str, Any], agents: int) -> None:
    """--stop-early is a vote that answers once: refuse the flags it would silently ignore."""
    debating = [
        flag
        for flag, key in (
            ("--consensus", "consensus"),
            ("--update", "update"),
            ("--anonymous", "anonymous"),
            ("--peers-shown", "peers_shown"),
        )
        if settings.get(key) is not None
    ]
    if settings["rounds"] != 1 or debating:
        given = ", ".join(debating) or f"--rounds {settings['rounds']}"
        raise ConfigError(f"--stop-early answers once and votes, not a debate: leave out {given}")
    if (settings.get("decide") or "vote") != "vote":
        raise ConfigError("--stop-early decides by the vote of every answer given: no --decide")
    if (settings.get("prompts") or "moot") != "moot":
        raise ConfigError("--stop-early asks in moot's prompts: use --prompts moot")
    if agents < 2:
        raise ConfigError("--stop-early needs two agents at least (--agents, --programs)")


def _stored_before_auto(prompt_set: str) -> str:
    """The format of a run stored before the "auto" format, which kept no format: moot's
    prompts then read numbers, a paper's prompts their own format. (`moot debate` itself
    always names the format: `answer_format_of` its prompts.)"""
    return "number" if prompt_set == "moot" else answer_format_of(prompt_set)


def _file_society(settings: Mapping[str, Any]) -> tuple[SocietySpec, Society]:
    """`moot run`'s society: the file's, on --model if given, with --timeout and --retries."""
    from moot.models import load_model

    file = SocietyFile.read(settings["society"])
    spec = file.spec
    if settings.get("model"):
        load_model(settings["model"])  # a bad --model is said as such, before anything runs
        spec = with_model(spec, settings["model"])
    limits = {key: settings[key] for key in ("timeout", "retries") if settings.get(key) is not None}
    if limits:
        agents = [agent.model_copy(update=limits) for agent in spec.agents]
        spec = spec.model_copy(update={"agents": agents})
    return spec, file.society(spec)


def _society(spec: SocietySpec) -> Society:
    try:
        return Society(**society_fields(spec))
    except SpecError as error:
        if isinstance(error.__cause__, ModelSpecError):  # --model's: said as load_model says it
            raise error.__cause__ from None
        raise
