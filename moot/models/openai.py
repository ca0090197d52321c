"""OpenAI and OpenAI-compatible servers, through langchain-openai."""

from __future__ import annotations

import os
from typing import Any

from langchain_core.language_models import BaseChatModel

from moot.errors import MissingExtraError, ModelSpecError

STRUCTURED_OUTPUTS = ("json_schema", "json_object", "off")


def chat_openai(model: str, **options: Any) -> BaseChatModel:
    """A ChatOpenAI for `model`; `base_url` (or OPENAI_BASE_URL) points it at any compatible server.

    A local server needs no key, so one is filled in when a base URL is given without a key.
    Many compatible servers (llama-cpp-python's among them) send no token usage in streams, so
    for a custom base URL replies are not streamed unless `stream_usage=True` says the server
    reports usage in streams (vLLM and llama.cpp's llama-server do): tokens are always counted.
    langchain-openai sends a reply's token limit only as `max_completion_tokens`, which older
    compatible servers (llama-cpp-python's) ignore, so for a custom base URL it goes as
    `max_tokens` too. The SDK's own retries are off (`max_retries=0`): moot retries and counts
    them (`Agent.retries`, `usage.retries`). An assistant message that only calls tools goes
    with empty text, not langchain-openai's null, which stricter servers (llama-cpp-python's)
    refuse.

    `structured_output` says how a society's typed answers are asked for (see
    `moot.models._openai_chat`): "json_schema" (OpenAI's structured output; the default for
    OpenAI itself), "json_object" (with a `schema`: llama-cpp-python's server) or "off" (the
    prompt asks; the default for other servers, which differ in what they accept).
    """
    try:
        from moot.models._openai_chat import MootChatOpenAI
    except ImportError as error:
        raise MissingExtraError("langchain-openai", "openai", "the 'openai:' backend") from error
    base_url = options.get("base_url") or os.environ.get("OPENAI_BASE_URL")
    if not (options.get("api_key") or os.environ.get("OPENAI_API_KEY")):
        if not base_url:
            raise ModelSpecError(
                f"'openai:{model}' needs OPENAI_API_KEY, or a base_url (or OPENAI_BASE_URL) "
                "for an OpenAI-compatible server"
            )
        options["api_key"] = "no-key-needed"
    structured = options.pop("structured_output", "off" if base_url else "json_schema")
    if structured not in STRUCTURED_OUTPUTS:
        raise ModelSpecError(
            f"structured_output must be one of {', '.join(STRUCTURED_OUTPUTS)}, got {structured!r}"
        )
    if base_url and "stream_usage" not in options:
        options["disable_streaming"] = True
    options.setdefault("stream_usage", True)
    # moot retries a failed call itself (Agent.retries) and counts it; the SDK's own silent
    # retries would outlive the agent's timeout and hide from usage.retries.
    options.setdefault("max_retries", 0)

    return MootChatOpenAI(
        model=model, structured_output=structured, compatible=bool(base_url), **options
    )
