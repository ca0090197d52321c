"""Benchmark methods: a short name (or a society file) that builds the society to run.

    single                    one agent, one answer
    vote-N, self-consistency-N  N samples of one model, majority vote
    vote-N-stopW              at most N samples, drawn W at a time, stopping at the first W
                              that agree; the vote of all drawn (early-stopping vote, ESC)
    vote-N-palK-stopW         the same over N text and K program agents, drawn in turns
                              (text 1, program 1, text 2, ...)
    debate-NxR                N agents, R rounds (Du et al.), majority vote over the last round
    debate-NxR-consensus      the same, stopping after the first round in which all agents agree
    debate-NxR-answers        the same, each agent shown only the others' answers, not their work
                              (also debate-NxR-consensus-answers)
    pal-N                     N program agents (they answer with a program moot runs), one vote
    ...-keep, -anon           (single, vote, pal, debate) the keep-unless-wrong update; anonymous
                              peers
    ...-trajectory, -select   decide by TrajectoryVote (every round scores) or ConsistencySelect
    ...-crosscheck            decide by CrossCheckVote (an answer text and program agents share)
    ...-palK                  add K program agents after the text agents, e.g. vote-3-pal3
    ...-sparseK               (debate) show each agent K peers, the next ones in order
    machinesom-STRATEGY       MachineSoM, 3 easy-going agents, e.g. machinesom-debate-reflect-debate
    machinesom-ocK-STRATEGY   the same with K of the 3 agents overconfident
    moa-NxL                   mixture-of-agents: N proposers, L layers, one aggregator
    cascade-N                 N samples; when fewer than 2/3 agree, one answer from the strong model
    PATH.yaml                 any society file

Every method answers in the task's format: the task decides how answers are read. Single, vote
and debate send moot's prompts or Du et al.'s (`MethodSettings.prompt_set`, `--prompts du`);
vote-N-stopW moot's, without tools.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ConfigDict, Field, model_validator

from moot.agents import Agent, ToolChoice, check_tool_choice
from moot.aggregate.base import Aggregator
from moot.aggregate.crosscheck import CrossCheckVote
from moot.aggregate.extract import ExtractKind, Extractor
from moot.aggregate.judge import Judge
from moot.aggregate.select import ConsistencySelect
from moot.aggregate.trajectory import TrajectoryVote
from moot.aggregate.vote import MajorityVote
from moot.errors import ConfigError
from moot.graphs.cascade import Cascade
from moot.graphs.debate import Debate, PromptSet
from moot.graphs.moa import MixtureOfAgents
from moot.graphs.types import MAX_ROUNDS
from moot.models import load_model
from moot.presets import (
    MACHINESOM_STRATEGIES,
    default_method,
    early_stopping_vote,
    machinesom_spec,
)
from moot.society import Society
from moot.society_file import SocietyFile
from moot.spec import (
    MAX_AGENTS,
    AgentSpec,
    SocietySpec,
    society_fields,
    with_agents,
    with_model,
)

METHOD_FORMS = (
    "default (what `moot debate` runs), single, vote-N, self-consistency-N, pal-N, debate-NxR "
    "(each with options -consensus, -answers, -keep, -anon, -trajectory, -select, -crosscheck, "
    "-palK, -sparseK), vote-N[-palK]-stopW, machinesom-STRATEGY, machinesom-ocK-STRATEGY, moa-NxL, "
    "cascade-N, or a society file (.yaml)"
)
_SEED_STRIDE = 1000
"""Trial t seeds agent i with seed + t * 1000 + i, so trials differ and agents differ."""
_Agent = TypeVar("_Agent", bound=Agent)
Extract = ExtractKind | Extractor
"""The answer format of a task: a name, or a function that reads an answer."""


class MethodSettings(BaseModel):
    """What the built-in methods are built from (society files keep their own settings)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | BaseChatModel = "local"
    """Model of every agent of a built-in method (and of a society file when `override`)."""
    model_options: dict[str, Any] = Field(default_factory=dict)
    """Options for `load_model` with the model specs, e.g. {"n_ctx": 8192}."""
    strong_model: str | BaseChatModel | None = None
    """The cascade's last tier (None: `model`)."""
    override: bool = False
    """Replace a society file's models with `model`."""
    temperature: float | None = 0.7
    max_tokens: int | None = None
    seed: int = 0
    """Base seed; trials and agents get distinct seeds derived from it."""
    tools: list[str] = Field(default_factory=list)
    """Tools the agents of single, vote and debate methods may call ("calculator", ...)."""
    tool_choice: ToolChoice = "auto"
    prompt_set: PromptSet = "moot"
    """The prompts of single, vote and debate methods: moot's, or Du et al.'s for one task
    (`du_prompt_set` picks it for a task)."""

    @model_validator(mode="after")
    def _tool_choice_has_tools(self) -> MethodSettings:
        check_tool_choice(self.tool_choice, self.tools)
        return self

    def loaded(self, strong: bool = False) -> BaseChatModel:
        """The (strong) model, loaded once per process and shared by the agents naming it."""
        spec = self.strong_model if strong and self.strong_model is not None else self.model
        return load_model(spec, **self.model_options)


