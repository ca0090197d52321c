"""Model specs -> LangChain chat models.

    load_model("local")                   the embedded SmolLM2-135M-Instruct, offline
    load_model("llama:/path/model.gguf")  any GGUF through llama.cpp
    load_model("hf:OWNER/REPO/FILE.gguf") a GGUF from the Hugging Face Hub, via its cache
    load_model("openai:MODEL")            an OpenAI-compatible API (base_url= for any server)
    load_model("fuse:local+llama:/b.gguf?strategy=prob")  llama.cpp models decoding together
    load_model("test")                    a scripted model for trying the pipeline and for tests
    load_model(chat_model)                any BaseChatModel, returned as it is

`register_backend(prefix, factory, usage)` adds a prefix; it is the one extension point. What
a model can be asked for (a time limit, an answer schema, its prices) is its `ModelProfile`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter

from moot.errors import ModelSpecError
from moot.models.profile import PROFILES, ModelProfile, ModelProfiles

__all__ = [
    "BACKENDS",
    "PROFILES",
    "BackendFactory",
    "Backends",
    "ModelProfile",
    "ModelProfiles",
    "backends",
    "load_model",
    "register_backend",
]

BackendFactory = Callable[[str, dict[str, Any]], BaseChatModel]
"""Takes the text after "prefix:" ("" for a bare "prefix") and the load options; returns a chat
model, or raises ModelSpecError saying what the spec lacks."""


class Backends:
    """Model spec prefixes and their factories: `load` turns "PREFIX:REST" into a chat model."""

    def __init__(self) -> None:
        self._factories: dict[str, tuple[BackendFactory, str]] = {}

    def register(self, prefix: str, factory: BackendFactory, usage: str) -> None:
        """Make "PREFIX:..." call `factory`; `usage` is shown by `moot models`."""
        self._factories[prefix] = (factory, usage)

    def remove(self, prefix: str) -> None:
        self._factories.pop(prefix, None)

    def usage(self) -> dict[str, str]:
        """Registered prefixes and how to use each."""
        return {prefix: usage for prefix, (_, usage) in self._factories.items()}

    def copy(self) -> Backends:
        copied = Backends()
        copied._factories = dict(self._factories)
        return copied

    def load(self, spec: str | BaseChatModel, **options: Any) -> BaseChatModel:
        """The chat model for `spec` (see `load_model`)."""
        prices = _prices(options.pop("price_in", None), options.pop("price_out", None))
        if isinstance(spec, BaseChatModel):
            return _priced(spec, prices)
        if not isinstance(spec, str) or not spec.strip():
            raise ModelSpecError(
                f"model spec must be a non-empty string, got {spec!r}: {_SPEC_HELP}"
            )
        spec = spec.strip()
        if spec == "local":
            from moot.models.embedded import embedded_model_path

            prefix, rest = "llama", str(embedded_model_path())
        else:
            prefix, colon, rest = spec.partition(":")
            if colon and not rest:
                raise ModelSpecError(f"model spec '{spec}' ends at the colon: {_SPEC_HELP}")
        if prefix not in self._factories:
            raise ModelSpecError(f"unknown model spec '{spec}': {_SPEC_HELP}")
        factory, _ = self._factories[prefix]
        rate = options.pop("requests_per_second", None)
        model = factory(rest, options)
        if rate is not None:
            model.rate_limiter = _rate_limiter(rate)
        return _priced(model, prices)


BACKENDS = Backends()
"""The prefixes `load_model` knows."""


def register_backend(prefix: str, factory: BackendFactory, usage: str) -> None:
    """Make `load_model("PREFIX:...")` call `factory`; `usage` is shown by `moot models`."""
    BACKENDS.register(prefix, factory, usage)


def backends() -> dict[str, str]:
    """Registered prefixes and how to use each."""
    return BACKENDS.usage()


def load_model(spec: str | BaseChatModel, **options: Any) -> BaseChatModel:
    """The chat model for `spec`; options go to the backend (e.g. n_ctx, base_url), except
    `requests_per_second`, which bounds the rate of calls to it, and `price_in`/`price_out`,
    its prices per million input/output tokens (any backend; moot states no vendor's prices),
    which are kept in its profile (`PROFILES`)."""
    return BACKENDS.load(spec, **options)


def _prices(price_in: Any, price_out: Any) -> tuple[float, float] | None:
    if price_in is None and price_out is None:
        return None
    checked = []
    for name, value in (("price_in", price_in), ("price_out", price_out)):
        try:
            number = 0.0 if value is None else float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, bool) or not math.isfinite(number) or number < 0:
            raise ModelSpecError(
                f"{name} must be a price per million tokens (a number >= 0), got {value!r}"
            )
        checked.append(number)
    return checked[0], checked[1]


def _priced(model: BaseChatModel, prices: tuple[float, float] | None) -> BaseChatModel:
    """`model`, its prices declared in its profile (the model object is not changed)."""
    if prices is not None:
        PROFILES.declare(model, prices=prices)
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


def _load_hf(spec: str, options: dict[str, Any]) -> BaseChatModel:
    from moot.models.hf import hf_model

    return hf_model(spec, options)


def _load_fused(spec: str, options: dict[str, Any]) -> BaseChatModel:
    from moot.fusion import fused_model

    return fused_model(spec, options)


def _load_test(reply: str, options: dict[str, Any]) -> BaseChatModel:
    from moot.testing import test_model

    return test_model(reply, **options)


for _prefix, _factory, _usage in (
    ("llama", _load_llama, "llama:/path/to/model.gguf  any GGUF file via llama.cpp"),
    (
        "openai",
        _load_openai,
        "openai:MODEL  OpenAI or any compatible server (OPENAI_API_KEY, OPENAI_BASE_URL or "
        "base_url=)",
    ),
    (
        "hf",
        _load_hf,
        "hf:OWNER/REPO/FILE.gguf  a GGUF from the Hugging Face Hub (cached; HF_HUB_OFFLINE works)",
    ),
    (
        "fuse",
        _load_fused,
        "fuse:MODEL+MODEL[?strategy=prob|logit|colm&weights=..&threshold=..&gate=FILE&"
        "defer_first=N]  token-level fusion of llama.cpp models sharing a tokenizer",
    ),
    ("test", _load_test, "test[:REPLY]  a scripted model: names agent and round, answers 42"),
):
    register_backend(_prefix, _factory, _usage)

_SPEC_HELP = (
    "use 'local', 'llama:/path/to/model.gguf', 'hf:OWNER/REPO/FILE.gguf', 'openai:MODEL', "
    "'fuse:MODEL+MODEL' or 'test' (see `moot models`)"
)
