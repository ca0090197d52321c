"""Benchmark methods: a short name (or a society file) that builds the society to run.

    single                    one agent, one answer
    vote-N, self-consistency-N  N samples of one model, majority vote
    debate-NxR                N agents, R rounds (Du et al.), majority vote over the last round
    debate-NxR-consensus      the same, stopping after the first round in which all agents agree
    debate-NxR-answers        the same, each agent shown only the others' answers, not their work
                              (also debate-NxR-consensus-answers)
    machinesom-STRATEGY       MachineSoM, 3 easy-going agents, e.g. machinesom-debate-reflect-debate
    machinesom-ocK-STRATEGY   the same with K of the 3 agents overconfident
    moa-NxL                   mixture-of-agents: N proposers, L layers, one aggregator
    cascade-N                 N samples; when fewer than 2/3 agree, one answer from the strong model
    PATH.yaml                 any society file

Every method answers in the task's format: the task decides how answers are read. Single, vote
and debate send moot's prompts or Du et al.'s (`MethodSettings.prompt_set`, `--prompts du`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ConfigDict, Field, model_validator

from moot.agents import Agent, ToolChoice, check_tool_choice
from moot.aggregate.extract import ExtractKind, Extractor
from moot.aggregate.judge import Judge, PairwiseRank
from moot.aggregate.vote import MajorityVote
from moot.errors import ConfigError
from moot.graphs._rounds import MAX_ROUNDS
from moot.graphs.cascade import Cascade
from moot.graphs.debate import Debate, PromptSet
from moot.graphs.moa import MixtureOfAgents
from moot.models import load_model
from moot.presets import MACHINESOM_STRATEGIES, machinesom
from moot.society import MAX_AGENTS, Society
from moot.society_file import load_society

METHOD_FORMS = (
    "single, vote-N, self-consistency-N, debate-NxR[-consensus][-answers], machinesom-STRATEGY, "
    "machinesom-ocK-STRATEGY, moa-NxL, cascade-N, or a society file (.yaml)"
)
_SEED_STRIDE = 1000
"""Trial t seeds agent i with seed + t * 1000 + i, so trials differ and agents differ."""


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
    parsed = _parse(spec)
    if parsed is None:
        raise ConfigError(f"unknown method '{_shown(spec)}': use {METHOD_FORMS}")
    _check_counts(spec, *parsed)


def _check_counts(spec: str, kind: str, groups: tuple[str | None, ...]) -> None:
    """Refuse counts beyond the bounds before any agent is built: vote-10000000 would
    otherwise build ten million agents (a minute, gigabytes) only to be refused."""
    numbers = [_number(group) for group in groups if group and group.isdigit()]
    if kind == "som" or not numbers:
        return
    strong = kind == "cascade"  # cascade-N: N cheap agents and the strong one
    if numbers[0] + strong > MAX_AGENTS:
        also = "; cascade-N adds the strong model" if strong else ""
        raise ConfigError(
            f"method {_shown(spec)}: a society takes at most {MAX_AGENTS:,} agents "
            f"(moot.society.MAX_AGENTS){also}"
        )
    if len(numbers) > 1 and numbers[1] > MAX_ROUNDS:
        what = "layers" if kind == "moa" else "rounds"
        raise ConfigError(f"method {_shown(spec)}: a protocol runs at most {MAX_ROUNDS:,} {what}")


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


def build_method(
    spec: str,
    extract: ExtractKind | Extractor,
    settings: MethodSettings,
    trial: int = 0,
) -> Society:
    """The society `spec` names, answering in the `extract` format, seeded for `trial`."""
    if _is_file(spec):
        society = load_society(spec, model=settings.loaded() if settings.override else None)
    else:
        parsed = _parse(spec)
        if parsed is None:
            raise ConfigError(f"unknown method '{_shown(spec)}': use {METHOD_FORMS}")
        _check_counts(spec, *parsed)
        society = _builtin(*parsed, settings, extract)
    return _for_trial(society, extract, settings.seed + trial * _SEED_STRIDE)


def _is_file(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml"))


_FORMS = [
    (re.compile(r"single"), "single"),
    (re.compile(r"(?:vote|self-consistency)-(\d+)"), "vote"),
    (re.compile(r"debate-(\d+)x(\d+)(-consensus)?(-answers)?"), "debate"),
    (
        re.compile(r"machinesom-(?:oc([0-3])-)?((?:debate|reflect)(?:-(?:debate|reflect)){2})"),
        "som",
    ),
    (re.compile(r"moa-(\d+)x(\d+)"), "moa"),
    (re.compile(r"cascade-(\d+)"), "cascade"),
]


def _parse(spec: str) -> tuple[str, tuple[str | None, ...]] | None:
    for pattern, kind in _FORMS:
        match = pattern.fullmatch(spec)
        if match:
            numbers = [group for group in match.groups() if group and group.isdigit()]
            if any(_number(number) < 1 for number in numbers if kind != "som"):
                return None
            return kind, match.groups()
    return None


def _builtin(
    kind: str,
    groups: tuple[str | None, ...],
    settings: MethodSettings,
    extract: ExtractKind | Extractor,
) -> Society:
    model = settings.loaded()
    # Built in the task's answer format: a paper's prompt set checks it against its own.
    vote = MajorityVote(extract=extract)

    def agents(count: int, *, prefix: str = "agent", **fields: object) -> list[Agent]:
        return [
            Agent(
                name=f"{prefix}{index + 1}",
                model=model,
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
                **fields,  # type: ignore[arg-type]
            )
            for index in range(count)
        ]

    def with_tools(count: int) -> list[Agent]:
        return agents(count, tools=settings.tools, tool_choice=settings.tool_choice)

    prompt_set = settings.prompt_set
    if kind in ("single", "vote"):
        count = _number(groups[0] or "1") if kind == "vote" else 1
        protocol = Debate(rounds=1, prompt_set=prompt_set)
        return Society(agents=with_tools(count), protocol=protocol, aggregator=vote)
    if kind == "debate":
        count, rounds = _number(groups[0] or "1"), _number(groups[1] or "1")
        protocol = Debate(
            rounds=rounds,
            consensus=1.0 if groups[2] else None,
            peer_view="answer" if groups[3] else "full",
            prompt_set=prompt_set,
        )
        return Society(agents=with_tools(count), protocol=protocol, aggregator=vote)
    if kind == "som":  # with --prompts du, each paper's own: MachineSoM's for its societies
        assert groups[1] in MACHINESOM_STRATEGIES
        return machinesom(
            _number(groups[0] or "0"),
            groups[1],
            model=model,
            extract="choice" if prompt_set == "du-mmlu" else "number",
            prompts="moot" if prompt_set == "moot" else "som",
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )
    if prompt_set != "moot":
        raise ConfigError(
            f"prompt_set {prompt_set} is for single, vote, debate and machinesom methods only: "
            "run the other methods in a moot bench of their own, without --prompts du"
        )
    if kind == "moa":
        count, layers = _number(groups[0] or "1"), _number(groups[1] or "1")
        aggregator = Agent(
            name="aggregator",
            role="aggregator",
            model=model,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )
        return Society(
            agents=agents(count, prefix="proposer", role="proposer"),
            protocol=MixtureOfAgents(layers=layers),
            aggregator=Judge(agent=aggregator),
        )
    count = _number(groups[0] or "1")
    strong = Agent(
        name="strong",
        model=settings.loaded(strong=True),
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
    cheap = agents(count, prefix="cheap")
    return Society(
        agents=[*cheap, strong],
        # 2/3 exactly: two of three samples agreeing is sure enough (0.67 made that 0.666... < 0.67)
        protocol=Cascade(tiers=[[agent.name for agent in cheap], ["strong"]], threshold=2 / 3),
    )


def du_prompt_set(task_name: str, extract: ExtractKind | Extractor) -> PromptSet:
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
    task_name: str, extract: ExtractKind | Extractor, methods: list[str]
) -> tuple[PromptSet, str]:
    """Du et al.'s prompts where they were measured to do at least as well as moot's, else
    moot's; and why, in words for the console.

    Measured on the 1.5B (BENCHMARKS.md, issue 17): on GSM8K-like word problems theirs debate
    better; on their arithmetic they ask for no working, so the model answers in one line and
    misses; on MMLU moot's answer better first and debate as well. So only numeric word problems
    run theirs."""
    without = [method for method in methods if not _takes_du_prompts(method)]
    if without:
        return "moot", f"moot's ({', '.join(without)}: Du et al.'s are for single, vote, debate)"
    if _du_prompt_set(task_name, extract) != "du-gsm8k":
        return "moot", "moot's (Du et al.'s measured better on word problems only; --prompts du)"
    return "du-gsm8k", "du-gsm8k, Du et al.'s (they debate word problems better; --prompts moot)"


def _takes_du_prompts(spec: str) -> bool:
    parsed = None if _is_file(spec) else _parse(spec)
    return parsed is not None and parsed[0] in _TAKE_TOOLS


def _du_prompt_set(task_name: str, extract: ExtractKind | Extractor) -> PromptSet | None:
    if task_name.startswith("arithmetic-"):
        return "du-arithmetic"
    if extract == "choice":
        return "du-mmlu"
    if extract in ("number", "boxed"):
        return "du-gsm8k"
    return None


def _for_trial(society: Society, extract: ExtractKind | Extractor, seed: int) -> Society:
    """The society answering in `extract`, each agent (and judge) seeded unless already seeded."""

    def seeded(agent: Agent, index: int) -> Agent:
        return agent if agent.seed is not None else agent.model_copy(update={"seed": seed + index})

    aggregator = society.aggregator.model_copy(update={"extract": extract})
    if isinstance(aggregator, Judge):
        aggregator.agent = seeded(aggregator.agent, len(society.agents))
    elif isinstance(aggregator, PairwiseRank):
        aggregator.judge = seeded(aggregator.judge, len(society.agents))
        if aggregator.fuser:
            aggregator.fuser = seeded(aggregator.fuser, len(society.agents) + 1)
    return society.model_copy(
        update={
            "agents": [seeded(agent, index) for index, agent in enumerate(society.agents)],
            "aggregator": aggregator,
        }
    )