def check_method(spec: str) -> None:
    """Raise ConfigError naming the accepted forms when `spec` is not a method, or naming the
    bound when it asks for more agents or rounds than a society takes."""
    if _is_file(spec):
        if not Path(spec).is_file():
            raise ConfigError(f"no society file {spec}")
        return
    _checked(spec)


def _checked(
    spec: str, extract: object = None, prompt_set: str = "moot"
) -> tuple[str, tuple[str | None, ...]]:
    """`_parse`, or a ConfigError saying what is wrong with the name or its counts."""
    if re.search(r"(?<![\d.])0\d", spec):  # vote-03 would keep records apart from vote-3's
        raise ConfigError(f"method {_shown(spec)}: write counts without leading zeros")
    parsed = _parse(spec, extract, prompt_set)
    if parsed is None:
        if re.search(r"-(?:pal|stop|sparse)?0(?!\d)|\dx0(?!\d)", spec):
            raise ConfigError(f"method {_shown(spec)}: every count is 1 or more")
        raise ConfigError(f"unknown method '{_shown(spec)}': use {METHOD_FORMS}")
    _check_counts(spec, *parsed)
    return parsed


def _check_counts(spec: str, kind: str, groups: tuple[str | None, ...]) -> None:
    """Refuse counts beyond the bounds before any agent is built: vote-10000000 would
    otherwise build ten million agents (a minute, gigabytes) only to be refused."""
    numbers = [_number(group) for group in groups if group and group.isdigit()]
    if kind == "som" or not numbers:
        return
    strong = kind == "cascade"  # cascade-N: N cheap agents and the strong one
    programs = _programs(kind, groups) if kind in _TAKE_OPTIONS and kind != "pal" else 0
    if kind == "esc":
        programs = _number(groups[1] or "0")
    if numbers[0] + strong + programs > MAX_AGENTS:
        also = "; cascade-N adds the strong model" if strong else ""
        raise ConfigError(
            f"method {_shown(spec)}: a society takes at most {MAX_AGENTS:,} agents "
            f"(moot.society.MAX_AGENTS){also}"
        )
    if kind == "esc" and not 2 <= numbers[-1] <= numbers[0] + programs:
        raise ConfigError(
            f"method {_shown(spec)}: W must be from 2 (a window of one always agrees) to the "
            f"number of agents, e.g. {_esc_example(spec, numbers[0] + programs)}"
        )
    if kind != "esc" and len(numbers) > 1 and numbers[1] > MAX_ROUNDS:
        what = "layers" if kind == "moa" else "rounds"
        raise ConfigError(f"method {_shown(spec)}: a protocol runs at most {MAX_ROUNDS:,} {what}")


def _esc_example(spec: str, agents: int) -> str:
    """`spec` with windows of two, and two agents at least."""
    example = re.sub(r"-stop[0-9]+$", "-stop2", spec)
    return example if agents >= 2 else re.sub(r"^([a-z-]+?)-[0-9]+", r"\1-2", example)


