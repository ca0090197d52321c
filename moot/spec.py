"""A society as data: `SocietySpec` holds what a society file holds, and `society_fields` makes
the society's arguments of it; `spec_of` goes back.

    spec = SocietySpec(agents=[AgentSpec(name="agent", copies=3)], protocol=Debate(rounds=2))
    society = Society.from_spec(spec)      # Society(**society_fields(spec)); also from a mapping
    society.to_spec()                      # spec_of(society); spec.file_data(): a file's mapping

Protocols and aggregators are not mirrored here: each class declares `kind: Literal["name"] =
"name"`, and the spec's `protocol` and `aggregator` are a union of those classes (`moot.kinds`),
told apart by `kind`. A field added to `Debate` is therefore a field of society files at once.

In memory a spec may hold what a file cannot: a model object instead of a spec string, a tool
made from a local function, an answer schema made in Python. `file_data()` names the agent or
field that holds one.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticSerializationError

from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.answer_schema import answer_schema, written_schema
from moot.config import Config
from moot.errors import ConfigError, ModelSpecError
from moot.graphs.base import BaseProtocol
from moot.graphs.debate import Debate
from moot.kinds import AGGREGATORS, PROTOCOLS, union_of
from moot.models import backends, load_model

MAX_AGENTS = 1000
"""The most agents a society takes (a ceiling against typos like --agents 10000): a spec is
refused before its agents are made, and `Society` holds to it too."""

C = TypeVar("C", bound=Config)
Where = tuple[str | int, ...]
"""The path of a field in a spec, e.g. ("agents", 1, "model"); a society file finds its line."""


class SpecError(ConfigError):
    """A spec that cannot become a society; `where` is the path of the field at fault (a
    society file turns it into a line)."""

    def __init__(self, message: str, where: Where = ()) -> None:
        super().__init__(message)
        self.where = where


if TYPE_CHECKING:  # (the unions are made at run time)
    ProtocolSpec = BaseProtocol
    AggregatorSpec = Aggregator
else:
    ProtocolSpec = union_of(PROTOCOLS)
    AggregatorSpec = union_of(AGGREGATORS)


class NamedModel(BaseModel):
    """A model spec with options for its backend (every key but `spec`: n_ctx, base_url,
    price_in...); loaded once, and shared by the agents that name it."""

    model_config = ConfigDict(extra="allow")

    spec: str


class AgentSpec(Agent):
    """An agent as a file writes it: `Agent`'s fields, `model` also a name under the spec's
    `models`, and `copies` of it."""

    copies: int = Field(default=1, ge=1)
    """Make this many agents, named NAME1, NAME2, ... (just NAME when 1)."""

    @classmethod
    def of(cls, agent: Agent) -> AgentSpec:
        """The spec of `agent` (the fields it was given)."""
        return cls(**{name: getattr(agent, name) for name in agent.model_fields_set})

    def each(self) -> list[AgentSpec]:
        """The copies, one spec each."""
        if self.copies == 1:
            return [self]
        return [
            self.model_copy(update={"name": f"{self.name}{number}", "copies": 1})
            for number in range(1, self.copies + 1)
        ]

    def agent(self, model: str | BaseChatModel) -> Agent:
        """The agent of a spec of one copy, on `model` (the named model resolved)."""
        fields = {name: getattr(self, name) for name in self.model_fields_set - {"copies"}}
        return Agent(**{**fields, "model": model})


class SocietySpec(Config):
    """What a society file holds: agents, models by spec string, protocol, aggregator."""

    description: str = ""
    models: dict[str, str | NamedModel] = Field(default_factory=dict)
    """Names for model specs, which agents give as their `model`."""
    agents: list[AgentSpec] = Field(min_length=1)
    protocol: ProtocolSpec = Field(default_factory=Debate)
    """Any protocol by its kind: {kind: debate, rounds: 3}, ..."""
    aggregator: AggregatorSpec | None = None
    """Any aggregator by its kind; None: the protocol's own (a debate votes in its format)."""
    max_concurrency: int | None = Field(default=None, ge=1)
    answer_schema: str | dict[str, str] | type[BaseModel] | None = None
    """Typed answers: "module:Model", the answer's fields by type name ({value: number}), or
    in memory a pydantic model."""
    vote_on: str | None = None

    @field_validator("answer_schema")
    @classmethod
    def _schema_is_readable(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            answer_schema(value)  # what is wrong is this field's error
        return value

    @field_validator("vote_on")
    @classmethod
    def _vote_on_is_a_field(cls, vote_on: str | None, info: ValidationInfo) -> str | None:
        if vote_on is None or "answer_schema" not in info.data:  # (a bad schema said so)
            return vote_on
        schema = info.data["answer_schema"]
        fields = list(_schema_model(schema).model_fields) if schema is not None else []
        if vote_on not in fields:
            have = f"fields: {', '.join(fields)}" if fields else "there is no answer_schema"
            raise ValueError(f"'{vote_on}' is not a field of the answer ({have})")
        return vote_on

    def expanded(self) -> SocietySpec:
        """The spec with each agent's copies written out, after checking that a society takes
        that many (`copies: 10000000` would otherwise take a minute and gigabytes to refuse)."""
        total = sum(entry.copies for entry in self.agents)
        if total > MAX_AGENTS:
            index = max(range(len(self.agents)), key=lambda at: self.agents[at].copies)
            copied = self.agents[index].copies > 1
            where: Where = ("agents", index, "copies") if copied else ("agents",)
            raise SpecError(
                f"{_dotted(where)}: the agents come to {total:,}, but a society takes at most "
                f"{MAX_AGENTS:,} (moot.society.MAX_AGENTS)",
                where,
            )
        if all(entry.copies == 1 for entry in self.agents):
            return self
        return self.model_copy(update={"agents": [a for e in self.agents for a in e.each()]})

    def file_data(self) -> dict[str, Any]:
        """The spec as a society file's mapping, ready for YAML or JSON: each field that differs
        from its default, and each kind. Raises ConfigError naming the agent or field that
        holds what a file cannot (a model object, a tool defined inside a function...)."""
        data: dict[str, Any] = {}
        if self.description:
            data["description"] = self.description
        if self.models:
            data["models"] = {
                name: entry if isinstance(entry, str) else entry.model_dump()
                for name, entry in self.models.items()
            }
        data["agents"] = [_agent_data(a, ("agents", i)) for i, a in enumerate(self.agents)]
        data["protocol"] = _config_data(self.protocol, ("protocol",))
        if self.aggregator is not None:
            data["aggregator"] = _config_data(self.aggregator, ("aggregator",))
        if self.max_concurrency is not None:
            data["max_concurrency"] = self.max_concurrency
        if self.answer_schema is not None:
            data["answer_schema"] = _schema_data(self.answer_schema)
        if self.vote_on is not None:
            data["vote_on"] = self.vote_on
        return data


def society_fields(
    spec: SocietySpec | Mapping[str, Any], *, model: str | BaseChatModel | None = None
) -> dict[str, Any]:
    """The keyword arguments of the `Society` that `spec` describes (`Society.from_spec`);
    `model` replaces every agent's model.

    Raises SpecError (a ConfigError) with the path of the field at fault; the society itself
    may still refuse them (its protocol's checks)."""
    if not isinstance(spec, SocietySpec):
        spec = SocietySpec(**spec)
    if model is not None:
        spec = with_model(spec, model)
    spec = spec.expanded()
    models, schema = _Models(spec), spec.answer_schema
    fields = {
        "agents": [
            entry.agent(models.resolve(entry.model, ("agents", i)))
            for i, entry in enumerate(spec.agents)
        ],
        "protocol": spec.protocol.model_copy(),
        "max_concurrency": spec.max_concurrency,
        "answer_schema": None if schema is None else _schema_model(schema),
        "vote_on": spec.vote_on,
    }
    if spec.aggregator is not None:  # (else the protocol's own)
        fields["aggregator"] = with_agents(spec.aggregator, models.of_aggregator_agent)
    return fields


class SocietyLike(Protocol):
    """What `spec_of` reads of a society."""

    agents: list[Agent]
    protocol: BaseProtocol
    aggregator: Aggregator
    max_concurrency: int | None
    answer_schema: type[BaseModel] | None
    vote_on: str | None


def spec_of(society: SocietyLike) -> SocietySpec:
    """The spec that builds `society` again (`Society(**society_fields(spec_of(s)))` equals
    `s`; `society.to_spec()`).

    Models, tools and an answer schema stay the objects they are; `file_data()` says which of
    them a file cannot hold. Raises ConfigError for a protocol or aggregator whose class is not
    one of `moot.kinds` (your own, or a subclass of a kind that declares none of its own)."""
    for part, config, kinds in (
        ("protocol", society.protocol, PROTOCOLS),
        ("aggregator", society.aggregator, AGGREGATORS),
    ):
        if kinds.get(getattr(config, "kind", "")) is not type(config):
            raise ConfigError(
                f"{part}: no spec can name a {type(config).__name__}, which is none of the "
                f"kinds {', '.join(kinds)}: a class joins them by declaring kind: "
                "Literal['NAME'] = 'NAME' in a module of moot.graphs or moot.aggregate"
            )
    return SocietySpec(
        agents=[AgentSpec.of(agent) for agent in society.agents],
        protocol=society.protocol,
        aggregator=society.aggregator,
        max_concurrency=society.max_concurrency,
        answer_schema=society.answer_schema,
        vote_on=society.vote_on,
    )


def with_model(spec: SocietySpec, model: str | BaseChatModel) -> SocietySpec:
    """`spec` with every agent on `model` (the aggregator's agents too), and no named models."""
    agents = [agent.model_copy(update={"model": model}) for agent in spec.agents]
    aggregator = spec.aggregator
    if aggregator is not None:
        aggregator = with_agents(aggregator, lambda a, _: a.model_copy(update={"model": model}))
    return spec.model_copy(update={"models": {}, "agents": agents, "aggregator": aggregator})


class _Models:
    """Resolves agents' model names to the spec's named models, loading each once."""

    def __init__(self, spec: SocietySpec) -> None:
        self.named = spec.models
        self.loaded: dict[str, str | BaseChatModel] = {}

    def of_aggregator_agent(self, agent: Agent, where: Where) -> Agent:
        model = self.resolve(agent.model, ("aggregator", *where))
        return agent.model_copy(update={"model": model})

    def resolve(self, model: str | BaseChatModel, where: Where) -> str | BaseChatModel:
        """The model `model` names (the agent at `where` gives it)."""
        if not isinstance(model, str):
            return model
        if model in self.named:
            if model not in self.loaded:
                self.loaded[model] = self._load(model)
            return self.loaded[model]
        if model != "local" and model.partition(":")[0] not in backends():
            known = ", ".join(["local", *(f"{prefix}:..." for prefix in backends())])
            raise SpecError(
                f"{_dotted((*where, 'model'))}: '{model}' is neither a name under 'models' nor "
                f"a model spec ({known})",
                (*where, "model"),
            )
        return model

    def _load(self, name: str) -> str | BaseChatModel:
        entry = self.named[name]
        if isinstance(entry, str):
            return entry
        try:
            return load_model(entry.spec, **(entry.model_extra or {}))
        except ModelSpecError as error:  # a bad option: say where it is written
            raise SpecError(f"models.{name}: {error}", ("models", name)) from error


def with_agents(config: C, change: Callable[[Agent, Where], Agent]) -> C:
    """`config` (an aggregator) with `change` made to each agent it holds in a field (a judge,
    a fuser), in field order."""
    update: dict[str, Any] = {}
    for name in _agent_fields(config):
        value = getattr(config, name)
        update[name] = (
            change(value, (name,))
            if isinstance(value, Agent)
            else [change(agent, (name, i)) for i, agent in enumerate(value)]
        )
    return config.model_copy(update=update)


def _agent_fields(config: Any) -> list[str]:
    """The fields of `config` that hold an agent, or a list of agents (a judge, a fuser)."""
    return [
        name
        for name in type(config).model_fields
        if isinstance(value := getattr(config, name), Agent)
        or (isinstance(value, list) and bool(value) and all(isinstance(a, Agent) for a in value))
    ]


def _agent_data(agent: Agent, where: Where) -> dict[str, Any]:
    """An agent as a file writes it: its model a spec string, its tools by name."""
    if not isinstance(agent.model, str):
        raise ConfigError(
            f"{_dotted(where)} ({agent.name}): its model is a {type(agent.model).__name__} "
            "object, which a file cannot hold: give the model as a spec string ('local', "
            "'llama:PATH', 'openai:MODEL') or a name under models"
        )
    data = agent.model_dump(mode="json", exclude_defaults=True, exclude={"model", "tools"})
    if agent.model != "local":
        data["model"] = agent.model
    if agent.tools:
        data["tools"] = [
            _tool_name(tool, agent, where) if isinstance(tool, BaseTool) else tool.written()
            for tool in agent.tools
        ]
    return data


def _tool_name(tool: BaseTool, agent: Agent, where: Where) -> str:
    """How a file names `tool`: a built-in name, or the MODULE:NAME it can be imported from."""
    from moot.tools import BUILT_IN

    if BUILT_IN.get(tool.name) is tool:
        return tool.name
    made_from = getattr(tool, "func", None)
    for source in (made_from, tool):
        path = f"{getattr(source, '__module__', '')}:{getattr(source, '__qualname__', '')}"
        try:
            if pkgutil.resolve_name(path) in (tool, made_from):
                return path
        except (ImportError, AttributeError, ValueError):
            continue
    raise ConfigError(
        f"{_dotted(where)} ({agent.name}): tool '{tool.name}' is neither built in nor "
        "importable as MODULE:NAME, so a file cannot name it: define it at the top of a module"
    )


def _config_data(config: Any, where: Where) -> dict[str, Any]:
    """A protocol or aggregator as a file writes it: its kind, and what differs from defaults."""
    agents = _agent_fields(config)
    for name in type(config).model_fields:
        value = getattr(config, name)
        if name in agents:
            continue
        if callable(value) or (isinstance(value, BaseModel) and not isinstance(value, Config)):
            raise ConfigError(
                f"{_dotted((*where, name))}: a {type(value).__name__} object, which a file "
                "cannot hold (leave it out, or give it by name)"
            )
    try:
        data = config.model_dump(mode="json", exclude_defaults=True, exclude={"kind", *agents})
    except PydanticSerializationError as error:
        raise ConfigError(f"{_dotted(where)}: a file cannot hold it ({error})") from None
    for name in agents:
        value = getattr(config, name)
        data[name] = (
            _agent_data(value, (*where, name))
            if isinstance(value, Agent)
            else [_agent_data(a, (*where, name, i)) for i, a in enumerate(value)]
        )
    return {"kind": config.kind, **data}


def _schema_model(schema: str | dict[str, str] | type[BaseModel]) -> type[BaseModel]:
    return schema if isinstance(schema, type) else answer_schema(schema)


def _schema_data(schema: str | dict[str, str] | type[BaseModel]) -> str | dict[str, str]:
    if not isinstance(schema, type):
        return schema
    written = written_schema(schema)
    if written is None:
        raise ConfigError(
            f"answer_schema: {schema.__qualname__} cannot be imported by name, so a file cannot "
            "hold it: define it at the top of a module, or give its fields ({value: number})"
        )
    return written


def _dotted(where: Where) -> str:
    return ".".join(map(str, where))
