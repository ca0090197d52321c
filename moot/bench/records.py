"""What a benchmark runs and what it records: the plan, its work items, one record per
(method, trial, question), with per-round statistics."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ConfigDict, Field, model_validator

from moot.bench.methods import MethodSettings, ignores_tools, takes_paper_prompts
from moot.bench.tasks import Task
from moot.errors import ConfigError
from moot.result import Turn


class RoundRecord(BaseModel):
    """How the participants stood after one round of one question."""

    round: int
    answers: dict[str, str | None]
    """Each participant's answer this round (None: failed or unreadable)."""
    correct: dict[str, bool]
    """Whether each participant's answer was right."""
    vote: str | None
    """The plurality of this round's answers (ties: first agent): what stopping here gives."""
    vote_correct: bool
    agreement: float
    """Share of answering participants that gave the most common answer."""
    tokens: int
    calls: int


class BenchRecord(BaseModel):
    """One method's run on one question in one trial: one line of results.jsonl."""

    task: str
    method: str
    model: str
    """The model spec (or chat model class) the method ran on."""
    settings: str
    """Sampling settings that change answers (temperature, max tokens, base seed)."""
    trial: int
    question_id: str
    reference: str
    answer: str | None
    correct: bool
    input_tokens: int = 0
    output_tokens: int = 0
    tokens: int = 0
    calls: int = 0
    cost: float | None = None
    """Money spent on the question, at the prices given with the model (None: no prices)."""
    cached_calls: int = 0
    """Calls answered from the call cache (`moot bench --cache`)."""
    deferred_tokens: int = 0
    """Fused models (colm): reply tokens the base deferred to the assistant."""
    tool_calls: int | None = None
    """Tool calls the agents made (None: a record written before they were counted; the
    report then counts them from the transcript)."""
    seconds: float = 0.0
    """Wall time of this question (varies between runs; everything else is reproducible)."""
    rounds: int = 0
    stop_reason: str | None = None
    failed_turns: int = 0
    error: str | None = None
    """Why the whole run failed (e.g. the question does not fit the context), else None."""
    per_round: list[RoundRecord] = Field(default_factory=list)
    transcript: list[Turn] = Field(default_factory=list, exclude=True)
    """The run's turns (texts included), kept in transcripts.jsonl beside results.jsonl, not in
    it, so the results stay small; `moot show` opens them."""

    def key(self) -> tuple[str, str, str, str, int, str]:
        return (self.task, self.method, self.model, self.settings, self.trial, self.question_id)


class WorkItem(BaseModel):
    method: str
    trial: int
    question: int
    """Index into the task's questions."""


MAX_TRIALS = 1000
"""The most trials of a plan (its work items are listed up front)."""


class BenchPlan(BaseModel):
    """What to run: a task, methods, how they are built, and how many trials over seeds."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    task: Task
    methods: list[str] = Field(min_length=1)
    settings: MethodSettings = Field(default_factory=MethodSettings)
    trials: int = Field(default=1, ge=1, le=MAX_TRIALS)
    """Repeats of every method on every question, over seeds."""
    cache: str | None = None
    """A call cache file (SQLite; with Ray, a path on each worker's machine): calls that an
    earlier run made with the same model, messages and seed are answered from it."""

    @model_validator(mode="after")
    def _strong_model_has_a_cascade(self) -> BenchPlan:
        if self.settings.strong_model is not None and not any(
            method.startswith("cascade-") for method in self.methods
        ):
            raise ConfigError(
                "a strong model is the last tier of a cascade-N method, and none of the methods "
                f"({', '.join(self.methods)}) is one: add cascade-3, say, or leave it out"
            )
        return self

    @model_validator(mode="after")
    def _tools_reach_every_method(self) -> BenchPlan:
        """Results labelled with tools must have had them."""
        without = [method for method in self.methods if ignores_tools(method)]
        if self.settings.tools and without:
            raise ConfigError(
                f"tools reach the agents of single, vote-N and debate-NxR methods only (not "
                f"vote-N-stopW); "
                f"{', '.join(without)} would run without them: run "
                + (
                    "it in a bench of its own"
                    if len(without) == 1
                    else "them in a bench of their own"
                )
                + ", without tools"
            )
        return self

    @model_validator(mode="after")
    def _paper_prompts_reach_every_method(self) -> BenchPlan:
        """Results labelled with a paper's prompts must have had them."""
        without = [method for method in self.methods if not takes_paper_prompts(method)]
        if self.settings.prompt_set != "moot" and without:
            raise ConfigError(
                f"prompt_set {self.settings.prompt_set} reaches single, vote-N, debate-NxR and "
                f"machinesom methods only (not vote-N-stopW); {', '.join(without)} would run "
                "on moot's prompts: run "
                + (
                    "it in a bench of its own"
                    if len(without) == 1
                    else "them in a bench of their own"
                )
                + " with --prompts moot"
            )
        return self

    def model_label(self, method: str) -> str:
        """The model(s) a method ran on; a cascade with its own strong model names both
        ("CHEAP -> STRONG"), so cascades to different strong models are kept apart."""
        s = self.settings
        if method.endswith((".yaml", ".yml")) and not s.override:
            return "society file"
        label = _name(s.model)
        if method.startswith("cascade-") and s.strong_model is not None:
            label += f" -> {_name(s.strong_model)}"
        return label

    def settings_label(self) -> str:
        s = self.settings
        label = f"temperature={s.temperature} max_tokens={s.max_tokens} seed={s.seed}"
        if s.tools:  # (without tools the label is what it always was: old results still count)
            label += f" tools={','.join(s.tools)} tool_choice={s.tool_choice}"
        if s.prompt_set != "moot":
            label += f" prompts={s.prompt_set}"
        return label

    def items(self) -> list[WorkItem]:
        """Question by question, so partial results compare methods on the same questions."""
        return [
            WorkItem(method=method, trial=trial, question=index)
            for index in range(len(self.task.questions))
            for trial in range(self.trials)
            for method in self.methods
        ]

    def key(self, item: WorkItem) -> tuple[str, str, str, str, int, str]:
        question = self.task.questions[item.question]
        return (
            self.task.name,
            item.method,
            self.model_label(item.method),
            self.settings_label(),
            item.trial,
            question.id,
        )


def _name(model: str | BaseChatModel) -> str:
    return model if isinstance(model, str) else type(model).__name__
