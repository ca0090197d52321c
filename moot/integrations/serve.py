"""`moot serve`: societies behind an OpenAI-compatible /v1/chat/completions endpoint.

The request's `model` names a society (its file's stem); the last user message is the question;
the reply is the society's answer, with usage summed over every agent and the full record under
"moot". Errors use OpenAI's error body: 404 for an unknown society, 400 for a bad request, 413
for a body over `max_body` bytes, 429 when too many requests wait, 500 when the server fails. A
request is read and checked whole before any work starts. Each answered run's page (`moot
show`'s HTML) is at /runs/<completion id>, for the last `KEPT_RUNS` runs; /runs lists them.
"""

from __future__ import annotations

import asyncio
import html
import json
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moot.errors import ConfigError, MissingExtraError, MootError
from moot.graphs.helpers import valid_text
from moot.result import Result

KEPT_RUNS = 256
"""Answered runs whose pages the server keeps (the oldest go first)."""
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
) -> Starlette:
    """The ASGI app serving `societies` by name.

    At most `concurrent_runs` runs go at once (their calls to one local model decode together
    on the batched engine) and the rest wait their turn, first come first served; a request
    counts from its arrival, so beyond `queue` waiting ones (a burst included) the server answers
    429. A body over `max_body` bytes is a 413. A client that hangs up cancels its run.
    """
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect
        from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError as error:
        raise MissingExtraError("starlette", "serve", "`moot serve`") from error

    gate = _Gate(concurrent_runs, queue)
    answered: OrderedDict[str, tuple[str, Result]] = OrderedDict()

    def keep(completion_id: str, name: str, result: Result) -> None:
        answered[completion_id] = (name, result)
        while len(answered) > KEPT_RUNS:
            answered.popitem(last=False)

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

        def __init__(self, chunks: AsyncIterator[str], run: asyncio.Task[Result]) -> None:
            super().__init__(chunks, media_type="text/event-stream")
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

    async def checked(request: Request) -> tuple[_ChatRequest, str]:
        """The request and its question, read whole and checked before any work starts."""
        try:  # a client that sends its body slowly must not hold a place in the queue
            body = await asyncio.wait_for(_body(request, max_body), BODY_SECONDS)
        except TimeoutError:
            raise _Refusal(
                408, f"the request body took over {BODY_SECONDS:g} s to arrive"
            ) from None
        chat = _chat_request(body)
        if chat.model not in societies:
            known = ", ".join(societies)
            raise _Refusal(
                404,
                f"The model '{chat.model}' does not exist; served: {known}",
                "model",
                code="model_not_found",
            )
        question = _question(chat.messages)
        try:
            societies[chat.model].check(question)  # refuse what cannot run
        except MootError as failure:
            raise _Refusal(400, str(failure), "messages") from None
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
        except _Refusal as refusal:
            gate.leave()
            return refuse(refusal.status, refusal.message, refusal.code, refusal.param)
        except ClientDisconnect:  # gone while sending the body: nobody reads an answer
            gate.leave()
            return Response(status_code=499)
        except BaseException:
            gate.leave()
            raise
        run = gate.start(societies[chat.model], question)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if chat.stream:
            with_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            chunks = _chunks(completion_id, chat.model, run, request, with_usage, keep)
            return RunStream(chunks, run)
        try:
            result = await _unless_gone(run, request)
        except MootError as failure:
            return refuse(400, str(failure), param="messages")
        except Exception as error:  # noqa: BLE001 - the client gets an OpenAI error body
            return await crash(request, error)
        if result is None:  # the client hung up; nobody reads this
            return Response(status_code=499)
        keep(completion_id, chat.model, result)
        return JSONResponse(_completion(completion_id, chat.model, result))

    async def run_page(request: Request) -> Response:
        from moot.viewer import run_html

        kept = answered.get(request.path_params["run_id"])
        if kept is None:
            message = f"no run {request.path_params['run_id']} here (the last {KEPT_RUNS} are kept)"
            return HTMLResponse(f"<!doctype html><p>{html.escape(message)}</p>", status_code=404)
        return HTMLResponse(run_html(kept[1]))

    async def run_list(request: Request) -> Response:
        items = "".join(
            f"<li><a href='/runs/{run_id}'>{html.escape(name)}: "
            f"{html.escape(result.question[:100])}</a> → {html.escape(str(result.answer))}</li>"
            for run_id, (name, result) in reversed(answered.items())
        )
        return HTMLResponse(f"<!doctype html><title>moot runs</title><ul>{items}</ul>")

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
            Route("/runs", run_list, methods=["GET"]),
            Route("/runs/{run_id}", run_page, methods=["GET"]),
        ],
        exception_handlers={HTTPException: not_served, Exception: crash},
    )


