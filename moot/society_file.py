"""Society files: a society written in YAML, validated by pydantic.

    models:                 # optional: names for model specs, shared by the agents naming them
      small: local
      big: {spec: "llama:/models/qwen.gguf", n_ctx: 8192}
    agents:
      - {name: agent, copies: 3, trait: easy-going, model: small}
    protocol: {kind: debate, rounds: 3, consensus: 1.0}
    aggregator: {kind: vote, extract: number}
    answer_schema: {value: number, unit: string}   # optional: typed answers (or "module:Model")
    vote_on: value

Errors name the file, the line and the field.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path
from types import GenericAlias
from typing import Annotated, Any, Literal

from langchain_core.language_models import BaseChatModel
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from moot.agents import Agent, ToolChoice, check_tool_choice
from moot.aggregate.base import Aggregator
from moot.aggregate.extract import ExtractKind
from moot.aggregate.judge import Judge, PairwiseRank
from moot.aggregate.vote import ConfidenceVote, MajorityVote, WeightedVote
from moot.config import describe
from moot.errors import ConfigError, ModelSpecError
from moot.graphs.base import BaseProtocol
from moot.graphs.cascade import Cascade
from moot.graphs.critic import CriticLoop
from moot.graphs.debate import Debate
from moot.graphs.moa import MixtureOfAgents
from moot.graphs.pipeline import Pipeline
from moot.graphs.router import Router
from moot.models import backends, load_model
from moot.society import MAX_AGENTS, Society
from moot.yaml_file import Lines, line_of, load_yaml, located


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
    tools: list[str] = Field(default_factory=list)
    """Built-in tool names ("calculator") or "module:attribute" paths (see Agent.tools)."""
    max_tool_calls: int = Field(default=4, ge=0, le=50)
    tool_choice: ToolChoice = "auto"

    @field_validator("tools")
    @classmethod
    def _tools_exist(cls, tools: list[str]) -> list[str]:
        from moot.tools import as_tool

        for name in tools:
            as_tool(name)  # an unknown or unimportable tool is this field's error
        return tools

    @model_validator(mode="after")
    def _tool_choice_has_tools(self) -> AgentEntry:
        check_tool_choice(self.tool_choice, self.tools)
        return self


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
    aggregator: (
        Annotated[
            VoteEntry | WeightedEntry | ConfidenceEntry | JudgeEntry | RankEntry,
            Field(discriminator="kind"),
        ]
        | None
    ) = None
    """None: the protocol's own (a debate votes in the format its prompts ask for, "auto")."""
    max_concurrency: int | None = Field(default=None, ge=1)
    answer_schema: str | dict[str, str] | None = None
    """Typed answers: "module:Model" (a pydantic model), or the answer's fields by type name."""
    vote_on: str | None = None


_FIELD_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}
FIELD_TYPES = ", ".join([*_FIELD_TYPES, *(f"list[{name}]" for name in _FIELD_TYPES)])


def answer_schema(value: str | dict[str, str]) -> type[BaseModel]:
    """The pydantic model a society file's `answer_schema` names or describes.

    A mapping gives each field a type name (string, integer, number, boolean, or list[...] of
    one of them); a trailing "?" makes the field optional.
    """
    if isinstance(value, str):
        try:
            found = pkgutil.resolve_name(value)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(f"'{value}' cannot be imported ({error}): use MODULE:MODEL") from None
        if not (isinstance(found, type) and issubclass(found, BaseModel)):
            raise ValueError(f"'{value}' is not a pydantic model")
        return found
    if not value:
        raise ValueError("give the answer at least one field, e.g. {value: number}")
    fields: dict[str, Any] = {}
    for name, type_name in value.items():
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"field name '{name}' must be a word of letters, digits and _")
        optional = type_name.endswith("?")
        base = type_name.removesuffix("?").replace(" ", "")
        inner = base[5:-1] if base.startswith("list[") and base.endswith("]") else None
        if (inner or base) not in _FIELD_TYPES:
            raise ValueError(f"field '{name}': unknown type '{type_name}' (use {FIELD_TYPES})")
        kind = GenericAlias(list, (_FIELD_TYPES[inner],)) if inner else _FIELD_TYPES[base]
        fields[name] = (kind | None, None) if optional else (kind, ...)
    model: type[BaseModel] = create_model("Answer", **fields)
    return model


