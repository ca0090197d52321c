"""The benchmark runner: every (method, trial, question) once, locally or on Ray.

Each finished question is appended to `results.jsonl` at once, so a killed run loses at most the
questions in flight, and a rerun with the same settings skips what is there. The local backend
runs questions in a thread pool; the Ray backend (`moot.bench.ray`) spreads them over worker
actors, each holding its own societies (and loaded models), and gives the same records. One run
at a time writes into a folder (a lock file), and each ends by writing the folder's report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from moot.bench.methods import check_method
from moot.bench.progress import Progress
from moot.bench.questions import QuestionRunner
from moot.bench.records import BenchPlan, BenchRecord, WorkItem
from moot.bench.report import write_report
from moot.bench.store import ResultStore
from moot.errors import MootError

Backend = Literal["local", "ray"]
_LOCK = ".moot-bench.lock"


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
