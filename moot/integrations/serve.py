"""`moot serve`: societies behind an OpenAI-compatible /v1/chat/completions endpoint.

The request's `model` names a society (its file's stem); the last user message is the question;
the reply is the society's answer, with usage summed over every agent and the full record under
"moot". Errors use OpenAI's error body: 404 for an unknown society, 400 for a bad request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from moot.errors import MissingExtraError, MootError
from moot.result import Result

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from moot.society import Society


def create_app(societies: dict[str, Society]) -> Starlette:
    """The ASGI app serving `societies` by name."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route
    except ImportError as error:
        raise MissingExtraError("starlette", "serve", "`moot serve`") from error

    def refuse(status: int, message: str, code: str, param: str | None = None) -> Response:
        details = {
            "message": message,
            "type": "invalid_request_error",
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
        question = next(
            message["content"]
            for message in reversed(body["messages"])
            if message["role"] == "user"
        )
        try:
            result = await societies[name].arun(question)
        except MootError as failure:
            return refuse(400, str(failure), "invalid_request", "messages")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if not body.get("stream"):
            return JSONResponse(_completion(completion_id, name, result))
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            _chunks(completion_id, name, result, with_usage), media_type="text/event-stream"
        )

    return Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        ]
    )


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
        if message["role"] == "user" and not isinstance(message.get("content"), str):
            return "a user message's 'content' must be text", "messages"
    if not any(message["role"] == "user" for message in messages):
        return "'messages' holds no user message with the question", "messages"
    return None


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
        "moot": result.model_dump(mode="json", exclude={"question"}),
    }


async def _chunks(
    completion_id: str, name: str, result: Result, with_usage: bool
) -> AsyncIterator[str]:
    """The answer as server-sent chat.completion.chunk events (it exists once the run ends)."""
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

    yield chunk({"role": "assistant", "content": ""}, None)
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


def serve(societies: dict[str, Society], host: str, port: int) -> None:
    try:
        import uvicorn
    except ImportError as error:
        raise MissingExtraError("uvicorn", "serve", "`moot serve`") from error
    uvicorn.run(create_app(societies), host=host, port=port, log_level="warning")
