"""The benchmark runner: every (method, trial, question) once, locally or on Ray.

Each finished question is appended to `results.jsonl` at once, so a killed run loses at most the
questions in flight, and a rerun with the same settings skips what is there. The local backend
runs questions in a thread pool; the Ray backend spreads them over worker actors, each holding
its own societies (and loaded models), and gives the same records.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from moot.bench.methods import MethodSettings, build_method, check_method
from moot.bench.tasks import Task
from moot.errors import ConfigError, MissingExtraError, ModelSpecError, MootError
from moot.result import Result
from moot.society import Society

Backend = Literal["local", "ray"]


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
    seconds: float = 0.0
    """Wall time of this question (varies between runs; everything else is reproducible)."""
    rounds: int = 0
    stop_reason: str | None = None
    failed_turns: int = 0
    error: str | None = None
    """Why the whole run failed (e.g. the question does not fit the context), else None."""
    per_round: list[RoundRecord] = Field(default_factory=list)

    def key(self) -> tuple[str, str, str, str, int, str]:
        return (self.task, self.method, self.model, self.settings, self.trial, self.question_id)


class WorkItem(BaseModel):
    method: str
    trial: int
    question: int
    """Index into the task's questions."""


class BenchPlan(BaseModel):
    """What to run: a task, methods, how they are built, and how many trials over seeds."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    task: Task
    methods: list[str] = Field(min_length=1)
    settings: MethodSettings = Field(default_factory=MethodSettings)
    trials: int = Field(default=1, ge=1)

    def model_label(self, method: str) -> str:
        model = self.settings.model
        if method.endswith((".yaml", ".yml")) and not self.settings.override:
            return "society file"
        return model if isinstance(model, str) else type(model).__name__

    def settings_label(self) -> str:
        s = self.settings
        return f"temperature={s.temperature} max_tokens={s.max_tokens} seed={s.seed}"

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


class QuestionRunner:
    """Runs work items of one plan; builds each (method, trial) society once."""

    def __init__(self, plan: BenchPlan) -> None:
        self.plan = plan
        self._societies: dict[tuple[str, int], Society] = {}
        self._lock = threading.Lock()

    def society(self, method: str, trial: int) -> Society:
        with self._lock:
            if (method, trial) not in self._societies:
                self._societies[method, trial] = build_method(
                    method, self.plan.task.extract, self.plan.settings, trial
                )
            return self._societies[method, trial]

    def run(self, item: WorkItem) -> BenchRecord:
        task = self.plan.task
        question = task.questions[item.question]
        name, method, model, settings, trial, question_id = self.plan.key(item)
        unanswered = BenchRecord(
            task=name,
            method=method,
            model=model,
            settings=settings,
            trial=trial,
            question_id=question_id,
            reference=question.answer,
            answer=None,
            correct=False,
        )
        society = self.society(item.method, item.trial)
        started = time.perf_counter()
        try:
            result = society.run(question.question)
        except MootError as error:
            seconds = round(time.perf_counter() - started, 3)
            return unanswered.model_copy(update={"seconds": seconds, "error": str(error)})
        participants = [agent.name for agent in society.agents]
        return unanswered.model_copy(
            update={
                "answer": result.answer,
                "correct": task.is_correct(result.answer, question),
                "input_tokens": result.usage.input_tokens,
                "output_tokens": result.usage.output_tokens,
                "tokens": result.usage.total_tokens,
                "calls": result.usage.calls,
                "seconds": round(time.perf_counter() - started, 3),
                "rounds": result.rounds,
                "stop_reason": result.stop_reason,
                "failed_turns": sum(turn.failed for turn in result.turns),
                "per_round": self._rounds(result, participants, item.question),
            }
        )

    def _rounds(self, result: Result, participants: list[str], index: int) -> list[RoundRecord]:
        task, question = self.plan.task, self.plan.task.questions[index]
        records = []
        for stats in result.conformity:
            turns = [t for t in result.round_turns(stats.round) if t.agent in participants]
            answers = {turn.agent: turn.answer for turn in turns}
            vote = _plurality(list(answers.values()))
            records.append(
                RoundRecord(
                    round=stats.round,
                    answers=answers,
                    correct={name: task.is_correct(a, question) for name, a in answers.items()},
                    vote=vote,
                    vote_correct=task.is_correct(vote, question),
                    agreement=stats.agreement,
                    tokens=sum(turn.usage.total_tokens for turn in turns),
                    calls=sum(turn.usage.calls for turn in turns),
                )
            )
        return records


def _plurality(answers: list[str | None]) -> str | None:
    counts: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
    return max(counts, key=lambda answer: counts[answer]) if counts else None


class ResultStore:
    """results.jsonl in a folder: read what is done, append records as they come.

    A line cut short by a killed run is skipped (that question runs again) and the next record
    starts on a line of its own."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / "results.jsonl"
        self._lock = threading.Lock()

    def records(self) -> list[BenchRecord]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(BenchRecord.model_validate_json(line))
            except ValidationError:
                continue
        return records

    def append(self, record: BenchRecord) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell():
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        handle.write(b"\n")
                handle.write(record.model_dump_json().encode() + b"\n")


