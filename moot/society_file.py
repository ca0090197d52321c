"""Society files: a society written in YAML, validated by pydantic.

    models:                 # optional: names for model specs, shared by the agents naming them
      small: local
      big: {spec: "llama:/models/qwen.gguf", n_ctx: 8192}
    agents:
      - {name: agent, copies: 3, trait: easy-going, model: small}
    protocol: {kind: debate, rounds: 3, consensus: 1.0}
    aggregator: {kind: vote, extract: number}

Errors name the file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.aggregate.extract import ExtractKind
from moot.aggregate.judge import Judge, PairwiseRank
from moot.aggregate.vote import ConfidenceVote, MajorityVote, WeightedVote
from moot.config import describe, read_text
from moot.errors import ConfigError
from moot.graphs.base import BaseProtocol
from moot.graphs.cascade import Cascade
from moot.graphs.critic import CriticLoop
from moot.graphs.debate import Debate
from moot.graphs.moa import MixtureOfAgents
from moot.graphs.pipeline import Pipeline
from moot.graphs.router import Router
from moot.models import backends, load_model
from moot.society import Society


class ModelEntry(BaseModel):
    """A named model: a spec and backend options (any other key is an option)."""

    model_config = ConfigDict(extra="allow")

    spec: str


class AgentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    copies: int = Field(default=1, ge=1)
    """Make this many agents, named NAME1, NAME2, ... (just NAME when 1)."""
    role: str = "debater"
    trait: str | None = None
    description: str | None = None
    model: str = "local"
    """A name from `models`, or a model spec."""
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = None
    seed: int | None = None
    logprobs: bool = False
    timeout: float | None = Field(default=None, gt=0)
    """Seconds one model call may take (see Agent.timeout)."""
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay: float = Field(default=0.5, ge=0)


class DebateEntry(Debate):
    kind: Literal["debate"]


class MixtureEntry(MixtureOfAgents):
    kind: Literal["mixture"]


class CriticEntry(CriticLoop):
    kind: Literal["critic"]


class RouterEntry(Router):
    kind: Literal["router"]


class CascadeEntry(Cascade):
    kind: Literal["cascade"]


class PipelineEntry(Pipeline):
    kind: Literal["pipeline"]


class VoteEntry(MajorityVote):
    kind: Literal["vote"]
    extract: ExtractKind = "number"


class WeightedEntry(WeightedVote):
    kind: Literal["weighted"]
    extract: ExtractKind = "number"


class ConfidenceEntry(ConfidenceVote):
    kind: Literal["confidence"]
    extract: ExtractKind = "number"


class RankEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["rank"]
    extract: ExtractKind = "number"
    judge: AgentEntry
    fuser: AgentEntry | None = None
    top_k: int = Field(default=2, ge=1)


class JudgeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["judge"]
    extract: ExtractKind = "number"
    agent: AgentEntry


class SocietyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    models: dict[str, str | ModelEntry] = Field(default_factory=dict)
    agents: list[AgentEntry] = Field(min_length=1)
    protocol: Annotated[
        DebateEntry | MixtureEntry | CriticEntry | RouterEntry | CascadeEntry | PipelineEntry,
        Field(discriminator="kind"),
    ] = Field(default_factory=lambda: DebateEntry(kind="debate"))
    aggregator: Annotated[
        VoteEntry | WeightedEntry | ConfidenceEntry | JudgeEntry | RankEntry,
        Field(discriminator="kind"),
    ] = Field(default_factory=lambda: VoteEntry(kind="vote"))
    max_concurrency: int | None = Field(default=None, ge=1)


def load_society(path: str | Path, *, model: str | BaseChatModel | None = None) -> Society:
    """The society written in the YAML file at `path`; `model` replaces every agent's model."""
    path = Path(path)
    text = read_text(path, "society file")
    try:
        data = yaml.safe_load(text)
        lines = _line_index(yaml.compose(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a society file is a mapping with at least an 'agents' list")
    try:
        spec = SocietyFile.model_validate(data)
        return _build(spec, lines, path, model)
    except ValidationError as error:
        raise ConfigError(_describe(error, lines, path)) from error


def _build(
    spec: SocietyFile,
    lines: dict[tuple[Any, ...], int],
    path: Path,
    override: str | BaseChatModel | None,
) -> Society:
    models: dict[str, str | BaseChatModel] = {}

    def resolve(entry: AgentEntry, where: tuple[Any, ...]) -> str | BaseChatModel:
        if override is not None:
            return override
        if entry.model in spec.models:
            if entry.model not in models:
                named = spec.models[entry.model]
                if isinstance(named, str):
                    models[entry.model] = named
                else:
                    models[entry.model] = load_model(named.spec, **(named.model_extra or {}))
            return models[entry.model]
        prefix = entry.model.partition(":")[0]
        if entry.model != "local" and prefix not in backends():
            line = _line_of(lines, (*where, "model"))
            known = ", ".join(["local", *(f"{p}:..." for p in backends())])
            raise ConfigError(
                f"{path}:{line}: {'.'.join(map(str, (*where, 'model')))}: '{entry.model}' is "
                f"neither a name under 'models' nor a model spec ({known})"
            )
        return entry.model

    def agents_of(entry: AgentEntry, where: tuple[Any, ...]) -> list[Agent]:
        settings = entry.model_dump(exclude={"name", "copies", "model"})
        model = resolve(entry, where)
        if entry.copies == 1:
            return [Agent(name=entry.name, model=model, **settings)]
        return [
            Agent(name=f"{entry.name}{number}", model=model, **settings)
            for number in range(1, entry.copies + 1)
        ]

    agents = [
        agent
        for index, entry in enumerate(spec.agents)
        for agent in agents_of(entry, ("agents", index))
    ]
    entry = spec.aggregator
    aggregator: Aggregator
    if isinstance(entry, JudgeEntry):
        judge = agents_of(entry.agent, ("aggregator", "agent"))[0]
        aggregator = Judge(agent=judge, extract=entry.extract)
    elif isinstance(entry, RankEntry):
        aggregator = PairwiseRank(
            judge=agents_of(entry.judge, ("aggregator", "judge"))[0],
            fuser=agents_of(entry.fuser, ("aggregator", "fuser"))[0] if entry.fuser else None,
            top_k=entry.top_k,
            extract=entry.extract,
        )
    else:
        voting: dict[str, type[MajorityVote | WeightedVote | ConfidenceVote]] = {
            "vote": MajorityVote,
            "weighted": WeightedVote,
            "confidence": ConfidenceVote,
        }
        aggregator = voting[entry.kind](**entry.model_dump(exclude={"kind"}))
    protocol = spec.protocol.model_dump(exclude={"kind"})
    protocol_class: dict[str, type[BaseProtocol]] = {
        "debate": Debate,
        "mixture": MixtureOfAgents,
        "critic": CriticLoop,
        "router": Router,
        "cascade": Cascade,
        "pipeline": Pipeline,
    }
    try:
        return Society(
            agents=agents,
            protocol=protocol_class[spec.protocol.kind](**protocol),
            aggregator=aggregator,
            max_concurrency=spec.max_concurrency,
        )
    except ConfigError as error:
        cause = error.__cause__
        message = describe(cause) if isinstance(cause, ValidationError) else str(error)
        line = _line_of(lines, ("protocol",))
        raise ConfigError(f"{path}:{line}: {message}") from error


def _line_index(node: yaml.Node | None, at: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """1-based line of every mapping key and sequence item, by its path."""
    lines: dict[tuple[Any, ...], int] = {}
    if node is None:
        return lines
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*at, key.value)
            lines.update(_line_index(value, child))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_index(item, (*at, index)))
    return lines


def _line_of(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int:
    """The line of the deepest part of `loc` present in the file (pydantic adds union tags)."""
    found: tuple[Any, ...] = ()
    for part in loc:
        if (*found, part) in lines:
            found = (*found, part)
    return lines.get(found, 1)


_KINDS = {"debate", "mixture", "critic", "router", "cascade", "pipeline"} | {
    "vote", "weighted", "confidence", "judge", "rank",
}  # fmt: skip


def _describe(error: ValidationError, lines: dict[tuple[Any, ...], int], path: Path) -> str:
    """`FILE:LINE: field.path: what is wrong` for the first problem."""
    loc = tuple(error.errors()[0]["loc"])
    return f"{path}:{_line_of(lines, loc)}: {describe(error, skip=_KINDS, whole='file')}"
