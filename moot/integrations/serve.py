"""`moot serve`: societies behind an OpenAI-compatible /v1/chat/completions endpoint.

The request's `model` names a society (its file's stem); the last user message is the question;
the reply is the society's answer, with usage summed over every agent and the full record under
"moot". Errors use OpenAI's error body: 404 for an unknown society, 400 for a bad request, 429
when too many requests wait, 500 when the server fails. Each answered run's page (`moot show`'s
HTML) is at /runs/<completion id>, for the last `KEPT_RUNS` runs; /runs lists them.
"""

from __future__ import annotations

import asyncio
import html
import json
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from moot._driver import checked_context
from moot.errors import ConfigError, MissingExtraError, MootError
from moot.graphs._runtime import valid_text
from moot.result import Result

KEPT_RUNS = 256
"""Answered runs whose pages the server keeps (the oldest go first)."""

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from moot.society import Society


def create_app(
    societies: dict[str, Society], *, concurrent_runs: int = 4, queue: int = 64
) -> Starlette:
    """The ASGI app serving `societies` by name.

    At most `concurrent_runs` runs go at once (their calls to one local model decode together
    on the batched engine) and the rest wait their turn, first come first served; beyond
    `queue` waiting requests the server answers 429. A client that hangs up cancels its run.
    """
    try:
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError as error:
        raise MissingExtraError("starlette", "serve", "`moot serve`") from error

    gate = _Gate(concurrent_runs)
    answered: OrderedDict[str, tuple[str, Result]] = OrderedDict()

    def keep(completion_id: str, name: str, result: Result) -> None:
        answered[completion_id] = (name, result)
        while len(answered) > KEPT_RUNS:
            answered.popitem(last=False)

    def refuse(
        status: int, message: str, code: str, param: str | None = None, kind: str | None = None
    ) -> Response:
        details = {
            "message": message,
            "type": kind or "invalid_request_error",
            "param": param,
            "code": code,
        }
        return JSONResponse({"error": details}, status_code=status)

    async def models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "moot"} for name in societies
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return refuse(400, "the request body is not valid JSON", "invalid_json")
        problem = _request_problem(body)
        if problem:
            return refuse(400, problem[0], "invalid_request", problem[1])
        name = body["model"]
        if name not in societies:
            known = ", ".join(societies)
            return refuse(
                404,
                f"The model '{name}' does not exist; served: {known}",
                "model_not_found",
                "model",
            )
        society, question = societies[name], _question(body["messages"])
        try:
            checked_context(society, question, False)  # refuse now what cannot run
        except MootError as failure:
            return refuse(400, str(failure), "invalid_request", "messages")
        if gate.waiting >= queue:
            return refuse(
                429,
                f"the server is busy: {gate.waiting} requests wait for a run; retry later",
                "server_busy",
                kind="rate_limit_error",
            )
        run = asyncio.create_task(gate.run(society, question))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _chunks(completion_id, name, run, with_usage, keep)
            return StreamingResponse(chunks, media_type="text/event-stream")
        try:
            result = await _unless_gone(run, request)
        except MootError as failure:
            return refuse(400, str(failure), "invalid_request", "messages")
        except Exception as error:  # noqa: BLE001 - the client gets an OpenAI error body
            return await crash(request, error)
        if result is None:  # the client hung up; nobody reads this
            return Response(status_code=499)
        keep(completion_id, name, result)
        return JSONResponse(_completion(completion_id, name, result))

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
        exception_handlers={Exception: crash},
    )


class _Gate:
    """Lets `limit` runs go at once; the others wait in arrival order (asyncio's semaphore
    wakes its waiters first in, first out)."""

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.waiting = 0

    async def run(self, society: Society, question: str) -> Result:
        self.waiting += 1
        try:
            await self.semaphore.acquire()
        finally:
            self.waiting -= 1
        try:
            return await society.arun(question)
        finally:
            self.semaphore.release()


async def _unless_gone(run: asyncio.Task[Result], request: Request) -> Result | None:
    """The run's result, or None (the run cancelled) once the client has disconnected."""
    try:
        while True:
            done, _ = await asyncio.wait({run}, timeout=0.2)
            if done:
                return run.result()
            if await request.is_disconnected():
                run.cancel()
                return None
    except asyncio.CancelledError:
        run.cancel()
        raise


def _question(messages: list[dict[str, Any]]) -> str:
    """The last user message's text (OpenAI's text parts joined)."""
    content = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def _request_problem(body: Any) -> tuple[str, str] | None:
    """What is wrong with a chat completion request, and which parameter (None: nothing)."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object", "body"
    if not isinstance(body.get("model"), str):
        return "'model' is required: the name of a served society", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' is required: a non-empty list of chat messages", "messages"
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return "each message needs a 'role' and a 'content'", "messages"
        if message["role"] == "user" and not _is_text(message.get("content")):
            return (
                "a user message's 'content' must be text or a list of text parts "
                '({"type": "text", "text": ...})',
                "messages",
            )
    if not any(message["role"] == "user" for message in messages):
        return "'messages' holds no user message with the question", "messages"
    return None


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
    with_usage: bool,
    keep: Callable[[str, str, Result], None],
) -> AsyncIterator[str]:
    """The answer as server-sent chat.completion.chunk events (it exists once the run ends).
    A client that hangs up closes this stream, which cancels the run."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""}, None)
        try:
            result = await run
        except MootError as failure:
            error = {"message": str(failure), "type": "invalid_request_error", "code": None}
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        keep(completion_id, name, result)
        yield chunk({"content": result.answer or ""}, None)
        yield chunk({}, "stop")
        if with_usage:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [],
                "usage": _usage(result),
            }
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        run.cancel()  # no-op once the run is over


def serve(societies: dict[str, Society], host: str, port: int, *, concurrent_runs: int = 4) -> None:
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
            f"cannot listen on {host}:{port} ({error.strerror}): choose another --port or --host"
        ) from None
    app = create_app(societies, concurrent_runs=concurrent_runs)
    config = uvicorn.Config(app, log_level="warning")
    print(f"serving {', '.join(societies)} on http://{host}:{port}/v1", flush=True)
    uvicorn.Server(config).run(sockets=[listening])
