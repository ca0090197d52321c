"""Model profiles: what moot may ask of a chat model, declared once rather than sniffed per call.

A profile says whether a model takes a time limit and an answer schema per call, can be held to
a grammar, calls tools, how many tokens its context holds and what its tokens cost. A model's
class declares the first four (moot's llama.cpp model and LangChain's ChatOpenAI are known here;
any class that implements `bind_tools` calls tools); what holds for one model object only (its
prices, a context window) is declared for that object in a `ModelProfiles` registry, beside the
model and never written into it. A run resolves each model's profile once, when it starts.
"""

from __future__ import annotations

import sys
import threading
import weakref
from dataclasses import dataclass, fields, replace
from typing import Any

from langchain_core.language_models import BaseChatModel


@dataclass(frozen=True)
class ModelProfile:
    """What a chat model can be asked for."""

    takes_timeout: bool = False
    """It takes `timeout=` per call and stops there (llama.cpp stops generating, OpenAI's client
    gives up); moot's own time limit holds either way."""
    takes_answer_schema: bool = False
    """It holds a reply to a typed answer's JSON Schema given as `answer_schema=` (by a grammar
    or a response format)."""
    takes_grammar: bool = False
    """It takes a GBNF `grammar=` per call: a reply that states no readable answer is followed
    by one call for the answer line under the format's grammar."""
    tool_calling: bool = False
    """It implements `bind_tools`, so agents with tools can use it."""
    context_window: int | None = None
    """Tokens its context holds, where known: a question whose first prompt fills it is
    refused before any call."""
    prices: tuple[float, float] | None = None
    """(input, output) price per million tokens, as the user gave them; turns then cost this."""

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """What the tokens cost at the model's prices (None: no prices given)."""
        if self.prices is None:
            return None
        return (input_tokens * self.prices[0] + output_tokens * self.prices[1]) / 1e6


_FIELDS = frozenset(field.name for field in fields(ModelProfile))


class ModelProfiles:
    """Profiles by model object: what the model's class declares, with what was declared for
    the object itself. An entry lives as long as its model (a weak reference)."""

    def __init__(self) -> None:
        self._declared: dict[int, tuple[weakref.ref[BaseChatModel], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def declare(self, model: BaseChatModel, **known: Any) -> None:
        """Record what holds for `model` (e.g. `prices=(0.5, 1.5)`, `context_window=2048`)."""
        unknown = sorted(set(known) - _FIELDS)
        if unknown:
            raise TypeError(f"ModelProfile has no field {', '.join(unknown)}")
        key = id(model)
        with self._lock:
            entry = self._declared.get(key)
            if entry is None or entry[0]() is not model:  # a new object under a reused id
                entry = (weakref.ref(model, lambda ref: self._forget(key, ref)), {})
                self._declared[key] = entry
            entry[1].update(known)

    def of(self, model: BaseChatModel) -> ModelProfile:
        """The profile of `model`."""
        profile = declared_by_class(model)
        entry = self._declared.get(id(model))
        if entry is not None and entry[0]() is model:
            profile = replace(profile, **entry[1])
        return profile

    def _forget(self, key: int, ref: weakref.ref[BaseChatModel]) -> None:
        with self._lock:
            if key in self._declared and self._declared[key][0] is ref:
                del self._declared[key]


PROFILES = ModelProfiles()
"""The registry `load_model` declares prices in and runs read profiles from."""


def declared_by_class(model: BaseChatModel) -> ModelProfile:
    """What the model's class declares: moot's llama.cpp model takes a time limit, an answer
    schema and a grammar, and knows its context window; ChatOpenAI takes a time limit (moot's
    own also the answer schema, by a response format)."""
    tools = type(model).bind_tools is not BaseChatModel.bind_tools
    known: Any = model  # read as the class found below
    llama = _loaded_class("moot.models.llama", "ChatLlama")
    if llama is not None and isinstance(model, llama):
        return ModelProfile(
            takes_timeout=True,
            takes_answer_schema=True,
            takes_grammar=True,
            tool_calling=tools,
            context_window=known.context_window,
        )
    openai = _loaded_class("langchain_openai", "ChatOpenAI")
    if openai is not None and isinstance(model, openai):
        ours = _loaded_class("moot.models._openai_chat", "MootChatOpenAI")
        schema = ours is not None and isinstance(model, ours) and known.takes_answer_schema
        return ModelProfile(takes_timeout=True, takes_answer_schema=schema, tool_calling=tools)
    return ModelProfile(tool_calling=tools)


def _loaded_class(module: str, name: str) -> type | None:
    """The class `name` of `module` if that module is loaded: no instance exists before, and
    importing it here would load llama.cpp's or OpenAI's client for nothing."""
    loaded = sys.modules.get(module)
    found = getattr(loaded, name, None)
    return found if isinstance(found, type) else None