def load_society(path: str | Path, *, model: str | BaseChatModel | None = None) -> Society:
    """The society written in the YAML file at `path`; `model` replaces every agent's model."""
    path = Path(path)
    data, lines = load_yaml(path, "society file")
    try:
        spec = SocietyFile.model_validate(data)
        return _build(spec, lines, path, model)
    except ValidationError as error:
        raise ConfigError(located(error, lines, path, _KINDS)) from error


def _build(
    spec: SocietyFile,
    lines: Lines,
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
                    try:
                        models[entry.model] = load_model(named.spec, **(named.model_extra or {}))
                    except ModelSpecError as error:  # a bad option: say where it is written
                        line = line_of(lines, ("models", entry.model))
                        raise ConfigError(
                            f"{path}:{line}: models.{entry.model}: {error}"
                        ) from error
            return models[entry.model]
        prefix = entry.model.partition(":")[0]
        if entry.model != "local" and prefix not in backends():
            line = line_of(lines, (*where, "model"))
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

    _check_agent_count(spec, lines, path)
    agents = [
        agent
        for index, entry in enumerate(spec.agents)
        for agent in agents_of(entry, ("agents", index))
    ]
    entry = spec.aggregator
    aggregator: Aggregator | None
    if entry is None:
        aggregator = None
    elif isinstance(entry, JudgeEntry):
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
    schema = None
    if spec.answer_schema is not None:
        try:
            schema = answer_schema(spec.answer_schema)
        except ValueError as error:
            line = line_of(lines, ("answer_schema",))
            raise ConfigError(f"{path}:{line}: answer_schema: {error}") from error
    fields = list(schema.model_fields) if schema else []
    if spec.vote_on is not None and spec.vote_on not in fields:
        line = line_of(lines, ("vote_on",))
        have = f"fields: {', '.join(fields)}" if schema else "there is no answer_schema"
        message = f"vote_on: '{spec.vote_on}' is not a field of the answer ({have})"
        raise ConfigError(f"{path}:{line}: {message}")
    try:
        chosen = {} if aggregator is None else {"aggregator": aggregator}
        return Society(
            agents=agents,
            protocol=protocol_class[spec.protocol.kind](**protocol),
            **chosen,
            max_concurrency=spec.max_concurrency,
            answer_schema=schema,
            vote_on=spec.vote_on,
        )
    except ConfigError as error:
        cause = error.__cause__
        message = describe(cause) if isinstance(cause, ValidationError) else str(error)
        line = line_of(lines, ("protocol",))
        raise ConfigError(f"{path}:{line}: {message}") from error


def _check_agent_count(spec: SocietyFile, lines: Lines, path: Path) -> None:
    """Refuse more agents than a society takes before making them: `copies: 10000000` would
    otherwise build ten million agents (a minute, gigabytes) only to be refused."""
    total = sum(entry.copies for entry in spec.agents)
    if total <= MAX_AGENTS:
        return
    index = max(range(len(spec.agents)), key=lambda at: spec.agents[at].copies)
    where: tuple[Any, ...] = ("agents",)
    if spec.agents[index].copies > 1:
        where = ("agents", index, "copies")
    raise ConfigError(
        f"{path}:{line_of(lines, where)}: {'.'.join(map(str, where))}: the agents come to "
        f"{total:,}, but a society takes at most {MAX_AGENTS:,} (moot.society.MAX_AGENTS)"
    )


_KINDS = frozenset({"debate", "mixture", "critic", "router", "cascade", "pipeline"} | {
    "vote", "weighted", "confidence", "judge", "rank",
})  # fmt: skip
