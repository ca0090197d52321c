"""`moot mcp`: a society as a Model Context Protocol server (the official `mcp` SDK's FastMCP).

One tool, `ask`, runs the society on a question and returns the answer, each agent's answer of
the last round (its vote), usage and cost, and a link to the transcript. The call reports
progress when it starts and after each round; a client that cancels it cancels the run, so no
model is called after. Transcripts are resources: `moot://runs/{id}` (the last `KEPT_RUNS`
runs; a running one's turns so far), listed at `moot://runs`. Served over stdio or streamable
HTTP (`serve_stdio`, `serve_http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moot.config import describe
from moot.errors import MissingExtraError, MootError
from moot.events import ResultEvent, TurnEvent
from moot.graphs.types import MAX_ROUNDS
from moot.integrations.serve import address, listening_socket
from moot.result import Result, Turn, Usage
from moot.society import Society

try:
    import anyio
    from mcp.server.fastmcp import Context, FastMCP
    from mcp.server.fastmcp.exceptions import ToolError
    from mcp.server.fastmcp.tools import Tool
    from mcp.types import CallToolResult, ContentBlock, ResourceLink, TextContent
except ImportError as missing:  # pragma: no cover - the extra is part of dev
    raise MissingExtraError("mcp", "mcp", "`moot mcp`") from missing

KEPT_RUNS = 256
"""Runs whose transcripts the server keeps (the oldest go first)."""
MAX_QUESTION = 1_000_000
"""Characters a question may have; a longer one is refused before the run (one that does not fit
a model's context window is refused by the run itself, before any call)."""
RUNS = "moot://runs"
"""The resource listing the kept runs; `RUNS/ID` is one run's transcript."""

Log = Callable[[str], None]
"""Where the server says what happened to each run (one line each)."""


class Answer(BaseModel):
    """What the `ask` tool returns (its structured content; the text content is this as JSON)."""

    answer: str | None
    """The society's final answer; None when no answer won."""
    votes: dict[str, str | None]
    """Each agent's answer in the last round, in agent order (None: its turn failed or gave no
    readable answer)."""
    rounds: int
    """Rounds actually run."""
    stop_reason: str
    """Why the run ended: rounds, consensus, token_budget, accepted, confident, failed."""
    usage: Usage
    """Tokens, model calls and cost summed over every turn (cost in the unit of the models'
    prices, None when no model has prices)."""
    transcript: str
    """The run's transcript resource, moot://runs/ID."""


class AskArguments(BaseModel):
    """The `ask` tool's arguments, checked strictly before anything runs: no unknown names, no
    "2" for a number."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(min_length=1, max_length=MAX_QUESTION)
    rounds: int | None = Field(default=None, ge=1, le=MAX_ROUNDS)


Question = Annotated[
    str,
    Field(min_length=1, max_length=MAX_QUESTION, description="The question for the society."),
]
Rounds = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_ROUNDS,
        description="Rounds to run, the first included (default: the society's own).",
    ),
]


@dataclass
class RunRecord:
    """One run the server started: its question, how it stands, its turns so far and result."""

    id: str
    """Its name in the transcript's URI, moot://runs/ID."""
    question: str
    status: Literal["running", "answered", "failed", "cancelled"] = "running"
    """Running (or waiting for a place), answered, failed (`error` says why: a question the
    run refused, a crash), or cancelled by its client."""
    turns: list[Turn] = field(default_factory=list)
    """Finished turns, as they arrive."""
    result: Result | None = None
    error: str | None = None
    """Why the run failed."""

    @property
    def uri(self) -> str:
        return f"{RUNS}/{self.id}"

    def transcript(self) -> dict[str, Any]:
        """The whole record: the `Result` once answered, else the turns so far."""
        head = {"id": self.id, "status": self.status, "error": self.error}
        if self.result is not None:
            return {**head, **self.result.model_dump(mode="json")}
        turns = [turn.model_dump(mode="json") for turn in self.turns]
        return {**head, "question": self.question, "turns": turns}

    def summary(self) -> dict[str, Any]:
        answer = self.result.answer if self.result is not None else None
        return {
            "id": self.id,
            "uri": self.uri,
            "status": self.status,
            "question": self.question[:200],
            "answer": answer,
        }


class RoundWatch:
    """Tells from finished turns when a round is over: every participant has a turn in it, or a
    later round has begun (the run's end closes the rest)."""

    def __init__(self, participants: list[str]) -> None:
        self.participants = set(participants)
        self.seen: dict[int, set[str]] = {}
        self.closed = 0

    def add(self, turn: Turn) -> list[int]:
        """The rounds this turn closes, in order."""
        self.seen.setdefault(turn.round, set()).add(turn.agent)
        last = turn.round - 1
        if self.participants <= self.seen[turn.round]:
            last = turn.round
        return self.close(last)

    def close(self, last: int) -> list[int]:
        """Close every round up to `last`; the ones newly closed."""
        newly = list(range(self.closed + 1, last + 1))
        self.closed = max(self.closed, last)
        return newly


class SocietyServer:
    """What the MCP server serves: the society (and copies with other rounds), the kept runs,
    and the gate that lets `concurrent_runs` runs go at once."""

    def __init__(self, society: Society, concurrent_runs: int = 4, log: Log | None = None) -> None:
        self.society = society
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self.gate = asyncio.Semaphore(concurrent_runs)
        self.log = log or (lambda line: None)
        self._by_rounds: dict[int, Society] = {}
        protocol = society.protocol
        self.rounds: int | None = getattr(protocol, "rounds", None)
        """The society's rounds, where its protocol has them (then `ask` takes `rounds`)."""
        self.participants = [society.agents[i].name for i in protocol.participants(society.agents)]

    def describe(self) -> str:
        """The tool's description: what the society is and what a call gives."""
        kind = getattr(self.society.protocol, "kind", type(self.society.protocol).__name__)
        rounds = f", {self.rounds} rounds" if self.rounds is not None else ""
        return (
            f"Ask a society of {len(self.society.agents)} LLM agents ({kind}{rounds}) a "
            "question. Returns the final answer, each agent's answer in the last round (votes), "
            "usage (tokens, calls, cost) and the transcript's resource URI; reports progress "
            "after each round. Ask one self-contained question, with the answer format you want."
        )

    def society_for(self, rounds: int | None) -> Society:
        """The society, with `rounds` rounds if given (copies kept, one per count: compiling a
        graph costs more than a short run)."""
        if rounds is None or rounds == self.rounds:
            return self.society
        if self.rounds is None:
            raise ToolError("this society's protocol has no rounds: leave out 'rounds'")
        if rounds not in self._by_rounds:
            protocol = self.society.protocol
            data = {**protocol.model_dump(), "rounds": rounds}
            if "layers" in type(protocol).model_fields:  # a mixture's rounds are its layers
                data["layers"] = rounds
            try:
                changed = type(protocol).model_validate(data)
            except ValidationError as error:
                raise ToolError(
                    f"rounds={rounds} does not fit this society: {describe(error)}"
                ) from None
            self._by_rounds[rounds] = self.society.model_copy(update={"protocol": changed})
        return self._by_rounds[rounds]

    async def ask(self, question: str, rounds: int | None, ctx: Context[Any, Any, Any]) -> Answer:
        """Run the society on `question` in a task of its own, watched rather than awaited: a
        cancelled call (the client's cancel, a closed session) cancels the run once, and the
        run's own clean-up stops its model calls."""
        society = self.society_for(rounds)
        record = self._keep(RunRecord(id=uuid4().hex[:16], question=question))
        run = asyncio.create_task(self._run(society, record, ctx, rounds or self.rounds))
        try:
            await asyncio.wait({run})
        except asyncio.CancelledError:
            if not run.done() and not run.cancelling():
                run.cancel()
            if record.status == "running":  # (a run cancelled before it began says nothing)
                record.status = "cancelled"
            raise
        result = run.result()
        last = result.round_turns(result.rounds)
        return Answer(
            answer=result.answer,
            votes={turn.agent: turn.answer for turn in last},
            rounds=result.rounds,
            stop_reason=result.stop_reason,
            usage=result.usage,
            transcript=record.uri,
        )

    async def _run(
        self, society: Society, record: RunRecord, ctx: Context[Any, Any, Any], total: int | None
    ) -> Result:
        watch = RoundWatch(self.participants)

        async def report(rounds: list[int]) -> None:
            for number in rounds:
                answers = ", ".join(
                    f"{turn.agent}: {turn.answer if turn.error is None else 'failed'}"
                    for turn in record.turns
                    if turn.round == number
                )
                await _progress(ctx, number, total, f"round {number} done ({answers})")

        try:
            await _progress(ctx, 0, total, f"run {record.uri}")
            async with self.gate:
                async for event in society.astream(record.question):
                    if isinstance(event, TurnEvent):
                        record.turns.append(event.turn)
                        await report(watch.add(event.turn))
                    elif isinstance(event, ResultEvent):
                        record.result = event.result
            assert record.result is not None  # the stream always ends with it
            await report(watch.close(record.result.rounds))
        except asyncio.CancelledError:
            record.status = "cancelled"
            self.log(f"run {record.id}: cancelled after {len(record.turns)} turns")
            raise
        except MootError as error:
            self._failed(record, str(error))
            raise ToolError(str(error)) from None
        except Exception as error:  # noqa: BLE001 - the client gets an error result, not a crash
            self._failed(record, f"the run failed: {type(error).__name__}: {error}")
            raise ToolError(record.error) from None
        if record.result.stop_reason == "failed":  # a whole round of failed calls
            first = next((turn.error for turn in record.turns if turn.error), "no reply")
            self._failed(record, f"every model call failed; the first error: {first}")
            raise ToolError(f"{record.error} (transcript: {record.uri})")
        record.status = "answered"
        usage = record.result.usage
        self.log(
            f"run {record.id}: answered {record.result.answer!r} after {record.result.rounds} "
            f"rounds ({usage.calls} calls, {usage.total_tokens} tokens)"
        )
        return record.result

    def _failed(self, record: RunRecord, message: str) -> None:
        record.status, record.error = "failed", message
        self.log(f"run {record.id}: failed: {message}")

    def _keep(self, record: RunRecord) -> RunRecord:
        self.runs[record.id] = record
        while len(self.runs) > KEPT_RUNS:
            self.runs.popitem(last=False)
        return record

    def transcript(self, run_id: str) -> str:
        record = self.runs.get(run_id)
        if record is None:
            raise ValueError(
                f"no run {run_id} here: the server keeps the last {KEPT_RUNS} runs (see {RUNS})"
            )
        return json.dumps(record.transcript())


async def _progress(ctx: Context[Any, Any, Any], done: int, total: int | None, text: str) -> None:
    """A progress notification, if the client asked for them; a client gone meanwhile is the
    cancel's business, not the run's."""
    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
        await ctx.report_progress(done, total, text)


class _Server(FastMCP[Any]):
    """FastMCP, with `ask`'s arguments checked strictly first (FastMCP's own check is lax and
    its message a pydantic dump): one line naming the argument and what it must be."""

    takes_rounds = True
    """Whether `ask` takes `rounds` (the society's protocol has rounds)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any]
    ) -> list[ContentBlock] | dict[str, Any] | Any:
        if name == "ask":
            takes = f", and optionally 'rounds': 1 to {MAX_ROUNDS}" if self.takes_rounds else ""
            usage = f"ask takes 'question': text of 1 to {MAX_QUESTION:,} characters{takes}"
            if "rounds" in arguments and not self.takes_rounds:
                raise ToolError(
                    f"this society's protocol has no rounds: leave out 'rounds' ({usage})"
                )
            try:
                AskArguments.model_validate(arguments)
            except ValidationError as error:
                raise ToolError(f"invalid arguments: {describe(error)} ({usage})") from None
        return await super().call_tool(name, arguments)


def create_server(
    society: Society,
    *,
    name: str = "moot",
    host: str = "127.0.0.1",
    port: int = 8000,
    concurrent_runs: int = 4,
    log: Log | None = None,
) -> FastMCP[Any]:
    """The MCP server of `society`: the `ask` tool and the transcript resources. `host` and
    `port` matter only to streamable HTTP (FastMCP checks the Host header of local ones)."""
    served = SocietyServer(society, concurrent_runs, log)

    def answered(answer: Answer) -> CallToolResult:
        link = ResourceLink(
            type="resource_link",
            uri=answer.transcript,  # type: ignore[arg-type]  # pydantic reads the URL
            name="transcript",
            mimeType="application/json",
        )
        text = TextContent(type="text", text=answer.model_dump_json())
        return CallToolResult(
            content=[text, link], structuredContent=answer.model_dump(mode="json")
        )

    async def ask_with_rounds(
        question: Question, ctx: Context[Any, Any, Any], rounds: Rounds = None
    ) -> Annotated[CallToolResult, Answer]:
        return answered(await served.ask(question, rounds, ctx))

    async def ask(
        question: Question, ctx: Context[Any, Any, Any]
    ) -> Annotated[CallToolResult, Answer]:
        return answered(await served.ask(question, None, ctx))

    tool = Tool.from_function(
        ask if served.rounds is None else ask_with_rounds, name="ask", description=served.describe()
    )
    server = _Server(
        name, tools=[tool], host=host, port=port, log_level="WARNING", warn_on_duplicate_tools=False
    )
    server.takes_rounds = served.rounds is not None

    @server.resource(
        f"{RUNS}/{{run_id}}", name="transcript", mime_type="application/json",
        description="A run's transcript: every turn, the answer and usage (turns so far while "
        "it runs)",
    )  # fmt: skip
    def transcript(run_id: str) -> str:
        return served.transcript(run_id)

    @server.resource(RUNS, name="runs", mime_type="application/json", description="Kept runs")
    def runs() -> str:
        return json.dumps([record.summary() for record in reversed(served.runs.values())])

    return server


def serve_stdio(server: FastMCP[Any]) -> None:
    """Serve over stdin and stdout until the client closes them."""
    anyio.run(server.run_stdio_async)


def serve_http(server: FastMCP[Any], host: str, port: int, announce: Log | None = None) -> None:
    """Serve streamable HTTP at http://HOST:PORT/mcp until interrupted."""
    import uvicorn

    listening = listening_socket(host, port, "choose another port or --host")
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    if announce is not None:
        announce(f"serving {server.name} over MCP at http://{address(host, port)}/mcp")
    uvicorn.Server(config).run(sockets=[listening])
