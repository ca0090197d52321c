"""The Ray backend of `moot bench`: worker actors, each with its own societies and models."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from typing import Any

from moot.bench.questions import QuestionRunner
from moot.bench.records import BenchPlan, BenchRecord, WorkItem
from moot.errors import ConfigError, MissingExtraError, ModelSpecError, MootError


class RayPool:
    """Worker actors on a Ray cluster (`address`, else $RAY_ADDRESS, else a local instance
    started for the pool), each with its own societies and `concurrency` questions in flight.

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
            address = self.address or os.environ.get("RAY_ADDRESS")  # (as `ray.init()` reads it)
            if address:
                _connect(ray, address, "--address" if self.address else "RAY_ADDRESS")
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


_HOST_PORT = re.compile(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d{1,5})")


def _connect(ray: Any, address: str, given_by: str) -> None:
    """Join the cluster at `address`, or say in one line why not and what to do.

    An address where nothing listens is tried here first: Ray would retry it for minutes, with
    a screenful of warnings, before failing."""
    instead = "leave out --address" if given_by == "--address" else "unset RAY_ADDRESS"
    otherwise = f"or {instead} to run on a local Ray instance, or use --backend local"
    match = _HOST_PORT.fullmatch(address)
    if match is not None:
        host, port = match.groups()
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, OverflowError) as error:
            reason = getattr(error, "strerror", None) or error
            raise ConfigError(
                f"no Ray cluster answers at {address} ({given_by}; {reason}): start one with "
                f"`ray start --head` and give the address it prints, {otherwise}"
            ) from None
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError:  # ("auto" and no cluster running)
        raise ConfigError(
            f"no Ray cluster is running ({given_by} {address}): start one with "
            f"`ray start --head`, {otherwise}"
        ) from None
    except ValueError as error:  # (an address Ray cannot read)
        raise ConfigError(
            f"{given_by} {address}: Ray cannot read it ({error}); give auto, HOST:PORT or "
            "ray://HOST:PORT"
        ) from None


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
        record = self.runner.run(item)
        transcript = [turn.model_dump(mode="json") for turn in record.transcript]
        return {**record.model_dump(), "transcript": transcript}  # (excluded from dumps)
