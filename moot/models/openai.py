"""OpenAI and OpenAI-compatible servers, through langchain-openai."""

from __future__ import annotations

import os
from typing import Any

from langchain_core.language_models import BaseChatModel

from moot.errors import MissingExtraError, ModelSpecError


def chat_openai(model: str, **options: Any) -> BaseChatModel:
    """A ChatOpenAI for `model`; `base_url` (or OPENAI_BASE_URL) points it at any compatible server.

    A local server needs no key, so one is filled in when a base URL is given without a key.
    """
    try:
        from langchain_openai import ChatOpenAI
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
    options.setdefault("stream_usage", True)
    return ChatOpenAI(model=model, **options)