def _number(digits: str) -> int:
    """A count from a method name; one too long for int() (4,300 digits) is simply huge."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def _shown(spec: str) -> str:
    """A method name short enough to repeat in a one-line error."""
    return spec if len(spec) <= 60 else f"{spec[:57]}..."


def ignores_tools(spec: str) -> bool:
    """Whether `spec` is a method that `MethodSettings.tools` do not reach (a society file's
    agents have their own tools; moa and cascade agents none)."""
    parsed = None if _is_file(spec) else _parse(spec)
    return _is_file(spec) or (parsed is not None and parsed[0] not in _TAKE_TOOLS)


_TAKE_TOOLS = ("single", "vote", "debate")


def takes_paper_prompts(spec: str) -> bool:
    """Whether `spec` is a method with a paper's prompt set: Du et al.'s (single, vote, debate)
    or MachineSoM's (machinesom-*)."""
    parsed = None if _is_file(spec) else _parse(spec)
    return parsed is not None and parsed[0] in (*_TAKE_TOOLS, "som")


def build_method(name: str, extract: Extract, settings: MethodSettings, trial: int = 0) -> Society:
    """The society the method `name` names, answering in the `extract` format, seeded for
    `trial`."""
    with _society_file(name) as file:
        return Society(**society_fields(_method_spec(name, file, extract, settings, trial)))


def method_spec(
    name: str, extract: Extract, settings: MethodSettings, trial: int = 0
) -> SocietySpec:
    """The spec of the society `build_method` builds."""
    with _society_file(name) as file:
        return _method_spec(name, file, extract, settings, trial)


@contextmanager
def _society_file(name: str) -> Iterator[SocietyFile | None]:
    """The society file a method names (None: a built-in method), with its mistakes reported at
    their lines."""
    if not _is_file(name):
        yield None
        return
    file = SocietyFile.read(name)
    with file.located():
        yield file


def _method_spec(
    name: str, file: SocietyFile | None, extract: Extract, settings: MethodSettings, trial: int
) -> SocietySpec:
    if file is not None:
        built = with_model(file.spec, settings.loaded()) if settings.override else file.spec
    else:
        built = _builtin(*_checked(name, extract, settings.prompt_set), settings, extract)
    return _for_trial(built, extract, settings.seed + trial * _SEED_STRIDE)


