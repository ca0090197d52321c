"""Model specs -> LangChain chat models.

    load_model("local")                   the embedded SmolLM2-135M-Instruct, offline
    load_model("llama:/path/model.gguf")  any GGUF through llama.cpp
    load_model("openai:MODEL")            an OpenAI-compatible API (base_url= for any server)
    load_model("fuse:local+llama:/b.gguf?strategy=prob")  llama.cpp models decoding together
    load_model("test")                    a scripted model for trying the pipeline and for tests
    load_model(chat_model)                any BaseChatModel, returned as it is

`register_backend(prefix, factory, usage)` adds a prefix; it is the one extension point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter

from moot.errors import ModelSpecError

BackendFactory = Callable[[str, dict[str, Any]], BaseChatModel]
"""Takes the text after "prefix:" ("" for a bare "prefix") and the load options; returns a chat
model, or raises ModelSpecError saying what the spec lacks."""

_BACKENDS: dict[str, tuple[BackendFactory, str]] = {}


def register_backend(prefix: str, factory: BackendFactory, usage: str) -> None:
    """Make `load_model("PREFIX:...")` call `factory`; `usage` is shown by `moot models`."""
    _BACKENDS[prefix] = (factory, usage)


def backends() -> dict[str, str]:
    """Registered prefixes and how to use each."""
    return {prefix: usage for prefix, (_, usage) in _BACKENDS.items()}


def load_model(spec: str | BaseChatModel, **options: Any) -> BaseChatModel:
    """The chat model for `spec`; options go to the backend (e.g. n_ctx, base_url), except
    `requests_per_second`, which bounds the rate of calls to it (any backend)."""
    if isinstance(spec, BaseChatModel):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec must be a non-empty string, got {spec!r}: {_SPEC_HELP}")
    spec = spec.strip()
    if spec == "local":
        from moot.models.embedded import embedded_model_path

        prefix, rest = "llama", str(embedded_model_path())
    else:
        prefix, colon, rest = spec.partition(":")
        if colon and not rest:
            raise ModelSpecError(f"model spec '{spec}' ends at the colon: {_SPEC_HELP}")
    if prefix not in _BACKENDS:
        raise ModelSpecError(f"unknown model spec '{spec}': {_SPEC_HELP}")
    factory, _ = _BACKENDS[prefix]
    rate = options.pop("requests_per_second", None)
    model = factory(rest, options)
    if rate is not None:
        model.rate_limiter = _rate_limiter(rate)
    return model


def _rate_limiter(rate: Any) -> BaseRateLimiter:
    """LangChain's token-bucket limiter: calls of all agents sharing the model wait their turn
    to stay within `rate` requests per second (no bursts)."""
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
        raise ModelSpecError(f"requests_per_second must be a number above 0, got {rate!r}")
    return InMemoryRateLimiter(
        requests_per_second=float(rate), check_every_n_seconds=0.01, max_bucket_size=1
    )


def _load_llama(path: str, options: dict[str, Any]) -> BaseChatModel:
    from moot.models.llama import ChatLlama

    if not path:
        raise ModelSpecError("'llama' needs a path: llama:/path/to/model.gguf")
    return ChatLlama.from_path(path, **options)


def _load_openai(model: str, options: dict[str, Any]) -> BaseChatModel:
    from moot.models.openai import chat_openai

    if not model:
        raise ModelSpecError("'openai' needs a model name: openai:MODEL")
    return chat_openai(model, **options)


register_backend("llama", _load_llama, "llama:/path/to/model.gguf  any GGUF file via llama.cpp")
register_backend(
    "openai",
    _load_openai,
    "openai:MODEL  OpenAI or any compatible server (OPENAI_API_KEY, OPENAI_BASE_URL or base_url=)",
)


def _load_fused(spec: str, options: dict[str, Any]) -> BaseChatModel:
    from moot.fusion import fused_model

    return fused_model(spec, options)


def _load_test(reply: str, options: dict[str, Any]) -> BaseChatModel:
    from moot.testing import test_model

    return test_model(reply, **options)


register_backend(
    "fuse",
    _load_fused,
    "fuse:MODEL+MODEL[?strategy=prob|logit|colm&weights=..&threshold=..&gate=FILE]  "
    "token-level fusion of llama.cpp models sharing a tokenizer",
)
register_backend(
    "test", _load_test, "test[:REPLY]  a scripted model: names agent and round, answers 42"
)
_SPEC_HELP = (
    "use 'local', 'llama:/path/to/model.gguf', 'openai:MODEL', 'fuse:MODEL+MODEL' or 'test' "
    "(see `moot models`)"
)