def run_bench(
    plan: BenchPlan,
    out: str | Path,
    *,
    concurrency: int = 4,
    backend: Backend = "local",
    address: str | None = None,
    workers: int = 2,
    progress: bool = True,
    console: Console | None = None,
) -> list[BenchRecord]:
    """Run what `out/results.jsonl` does not hold yet; return the plan's records (old and new).

    `concurrency` bounds the questions in flight (per worker with Ray). With `backend="ray"`,
    `workers` actors run on the cluster at `address` (None: a local Ray instance).
    """
    for method in plan.methods:
        check_method(method)
    store = ResultStore(out)
    wanted = {plan.key(item): item for item in plan.items()}
    done = {record.key(): record for record in store.records() if record.key() in wanted}
    todo = [item for key, item in wanted.items() if key not in done]
    ray_pool = RayPool(plan, workers, concurrency, address) if backend == "ray" and todo else None
    bar = _Progress(plan, list(done.values()), enabled=progress, console=console)
    with bar, ExitStack() as stack:
        if ray_pool is not None:
            finished = stack.enter_context(ray_pool).run(todo)
        else:
            finished = _run_local(plan, todo, concurrency)
        for record in finished:
            store.append(record)
            done[record.key()] = record
            bar.add(record)
    return [done[key] for key in wanted if key in done]


def _run_local(plan: BenchPlan, todo: list[WorkItem], concurrency: int) -> Iterator[BenchRecord]:
    runner = QuestionRunner(plan)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    futures = [pool.submit(runner.run, item) for item in todo]
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:  # on an error or Ctrl-C, questions not yet started are dropped
        pool.shutdown(wait=True, cancel_futures=True)


class RayPool:
    """Worker actors on a Ray cluster (`address`, or a local instance started for the pool),
    each with its own societies and `concurrency` questions in flight.

    Entering the pool starts the workers and waits until each has built its societies (and
    loaded its models), so a model that cannot load fails here, and `run` times the work only.
    """

    def __init__(
        self, plan: BenchPlan, workers: int = 2, concurrency: int = 1, address: str | None = None
    ) -> None:
        try:
            import ray
        except ImportError as error:
            raise MissingExtraError("ray", "ray", "the Ray backend of `moot bench`") from error
        try:
            ray.cloudpickle.dumps(plan)
        except Exception as error:  # noqa: BLE001 - whatever pickling trips on
            raise ConfigError(
                f"the Ray backend sends the plan to its workers but cannot pickle it ({error}): "
                "give models as spec strings (llama:PATH, openai:MODEL), not loaded models"
            ) from error
        self._ray = ray
        self.plan, self.workers, self.concurrency, self.address = (
            plan,
            workers,
            concurrency,
            address,
        )
        self._started_here = False
        self._actors: list[Any] = []

    def __enter__(self) -> RayPool:
        ray = self._ray
        if not ray.is_initialized():
            self._started_here = True
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                cpus = max(self.workers, os.cpu_count() or 1)
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=1, max_concurrency=self.concurrency)(_RayWorker)
        try:
            self._actors = [actor.remote(self.plan) for _ in range(self.workers)]
            ray.get([worker.ready.remote() for worker in self._actors])
        except BaseException as error:
            self.__exit__()
            cause = _worker_error(error)
            if cause is not None:
                raise cause from None
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self._actors:
            self._ray.kill(worker)
        if self._started_here:
            self._ray.shutdown()

    def run(self, todo: list[WorkItem]) -> Iterator[BenchRecord]:
        """Records as they finish; each worker gets a new item as soon as it has a free slot."""
        queue = iter(todo)
        in_flight: dict[Any, int] = {}

        def submit(index: int) -> None:
            item = next(queue, None)
            if item is not None:
                in_flight[self._actors[index].run.remote(item)] = index

        for index in range(self.workers):
            for _ in range(self.concurrency):
                submit(index)
        while in_flight:
            ready, _ = self._ray.wait(list(in_flight), num_returns=1)
            index = in_flight.pop(ready[0])
            yield BenchRecord.model_validate(self._ray.get(ready[0]))
            submit(index)


def _worker_error(error: BaseException) -> MootError | None:
    """The moot error (a missing GGUF, an unknown spec) that stopped a worker, if that was it."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, MootError):
        return cause
    for kind in (ModelSpecError, ConfigError, MootError):
        name = kind.__name__
        if f"{name}: " in str(error):
            message = str(error).split(f"{name}: ", 1)[1].splitlines()[0]
            return kind(f"a Ray worker could not start: {message}")
    return None


class _RayWorker:
    """A Ray actor: one QuestionRunner, so each worker loads its models once."""

    def __init__(self, plan: BenchPlan) -> None:
        self.runner = QuestionRunner(plan)
        for method in plan.methods:
            for trial in range(plan.trials):
                self.runner.society(method, trial)

    def ready(self) -> bool:
        return True

    def run(self, item: WorkItem) -> dict[str, Any]:
        return self.runner.run(item).model_dump()


class _Progress:
    """One rich bar per method, with live accuracy and tokens per question."""

    def __init__(
        self,
        plan: BenchPlan,
        done: Iterable[BenchRecord],
        *,
        enabled: bool,
        console: Console | None,
    ) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
        )
        per_method = len(plan.task.questions) * plan.trials
        self.totals: dict[str, list[int]] = {method: [0, 0, 0] for method in plan.methods}
        self.bars = {
            method: self.progress.add_task(method, total=per_method, stats="")
            for method in plan.methods
        }
        for record in done:
            self.add(record)

    def add(self, record: BenchRecord) -> None:
        counts = self.totals[record.method]
        counts[0] += 1
        counts[1] += record.correct
        counts[2] += record.tokens
        answered, right, tokens = counts
        stats = (
            f"acc {100 * right / answered:5.1f}% ({right}/{answered})  {tokens // answered:,} tok/q"
        )
        self.progress.update(self.bars[record.method], advance=1, stats=stats)

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]
