"""The runs `moot serve` answers, shown while they happen: each run's page (/runs/<id>) follows
its server-sent events (/runs/<id>/events), and /runs lists them.

A `LiveRun` keeps every event of its run, so a viewer who comes late (or reconnects, with
`Last-Event-ID`) first catches up, and any number of viewers each get every event. A viewer
only reads: one that hangs up ends its own stream, never the run. `LiveRuns` keeps the last
`kept` finished runs (and every run still going, at most the server's running and waiting
ones), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import html
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

from moot.errors import MootError
from moot.events import Event, ResultEvent, TurnEvent
from moot.graphs.helpers import valid_text
from moot.result import Result, Turn, round_stats
from moot.viewer import live_html, run_body, run_html, runs_html, turn_cell, vote_cell

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from moot.society import Society

KEPT_RUNS = 256
"""Finished runs whose pages the server keeps by default (the oldest go first)."""
KEEP_ALIVE = 15.0
"""Seconds between comments on an idle event stream, so that proxies keep it open and a
viewer that is gone is noticed."""

Status = Literal["waiting", "running", "answered", "failed", "cancelled"]


class LiveRun:
    """One served run from its arrival to its end, with the events its pages show."""

    def __init__(
        self,
        run_id: str,
        name: str,
        question: str,
        society: Society,
        ended: Callable[[], None] = lambda: None,
    ) -> None:
        self.id = run_id
        """The run's id: its chat completion's id, and its page's path /runs/<id>."""
        self.name = name
        """The served society's name."""
        self.question = question
        """The question asked."""
        self.agents = [agent.name for agent in society.agents]
        """The society's agents, in order: the grid's first columns."""
        self.participants = [
            society.agents[index].name for index in society.protocol.participants(society.agents)
        ]
        """The agents whose answers a round's vote counts; a round closes once all spoke."""
        self.status: Status = "waiting"
        """Where the run stands; "answered", "failed" and "cancelled" are its ends."""
        self.result: Result | None = None
        """The full record, once answered."""
        self.events: list[str] = []
        """Every event so far, as server-sent event text with its index as id."""
        self.turns: list[Turn] = []
        """The turns finished so far (emptied when the run ends: the events hold them)."""
        self._ended = ended
        self._closed: set[int] = set()
        self._spoke: dict[int, set[str]] = {}
        self._answers: dict[str, str] = {}
        self._changed = asyncio.Event()

    @property
    def over(self) -> bool:
        return self.status in ("answered", "failed", "cancelled")

    async def play(self, events: AsyncIterator[Event], gate: asyncio.Semaphore) -> Result:
        """Run the society's event stream once `gate` lets it start, recording each event;
        the result, or the error that ended the run (then recorded as its end)."""
        try:
            async with gate:
                self._emit("state", text="running")
                self.status = "running"
                result = None
                try:
                    async for event in events:
                        if isinstance(event, TurnEvent):
                            self._turn(event.turn)
                        elif isinstance(event, ResultEvent):
                            result = event.result
                finally:
                    closing = getattr(events, "aclose", None)
                    if closing is not None:
                        await closing()
            if result is None:
                raise MootError("the run ended without a result")
        except asyncio.CancelledError:
            self._end("cancelled", "cancelled: the client hung up before the run ended")
            raise
        except MootError as failure:
            self._end("failed", f"failed: {failure}")
            raise
        except Exception as error:
            self._end("failed", valid_text(f"failed: {type(error).__name__}: {error}"))
            raise
        for stats in result.conformity:
            if stats.round not in self._closed:
                self._emit("vote", round=stats.round, html=vote_cell(stats))
        self.result = result
        self._emit("result", answer=result.answer, html=run_body(result))
        self._end("answered")
        return result

    def settle(self) -> None:
        """End a run whose task ended without playing (cancelled before its first step)."""
        if not self.over:
            self._end("cancelled", "cancelled before it started")

    async def follow(self, after: int = -1) -> AsyncIterator[str]:
        """The events after the one numbered `after`, then each new one as it comes, until
        the run's last; a comment every `KEEP_ALIVE` seconds while nothing happens."""
        sent = max(after + 1, 0)
        while True:
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            if self.over:
                return
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), KEEP_ALIVE)
            except TimeoutError:
                yield ": keep-alive\n\n"

    def _turn(self, turn: Turn) -> None:
        for round in sorted(set(self._spoke) - self._closed):
            if round < turn.round:  # a later round started: this one is over
                self._close(round)
        self.turns.append(turn)
        previous = self._answers.get(turn.agent)
        changed = (
            turn.agent in self.participants
            and turn.answer is not None
            and previous is not None
            and previous != turn.answer
        )
        if turn.answer is not None:
            self._answers[turn.agent] = turn.answer
        self._emit(
            "turn",
            round=turn.round,
            agent=turn.agent,
            answer=turn.answer,
            failed=turn.failed,
            html=turn_cell(turn, changed),
        )
        spoke = self._spoke.setdefault(turn.round, set())
        spoke.add(turn.agent)
        if self.participants and spoke >= set(self.participants):
            self._close(turn.round)

    def _close(self, round: int) -> None:
        self._closed.add(round)
        stats = next(s for s in round_stats(self.turns, self.participants) if s.round == round)
        self._emit("vote", round=round, html=vote_cell(stats))

    def _end(self, status: Status, message: str = "") -> None:
        if status != "answered":
            self._emit("failed", status=status, message=message)
        self.status = status
        self.turns, self._spoke, self._answers = [], {}, {}  # the events and result hold them
        self._wake()
        self._ended()

    def _emit(self, kind: str, **data: Any) -> None:
        self.events.append(f"id: {len(self.events)}\nevent: {kind}\ndata: {json.dumps(data)}\n\n")
        self._wake()

    def _wake(self) -> None:
        """Wake the viewers waiting for an event; later ones wait on a fresh flag."""
        self._changed.set()
        self._changed = asyncio.Event()


