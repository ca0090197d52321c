"""OpenAI chat requests as `moot serve` reads them: the body, read within a size limit, parsed
and checked whole (strict JSON types, OpenAI's ranges), and the question in its messages. What
does not fit is a `Refusal`: the HTTP status and a message naming the field and how to fix it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from starlette.requests import Request


class Refusal(Exception):
    """A request refused before any work started: its status, message and parameter."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes: by its
    Content-Length, or while a chunked body is read."""
    declared = request.headers.get("content-length", "")
    too_long = Refusal(413, f"the request body is over the limit of {limit} bytes")
    if declared.isdecimal() and int(declared) > limit:
        raise too_long
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_long
        chunks.append(chunk)
    return b"".join(chunks)


class Checked(BaseModel):
    """Types as JSON gives them: no "false" for a boolean, no 1.0 for a count."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Message(Checked):
    """One chat message."""

    role: str
    """"user", "system", "assistant", ...: only user messages are read."""
    content: Any = None
    """Text, or OpenAI's list of parts (a user message's is checked by `is_text`)."""


class StreamOptions(Checked):
    """OpenAI's `stream_options`."""

    include_usage: bool | None = None
    """End the stream with a chunk that holds the usage."""


class ChatRequest(Checked):
    """The fields moot reads, and OpenAI's sampling fields (accepted, checked as OpenAI
    checks them, and left to each agent's own settings)."""

    model: str
    """The served society's name."""
    messages: list[Message] = Field(min_length=1)
    """The conversation; its last user message is the question."""
    stream: bool | None = None
    """Answer as server-sent chat.completion.chunk events."""
    stream_options: StreamOptions | None = None
    """How to stream."""
    # Accepted and checked only:
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


def parse_chat_request(raw: bytes) -> ChatRequest:
    """The request body parsed and checked, or a 400 saying what is wrong and where."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise Refusal(400, "the request body is nested too deeply") from None
    except ValueError:
        raise Refusal(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, "the request body must be a JSON object")
    try:
        chat = ChatRequest.model_validate(body)
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
        raise Refusal(400, f"{message} ({hint})" if hint else message, param) from None
    for each in chat.messages:
        if each.role == "user" and not is_text(each.content):
            raise Refusal(
                400,
                "a user message's 'content' must be text or a list of text parts "
                '({"type": "text", "text": ...})',
                "messages",
            )
    if not any(each.role == "user" for each in chat.messages):
        raise Refusal(400, "'messages' holds no user message with the question", "messages")
    return chat


def question_of(messages: list[Message]) -> str:
    """The last user message's text (OpenAI's text parts joined)."""
    content = next(m.content for m in reversed(messages) if m.role == "user")
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def is_text(content: Any) -> bool:
    """Whether a user message's content is text: a string, or a list of parts with text."""
    if isinstance(content, str):
        return True
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(part, dict) for part in content)
        and any(part.get("type") == "text" for part in content)
        and all(isinstance(part.get("text"), str) for part in content if part.get("type") == "text")
    )
