"""The benchmark runner: every (method, trial, question) once, locally or on Ray.

Each finished question is appended to `results.jsonl` at once, so a killed run loses at most the
questions in flight, and a rerun with the same settings skips what is there. The local backend
runs questions in a thread pool; the Ray backend (`moot.bench.ray`) spreads them over worker
actors, each holding its own societies (and loaded models), and gives the same records. One run
at a time writes into a folder (a lock file), and each ends by writing the folder's report.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from moot.aggregate.vote import MajorityVote
from moot.bench.methods import build_method, check_method
from moot.bench.progress import Progress
from moot.bench.records import BenchPlan, BenchRecord, RoundRecord, WorkItem
from moot.bench.report import write_report
from moot.bench.store import ResultStore
from moot.errors import MootError
from moot.result import Result, Turn
from moot.society import Society

Backend = Literal["local", "ray"]
_PLURALITY = MajorityVote()
"""A round's vote: what stopping the debate after that round gives."""
_LOCK = ".moot-bench.lock"


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
            result = society.run(question.question, cache=self.plan.cache)
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
                "cost": result.usage.cost,
                "cached_calls": result.usage.cached_calls,
                "deferred_tokens": sum(_deferred(turn) for turn in result.turns),
                "tool_calls": sum(len(turn.tool_calls) for turn in result.turns),
                "seconds": round(time.perf_counter() - started, 3),
                "rounds": result.rounds,
                "stop_reason": result.stop_reason,
                "failed_turns": sum(turn.failed for turn in result.turns),
                "per_round": self._rounds(result, participants, item.question),
                "transcript": result.turns,
            }
        )

    def _rounds(self, result: Result, participants: list[str], index: int) -> list[RoundRecord]:
        task, question = self.plan.task, self.plan.task.questions[index]
        records = []
        for stats in result.conformity:
            turns = [t for t in result.round_turns(stats.round) if t.agent in participants]
            answers = {turn.agent: turn.answer for turn in turns}
            vote = _PLURALITY.vote(list(answers.values()))
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
    report: bool = True,
) -> list[BenchRecord]:
    """Run what `out/results.jsonl` does not hold yet; return the plan's records (old and new).

    `concurrency` bounds the questions in flight (per worker with Ray). With `backend="ray"`,
    `workers` actors run on the cluster at `address` (None: $RAY_ADDRESS, else a local Ray
    instance). Then, as `moot bench` does, report.md and its plots are written for everything in
    `out` (`report=False`: not now, e.g. between runs of a sweep; `write_report` writes it). A
    second run into `out` while this one writes it is refused (`MootError`).
    """
    for method in plan.methods:
        check_method(method)
    out = Path(out)
    with writing_to(out):
        store = ResultStore(out)
        wanted = {plan.key(item): item for item in plan.items()}
        done = {record.key(): record for record in store.records() if record.key() in wanted}
        todo = [item for key, item in wanted.items() if key not in done]
        with ExitStack() as stack:
            if backend == "ray" and todo:  # (before the bars: it connects and loads models)
                pool = stack.enter_context(_ray_pool(plan, workers, concurrency, address))
                finished = pool.run(todo)
            else:
                finished = _run_local(plan, todo, concurrency)
            with Progress(plan, list(done.values()), enabled=progress, console=console) as bar:
                for record in finished:
                    store.append(record)
                    done[record.key()] = record.model_copy(update={"transcript": []})  # on disk
                    bar.add(record)
        if report:
            write_report(store.records_with_transcripts(), out, plan.methods)
    return [done[key] for key in wanted if key in done]


@contextmanager
def writing_to(out: Path) -> Iterator[None]:
    """Hold the folder `out` while writing into it: a second run would mix its records into this
    one's and overwrite its report. The lock is an flock on OUT/.moot-bench.lock, which the system
    lets go when the process ends, so a killed run leaves no stale lock; the file names the PID
    of the run holding it, for the error. A folder made here and left empty is removed."""
    import fcntl  # (POSIX; imported here so that the rest of moot.bench imports anywhere)

    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = (out / _LOCK).open("a+", encoding="utf-8")
    except OSError as error:
        raise MootError(f"cannot write into {out}: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            pid = handle.read().strip()  # (empty while the other run is starting)
            holder = f" (pid {pid})" if pid else ""
            raise MootError(
                f"{out} is in use: another `moot bench`{holder} is writing into it; wait for it "
                "to finish, or write this run into another folder (--out)"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            if made and [path.name for path in out.iterdir()] == [_LOCK]:
                (out / _LOCK).unlink()
                out.rmdir()


def _run_local(plan: BenchPlan, todo: list[WorkItem], concurrency: int) -> Iterator[BenchRecord]:
    runner = QuestionRunner(plan)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    futures = [pool.submit(runner.run, item) for item in todo]
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:  # on an error or Ctrl-C, questions not yet started are dropped
        pool.shutdown(wait=True, cancel_futures=True)


def _ray_pool(plan: BenchPlan, workers: int, concurrency: int, address: str | None) -> Any:
    from moot.bench.ray import RayPool

    return RayPool(plan, workers, concurrency, address)


def _deferred(turn: Turn) -> int:
    fusion = turn.fusion
    return fusion.tokens_by_model[1] if fusion and fusion.deferral_rate is not None else 0
