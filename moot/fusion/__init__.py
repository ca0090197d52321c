"""Token-level fusion: several llama.cpp models that share a tokenizer decode one answer
(`prob`, `logit`, Co-LLM's `colm`). See `moot.fusion.model` for how a token is chosen and
`moot.fusion.train` for the learned Co-LLM gate.

As a model spec: `fuse:MODEL+MODEL[+...][?key=value&key=value]`, each MODEL `local`,
`llama:PATH` or a .gguf path, keys any field of `FusedChatModel` (strategy, weights as
`0.7,0.3`, threshold, gate, n_ctx, temperature...). Paths holding `+` or `?` need the Python
API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from moot.errors import ModelSpecError
from moot.fusion.gates import LearnedGate
from moot.fusion.model import FusedChatModel

__all__ = ["FusedChatModel", "LearnedGate", "fused_model"]

SPEC_USAGE = "fuse:MODEL+MODEL[?strategy=prob|logit|colm&weights=0.5,0.5&threshold=0.5&gate=FILE]"


def fused_model(spec: str, options: dict[str, Any]) -> FusedChatModel:
    """The FusedChatModel of a spec's text after `fuse:`; `options` (load options from the CLI
    or a society file) are fields too, and the spec's own `?key=value` win."""
    names, _, query = spec.partition("?")
    models = [name.strip() for name in names.split("+") if name.strip()]
    if len(models) < 2:
        raise ModelSpecError(f"'fuse:{spec}' names {len(models)} model(s): {SPEC_USAGE}")
    fields: dict[str, Any] = dict(options)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ModelSpecError(
            f"'fuse:{spec}': after '?' write key=value pairs joined by '&': {SPEC_USAGE}"
        ) from None
    for key, value in pairs:
        fields[key] = [part.strip() for part in value.split(",")] if key == "weights" else value
    unknown = set(fields) - set(FusedChatModel.model_fields) - {"models"}
    if unknown:
        known = ", ".join(name for name in FusedChatModel.model_fields if name != "models")
        raise ModelSpecError(
            f"unknown fuse option(s) {', '.join(sorted(unknown))}: known options are {known}"
        )
    return FusedChatModel(models=models, **fields)
