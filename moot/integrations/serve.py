"""`moot serve`: societies behind an OpenAI-compatible /v1/chat/completions endpoint.

The request's `model` names a society (its file's stem); the last user message is the question;
the reply is the society's answer, with usage summed over every agent and the full record under
"moot". Errors use OpenAI's error body: 404 for an unknown society, 400 for a bad request, 413
for a body over `max_body` bytes, 429 when too many requests wait, 500 when the server fails. A
request is read and checked whole before any work starts (`chat_request`). Each run has a page,
/runs/<completion id>, live while it runs (`live`); the id comes back in the `X-Moot-Run-Id`
header at once and in the reply's "moot"."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from moot.errors import ConfigError, MissingExtraError, MootError
from moot.graphs.helpers import valid_text
from moot.integrations.chat_request import (
    ChatRequest,
    Refusal,
    parse_chat_request,
    question_of,
    read_body,
)
from moot.integrations.live import KEPT_RUNS, LiveRuns, routes
from moot.result import Result

RUN_HEADER = "X-Moot-Run-Id"
"""The response header that names a request's run (its page is /runs/<id>)."""
MAX_BODY = 1 << 20
"""Bytes a request body may have by default (1 MiB); a longer one is refused unread."""

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

    from moot.society import Society


def create_app(
    societies: dict[str, Society],
    *,
    concurrent_runs: int = 4,
    queue: int = 64,
    max_body: int = MAX_BODY,
    kept_runs: int = KEPT_RUNS,
) -> Starlette:
    """The ASGI app serving `societies` by name.

    At most `concurrent_runs` runs go at once (their calls to one local model decode together
    on the batched engine) and the rest wait their turn, first come first served; a request
    counts from its arrival, so beyond `queue` waiting ones (a burst included) the server answers
    429. A body over `max_body` bytes is a 413. A client that hangs up cancels its run. The
    pages of the runs still going and of the last `kept_runs` finished ones are served.
    """
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError as error:
        raise MissingExtraError("starlette", "serve", "`moot serve`") from error

    gate = _Gate(concurrent_runs, queue)
    runs = LiveRuns(kept_runs)

    def refuse(
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        details = {"message": message, "type": kind, "param": param, "code": code}
        return JSONResponse({"error": details}, status_code=status, headers=headers)

    class RunStream(StreamingResponse):
        """Cancels its run however the response ends: also when the client hung up before the
        stream began, when the chunks' generator never runs and so never cleans up."""

        def __init__(
            self, chunks: AsyncIterator[str], run: asyncio.Task[Result], headers: dict[str, str]
        ) -> None:
            super().__init__(chunks, media_type="text/event-stream", headers=headers)
            self.run = run

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                _stop(self.run)

    async def models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "moot"} for name in societies
        ]
        return JSONResponse({"object": "list", "data": data})

    async def checked(request: Request) -> tuple[ChatRequest, str]:
        """The request and its question, read whole and checked before any work starts."""
        try:  # a client that sends its body slowly must not hold a place in the queue
            body = await asyncio.wait_for(read_body(request, max_body), BODY_SECONDS)
        except TimeoutError:
            raise Refusal(408, f"the request body took over {BODY_SECONDS:g} s to arrive") from None
        chat = parse_chat_request(body)
        if chat.model not in societies:
            known = ", ".join(societies)
            raise Refusal(
                404,
                f"The model '{chat.model}' does not exist; served: {known}",
                "model",
                code="model_not_found",
            )
        question = question_of(chat.messages)
        try:
            societies[chat.model].check(question)  # refuse what cannot run
        except MootError as failure:
            raise Refusal(400, str(failure), "messages") from None
        return chat, question

    async def chat_completions(request: Request) -> Response:
        if not gate.admit():  # counted before any await, so a burst cannot overrun the queue
            return refuse(
                429,
                f"the server is busy: {gate.queue} requests already wait for a run; retry later",
                "server_busy",
                kind="rate_limit_error",
            )
        try:
            chat, question = await checked(request)
        except Refusal as refusal:
            gate.leave()
            return refuse(refusal.status, refusal.message, refusal.code, refusal.param)
        except ClientDisconnect:  # gone while sending the body: nobody reads an answer
            gate.leave()
            return Response(status_code=499)
        except BaseException:
            gate.leave()
            raise
        society = societies[chat.model]
        live = runs.start(chat.model, question, society)
        run = gate.start(live.play(society.astream(question), gate.semaphore))
        run.add_done_callback(lambda _: live.settle())
        named = {RUN_HEADER: live.id}
        if chat.stream:
            with_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            chunks = _chunks(live.id, chat.model, run, request, with_usage)
            return RunStream(chunks, run, named)
        try:
            result = await _unless_gone(run, request)
        except MootError as failure:
            return refuse(400, str(failure), param="messages", headers=named)
        except Exception as error:  # noqa: BLE001 - the client gets an OpenAI error body
            failed = await crash(request, error)
            failed.headers[RUN_HEADER] = live.id
            return failed
        if result is None:  # the client hung up; nobody reads this
            return Response(status_code=499)
        return JSONResponse(_completion(live.id, chat.model, result), headers=named)

    async def not_served(request: Request, error: Exception) -> Response:
        """Unknown paths and wrong methods get OpenAI's error body too, not plain text."""
        assert isinstance(error, HTTPException)
        return refuse(error.status_code, error.detail, headers=error.headers)

    async def crash(request: Request, error: Exception) -> Response:
        message = f"the server failed on this request: {type(error).__name__}: {error}"
        return refuse(500, valid_text(message), "server_error", kind="server_error")

    return Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            *routes(runs),
        ],
        exception_handlers={HTTPException: not_served, Exception: crash},
    )