class _Refusal(Exception):
    """A request refused before any work started: its status, message and parameter."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


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

    def start(self, society: Society, question: str) -> asyncio.Task[Result]:
        """The admitted request's run; its place is given back when the task ends, even if it
        is cancelled before its first step."""
        run = asyncio.create_task(self._run(society, question))
        run.add_done_callback(lambda _: self.leave())
        return run

    async def _run(self, society: Society, question: str) -> Result:
        async with self.semaphore:
            return await society.arun(question)


BODY_SECONDS = 30.0
"""How long a request's body may take to arrive (then 408)."""


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes: by its
    Content-Length, or while a chunked body is read."""
    declared = request.headers.get("content-length", "")
    too_long = _Refusal(413, f"the request body is over the limit of {limit} bytes")
    if declared.isdecimal() and int(declared) > limit:
        raise too_long
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_long
        chunks.append(chunk)
    return b"".join(chunks)


class _Checked(BaseModel):
    """Types as JSON gives them: no "false" for a boolean, no 1.0 for a count."""

    model_config = ConfigDict(strict=True, extra="ignore")


class _Message(_Checked):
    role: str
    content: Any = None  # only a user message's is read; _is_text checks it


class _StreamOptions(_Checked):
    include_usage: bool | None = None


class _ChatRequest(_Checked):
    """The fields moot reads, and OpenAI's sampling fields (accepted, checked as OpenAI
    checks them, and left to each agent's own settings)."""

    model: str
    messages: list[_Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    user: str | None = None


_HINTS = {
    "model": "the name of a served society",
    "messages": "a non-empty list of chat messages",
    "n": "moot answers with one choice",
}


def _chat_request(raw: bytes) -> _ChatRequest:
    """The request body parsed and checked, or a 400 saying what is wrong and where."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise _Refusal(400, "the request body is nested too deeply") from None
    except ValueError:
        raise _Refusal(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _Refusal(400, "the request body must be a JSON object")
    try:
        chat = _ChatRequest.model_validate(body)
    except ValidationError as invalid:
        first = invalid.errors()[0]
        param = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
        )
        param = param.removeprefix(".")
        if first["type"] == "missing":
            message = f"'{param}' is required"
        elif first["type"] == "model_type":
            message = f"'{param}' must be a JSON object"
        else:
            message = f"invalid '{param}': {first['msg']}"
        hint = _HINTS.get(param)
        raise _Refusal(400, f"{message} ({hint})" if hint else message, param) from None
    for each in chat.messages:
        if each.role == "user" and not _is_text(each.content):
            raise _Refusal(
                400,
                "a user message's 'content' must be text or a list of text parts "
                '({"type": "text", "text": ...})',
                "messages",
            )
    if not any(each.role == "user" for each in chat.messages):
        raise _Refusal(400, "'messages' holds no user message with the question", "messages")
    return chat


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


def _question(messages: list[_Message]) -> str:
    """The last user message's text (OpenAI's text parts joined)."""
    content = next(m.content for m in reversed(messages) if m.role == "user")
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def _is_text(content: Any) -> bool:
    if isinstance(content, str):
        return True
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(part, dict) for part in content)
        and any(part.get("type") == "text" for part in content)
        and all(isinstance(part.get("text"), str) for part in content if part.get("type") == "text")
    )


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
            "page": f"/runs/{completion_id}",
        },
    }


async def _chunks(
    completion_id: str,
    name: str,
    run: asyncio.Task[Result],
    request: Request,
    with_usage: bool,
    keep: Callable[[str, str, Result], None],
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
    keep(completion_id, name, result)
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
) -> None:
    """Serve until interrupted; the port is bound first, so a taken port is a clear error."""
    try:
        import uvicorn
    except ImportError as error:
        raise MissingExtraError("uvicorn", "serve", "`moot serve`") from error
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise ConfigError(
            f"cannot listen on {address(host, port)} ({error.strerror}): "
            "choose another --port or --host"
        ) from None
    app = create_app(societies, concurrent_runs=concurrent_runs, queue=queue, max_body=max_body)
    config = uvicorn.Config(app, log_level="warning")
    print(f"serving {', '.join(societies)} on http://{address(host, port)}/v1", flush=True)
    uvicorn.Server(config).run(sockets=[listening])


def address(host: str, port: int) -> str:
    """`host:port` as a URL writes it: an IPv6 address goes in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