def _is_file(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml"))


OPTIONS = ("consensus", "answers", "keep", "anon", "trajectory", "select", "crosscheck")
"""Settings a single, vote, pal or debate method takes as suffixes (any order, each once):
consensus: stop after a round in which all agents agree; answers: show peers only answers;
keep: the keep-unless-wrong update; anon: anonymous peers; trajectory: `TrajectoryVote`;
select: `ConsistencySelect` (by model and kind); crosscheck: `CrossCheckVote` (one decider at
most); palK: add K program agents; sparseK: show each agent K peers (`Debate.peers_shown`)."""
_OPTIONS = r"((?:-(?:consensus|answers|keep|anon|trajectory|select|crosscheck|pal\d+|sparse\d+))*)"
_FORMS = [
    (re.compile(r"single" + _OPTIONS), "single"),
    (re.compile(r"(?:vote|self-consistency)-(\d+)(?:-pal(\d+))?-stop(\d+)"), "esc"),
    (re.compile(r"(?:vote|self-consistency)-(\d+)" + _OPTIONS), "vote"),
    (re.compile(r"pal-(\d+)" + _OPTIONS), "pal"),
    (re.compile(r"debate-(\d+)x(\d+)" + _OPTIONS), "debate"),
    (
        re.compile(r"machinesom-(?:oc([0-3])-)?((?:debate|reflect)(?:-(?:debate|reflect)){2})"),
        "som",
    ),
    (re.compile(r"moa-(\d+)x(\d+)"), "moa"),
    (re.compile(r"cascade-(\d+)"), "cascade"),
]


def _parse(
    spec: str, extract: object = None, prompt_set: str = "moot"
) -> tuple[str, tuple[str | None, ...]] | None:
    """The kind and numbers of a built-in method; "default" is the default society for answers
    in `extract` asked in `prompt_set`."""
    if spec == "default":
        spec = default_method(extract, prompt_set)
    for pattern, kind in _FORMS:
        match = pattern.fullmatch(spec)
        if match:
            numbers = [group for group in match.groups() if group and group.isdigit()]
            if any(_number(number) < 1 for number in numbers if kind != "som"):
                return None
            if kind in _TAKE_OPTIONS and not _options_fit(match.groups()[-1] or ""):
                return None
            return kind, match.groups()
    return None


_TAKE_OPTIONS = ("single", "vote", "pal", "debate")


def _options(text: str) -> list[str]:
    """The suffixes of a method name: "-keep-pal3" -> ["keep", "pal3"]."""
    return [option for option in text.split("-") if option]


def _options_fit(text: str) -> bool:
    options = _options(text)
    programs = [option for option in options if option.startswith("pal")]
    sparse = [option for option in options if option.startswith("sparse")]
    numbers_fit = all(_number(p[3:]) >= 1 for p in programs) and all(
        _number(v[6:]) >= 1 for v in sparse
    )
    decisions = [option for option in options if option in ("trajectory", "select", "crosscheck")]
    return (
        len(set(options)) == len(options)
        and len(sparse) <= 1
        and len(decisions) <= 1
        and numbers_fit
    )


def _programs(kind: str, groups: tuple[str | None, ...]) -> int:
    """How many program agents a single, vote, pal or debate method has."""
    added = sum(_number(o[3:]) for o in _options(groups[-1] or "") if o.startswith("pal"))
    return added + (_number(groups[0] or "0") if kind == "pal" else 0)


def _builtin(
    kind: str,
    groups: tuple[str | None, ...],
    settings: MethodSettings,
    extract: Extract,
) -> SocietySpec:
    """The spec of the built-in method `kind`, its numbers in `groups`."""
    sampling: dict[str, Any] = {
        "model": settings.loaded(),
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
    }
    # Built in the task's answer format: a paper's prompt set checks it against its own.
    vote = MajorityVote(extract=extract)

    def agents(count: int, prefix: str = "agent", **fields: Any) -> list[AgentSpec]:
        return [AgentSpec(name=f"{prefix}{n}", **sampling, **fields) for n in range(1, count + 1)]

    prompt_set = settings.prompt_set
    if kind in _TAKE_OPTIONS:
        options = set(_options(groups[-1] or ""))
        count = {"single": 1, "pal": 0}.get(kind, _number(groups[0] or "1"))
        programs = _programs(kind, groups)
        if programs and prompt_set != "moot":
            raise ConfigError(
                f"program agents (pal) ask for programs in moot's prompts, not {prompt_set}'s: "
                "use --prompts moot"
            )
        protocol = Debate(
            rounds=_number(groups[1] or "1") if kind == "debate" else 1,
            consensus=1.0 if "consensus" in options else None,
            peer_view="answer" if "answers" in options else "full",
            anonymous="anon" in options,
            update_style="keep" if "keep" in options else "open",
            peers_shown=next((_number(o[6:]) for o in options if o.startswith("sparse")), None),
            prompt_set=prompt_set,
        )
        aggregator: Aggregator = vote
        if "trajectory" in options:
            aggregator = TrajectoryVote(extract=extract)
        elif "select" in options:
            aggregator = ConsistencySelect(extract=extract)
        elif "crosscheck" in options:
            aggregator = CrossCheckVote(extract=extract)
        tools: dict[str, Any] = {"tools": settings.tools, "tool_choice": settings.tool_choice}
        members = [*agents(count, **tools), *agents(programs, "program", kind="program")]
        return SocietySpec(agents=members, protocol=protocol, aggregator=aggregator)
    if kind == "som":  # with --prompts du, each paper's own: MachineSoM's for its societies
        assert groups[1] in MACHINESOM_STRATEGIES
        return machinesom_spec(
            _number(groups[0] or "0"),
            groups[1],
            extract="choice" if prompt_set == "du-mmlu" else "number",
            prompts="moot" if prompt_set == "moot" else "som",
            **sampling,
        )
    if prompt_set != "moot":
        raise ConfigError(
            f"prompt_set {prompt_set} is for single, vote, debate and machinesom methods only: "
            "run the other methods in a moot bench of their own, without --prompts du"
        )
    if kind == "moa":
        count, layers = _number(groups[0] or "1"), _number(groups[1] or "1")
        return SocietySpec(
            agents=agents(count, "proposer", role="proposer"),
            protocol=MixtureOfAgents(layers=layers),
            aggregator=Judge(agent=Agent(name="aggregator", role="aggregator", **sampling)),
        )
    if kind == "esc":  # agents as in vote-N-palK (same seeds): run that first to cache calls
        text = agents(_number(groups[0] or "1"))
        coders = agents(_number(groups[1] or "0"), "program", kind="program")
        stopping = early_stopping_vote(
            [a.name for a in text], [a.name for a in coders], _number(groups[2] or "2")
        )
        return SocietySpec(agents=[*text, *coders], protocol=stopping, aggregator=vote)
    cheap = agents(_number(groups[0] or "1"), "cheap")
    strong = AgentSpec(name="strong", **{**sampling, "model": settings.loaded(strong=True)})
    return SocietySpec(
        agents=[*cheap, strong],
        # 2/3 exactly: two of three samples agreeing is sure enough (0.67 made that 0.666... < 0.67)
        protocol=Cascade(tiers=[[agent.name for agent in cheap], ["strong"]], threshold=2 / 3),
    )


def du_prompt_set(task_name: str, extract: Extract) -> PromptSet:
    """Du et al.'s prompts for a task: arithmetic for theirs, MMLU's for multiple choice, and
    GSM8K's for any other task with numeric answers."""
    found = _du_prompt_set(task_name, extract)
    if found is None:
        raise ConfigError(
            f"Du et al.'s prompts cover numeric and multiple-choice answers, not {extract!r} "
            f"answers ({task_name}): use --prompts moot"
        )
    return found


def default_prompt_set(
    task_name: str, extract: Extract, methods: list[str]
) -> tuple[PromptSet, str]:
    """Du et al.'s prompts where they were measured to do at least as well as moot's, else
    moot's; and why, in words for the console.

    Measured on the 1.5B (BENCHMARKS.md, issue 17): on GSM8K-like word problems theirs debate
    better; on their arithmetic they ask for no working, so the model answers in one line and
    misses; on MMLU moot's answer better first and debate as well. So only numeric word problems
    run theirs."""
    without = [method for method in methods if not _takes_du_prompts(method, extract)]
    if without:
        return "moot", (
            f"moot's ({', '.join(without)}: Du et al.'s are for single, vote, debate, without "
            "program agents or early stopping)"
        )
    if _du_prompt_set(task_name, extract) != "du-gsm8k":
        return "moot", "moot's (Du et al.'s measured better on word problems only; --prompts du)"
    return "du-gsm8k", "du-gsm8k, Du et al.'s (they debate word problems better; --prompts moot)"


def _takes_du_prompts(spec: str, extract: Extract) -> bool:
    parsed = None if _is_file(spec) else _parse(spec, extract)
    if parsed is None or parsed[0] not in _TAKE_TOOLS:
        return False
    return not {"keep", "anon"} & set(_options(parsed[1][-1] or "")) and not _programs(*parsed)


def _du_prompt_set(task_name: str, extract: Extract) -> PromptSet | None:
    if task_name.startswith("arithmetic-"):
        return "du-arithmetic"
    if extract == "choice":
        return "du-mmlu"
    if extract in ("number", "boxed"):
        return "du-gsm8k"
    return None


def _for_trial(spec: SocietySpec, extract: Extract, seed: int) -> SocietySpec:
    """The spec answering in `extract`, each agent (and the aggregator's) seeded unless it is."""
    spec = spec.expanded()
    # Text agents, then the aggregator's, count from `seed`; program agents count from it
    # apart, so program i has the same seed in pal-3 and vote-3-pal3 (its call is cached).
    numbers = {"text": itertools.count(seed), "program": itertools.count(seed)}

    def seeded(agent: _Agent, *_: object) -> _Agent:
        number = next(numbers[agent.kind])
        return agent if agent.seed is not None else agent.model_copy(update={"seed": number})

    agents = [seeded(agent) for agent in spec.agents]
    aggregator = spec.aggregator or spec.protocol.default_aggregator()
    aggregator = with_agents(aggregator.model_copy(update={"extract": extract}), seeded)
    return spec.model_copy(update={"agents": agents, "aggregator": aggregator})