class _Gate:
    """Lets `limit` runs go at once; the others wait in arrival order (asyncio's semaphore
    wakes its waiters first in, first out). A request holds its place from arrival until its
    run ends, and at most `limit + queue` are held."""

    def __init__(self, limit: int, queue: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.limit, self.queue = limit, queue
        self.held = 0

    def admit(self) -> bool:
        if self.held >= self.limit + self.queue:
            return False
        self.held += 1
        return True

    def leave(self) -> None:
        self.held -= 1

    def start(self, work: Coroutine[Any, Any, Result]) -> asyncio.Task[Result]:
        """The admitted request's run (`work` waits for the semaphore); its place is given back
        when the task ends, even if it is cancelled before its first step."""
        run = asyncio.create_task(work)
        run.add_done_callback(lambda _: self.leave())
        return run


BODY_SECONDS = 30.0
"""How long a request's body may take to arrive (then 408)."""


async def _unless_gone(run: asyncio.Task[Result], request: Request) -> Result | None:
    """The run's result, or None (the run cancelled) once the client has disconnected. The run
    is watched, never awaited: awaiting it would pass on each cancel of the waiter (anyio
    repeats them), and see `_stop`."""
    try:
        while True:
            done, _ = await asyncio.wait({run}, timeout=0.2)
            if done:
                return run.result()
            if await request.is_disconnected():
                _stop(run)
                return None
    except asyncio.CancelledError:
        _stop(run)
        raise


def _stop(run: asyncio.Task[Result]) -> None:
    """Cancel the run once: a second cancel before the first is handled cuts LangGraph's
    clean-up short, and the node tasks in flight (a local generation) run on to their end."""
    if not run.done() and not run.cancelling():
        run.cancel()


def _usage(result: Result) -> dict[str, int]:
    return {
        "prompt_tokens": result.usage.input_tokens,
        "completion_tokens": result.usage.output_tokens,
        "total_tokens": result.usage.total_tokens,
    }


def _completion(completion_id: str, name: str, result: Result) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer or ""},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(result),
        "moot": {
            **result.model_dump(mode="json", exclude={"question"}),
            "run_id": completion_id,
            "page": f"/runs/{completion_id}",
        },
    }


async def _chunks(
    completion_id: str,
    name: str,
    run: asyncio.Task[Result],
    request: Request,
    with_usage: bool,
) -> AsyncIterator[str]:
    """The answer as server-sent chat.completion.chunk events (it exists once the run ends).
    A client that hangs up ends this stream (its response then cancels the run)."""
    created = int(time.time())

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
        """One event; no `delta` is the usage event, with no choices."""
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def failed(message: str, kind: str, code: str | None) -> str:
        error = {"message": message, "type": kind, "param": None, "code": code}
        return f"data: {json.dumps({'error': error})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        result = await _unless_gone(run, request)
    except MootError as failure:
        yield failed(str(failure), "invalid_request_error", None)
        return
    except Exception as error:  # noqa: BLE001 - the headers are sent: the error is an event
        message = f"the server failed on this request: {type(error).__name__}: {error}"
        yield failed(valid_text(message), "server_error", "server_error")
        return
    if result is None:
        return
    yield chunk({"content": result.answer or ""})
    yield chunk({}, "stop")
    if with_usage:
        yield chunk(None, usage=_usage(result))
    yield "data: [DONE]\n\n"


def serve(
    societies: dict[str, Society],
    host: str,
    port: int,
    *,
    concurrent_runs: int = 4,
    queue: int = 64,
    max_body: int = MAX_BODY,
    kept_runs: int = KEPT_RUNS,
) -> None:
    """Serve until interrupted; the port is bound first, so a taken port is a clear error."""
    try:
        import uvicorn
    except ImportError as error:
        raise MissingExtraError("uvicorn", "serve", "`moot serve`") from error
    listening = listening_socket(host, port, "choose another --port or --host")
    app = create_app(
        societies,
        concurrent_runs=concurrent_runs,
        queue=queue,
        max_body=max_body,
        kept_runs=kept_runs,
    )
    config = uvicorn.Config(app, log_level="warning")
    where = f"http://{address(host, port)}"
    print(f"serving {', '.join(societies)} on {where}/v1; runs live at {where}/runs", flush=True)
    uvicorn.Server(config).run(sockets=[listening])


def address(host: str, port: int) -> str:
    """`host:port` as a URL writes it: an IPv6 address goes in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening_socket(host: str, port: int, fix: str) -> socket.socket:
    """A socket bound to HOST:PORT and listening, for uvicorn to serve on. Bound before the app
    starts, so a taken port is a clear error (ending in FIX) before anything is served; listening
    before the server announces itself, so a client that connects at once waits in the backlog
    instead of being refused while the app starts."""
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
        listening.listen(128)
    except OSError as error:
        listening.close()
        raise ConfigError(
            f"cannot listen on {address(host, port)} ({error.strerror}): {fix}"
        ) from None
    return listening
