"""The society of a `moot debate` or `moot run` command, as a spec: made from the flags or read
from the society file, and stored beside the checkpoints so that `moot resume` rebuilds it.

Runs stored before specs kept the command's settings instead ({"command": "debate", "agents": 3,
...}, or the society file's path); `resume` still reads those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moot.aggregate.vote import MajorityVote
from moot.errors import ConfigError, ModelSpecError
from moot.graphs.debate import Debate, answer_format_of
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
    "tool_choice", "prompts", "seed",
)  # fmt: skip
"""The flags that shape a command's society (the keys of a run stored before specs)."""


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


def debate_spec(settings: Mapping[str, Any]) -> SocietySpec:
    """`moot debate`'s society: N agents on one model (agent N seeded SEED+N-1), Du et al.'s
    debate, and a vote in the format the prompts ask for."""
    count = settings["agents"]
    if count > MAX_AGENTS:  # before making them
        raise ConfigError(f"--agents: a society takes at most {MAX_AGENTS:,} agents")
    keys = ("temperature", "max_tokens", "timeout", "retries", "tools", "tool_choice")
    fields = {key: settings[key] for key in keys if settings.get(key) is not None}
    seed = settings.get("seed")
    prompt_set = settings.get("prompts") or "moot"
    agents = [
        AgentSpec(
            name=f"agent{number}",
            model="model",
            seed=None if seed is None else seed + number - 1,
            **fields,
        )
        for number in range(1, count + 1)
    ]
    return SocietySpec(
        models={
            "model": NamedModel(spec=settings["model"], **dict(settings.get("model_option", [])))
        },
        agents=agents,
        protocol=Debate(
            rounds=settings["rounds"], consensus=settings.get("consensus"), prompt_set=prompt_set
        ),
        aggregator=MajorityVote(extract=settings.get("extract") or _stored_before_auto(prompt_set)),
        max_concurrency=settings.get("max_concurrency"),
    )


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