class LiveRuns:
    """The served runs by id: every run still going, and the last `kept` finished ones."""

    def __init__(self, kept: int = KEPT_RUNS) -> None:
        self.kept = kept
        """How many finished runs stay (the oldest go first)."""
        self._runs: OrderedDict[str, LiveRun] = OrderedDict()

    def start(self, name: str, question: str, society: Society) -> LiveRun:
        """A new run of the society `name` on `question`, listed from now on."""
        run_id = f"chatcmpl-{uuid.uuid4().hex}"
        run = LiveRun(run_id, name, question, society, ended=self._trim)
        self._runs[run_id] = run
        return run

    def get(self, run_id: str) -> LiveRun | None:
        return self._runs.get(run_id)

    def newest(self) -> list[LiveRun]:
        """The runs, newest first."""
        return list(reversed(self._runs.values()))

    def _trim(self) -> None:
        finished = [run.id for run in self._runs.values() if run.over]
        for run_id in finished[: max(len(finished) - self.kept, 0)]:
            del self._runs[run_id]


def routes(runs: LiveRuns) -> list[Route]:
    """/runs (the list), /runs/<id> (a run's page) and /runs/<id>/events (its events)."""
    from starlette.responses import HTMLResponse, Response, StreamingResponse
    from starlette.routing import Route

    def missing(run_id: str) -> Response:
        message = f"no run {run_id} here (the last {runs.kept} finished runs are kept)"
        page = f"<!doctype html><meta charset='utf-8'><p>{html.escape(message)}</p>"
        return HTMLResponse(page, status_code=404)

    async def run_list(request: Request) -> Response:
        return HTMLResponse(
            runs_html(
                [
                    (
                        f"/runs/{run.id}",
                        f"{run.name}: {run.question[:100]}",
                        f"{run.status} → {run.result.answer}" if run.result else run.status,
                    )
                    for run in runs.newest()
                ]
            )
        )

    async def run_page(request: Request) -> Response:
        run = runs.get(request.path_params["run_id"])
        if run is None:
            return missing(request.path_params["run_id"])
        if run.result is not None:
            return HTMLResponse(run_html(run.result))
        return HTMLResponse(live_html(run.question, run.agents, f"/runs/{run.id}/events"))

    async def run_events(request: Request) -> Response:
        run = runs.get(request.path_params["run_id"])
        if run is None:
            return missing(request.path_params["run_id"])
        last = request.headers.get("last-event-id", "")
        after = int(last) if last.isdecimal() and len(last) < 10 else -1
        if run.over and after >= len(run.events) - 1:
            return Response(status_code=204)  # nothing more will come: stop reconnecting
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(run.follow(after), media_type="text/event-stream", headers=headers)

    return [
        Route("/runs", run_list, methods=["GET"]),
        Route("/runs/{run_id}", run_page, methods=["GET"]),
        Route("/runs/{run_id}/events", run_events, methods=["GET"]),
    ]
