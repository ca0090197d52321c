"""Completion chunks in llama-cpp-python's streaming shape, and the reply text they carry
(incremental UTF-8, stop strings)."""

from __future__ import annotations

import codecs
from typing import Any

Chunk = dict[str, Any]
"""A completion chunk in llama-cpp-python's streaming shape, or the last one, `usage_chunk`."""


def chunk(text: str, finish_reason: str | None, logprobs: dict[str, Any] | None) -> Chunk:
    choice: dict[str, Any] = {"delta": {"content": text}, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {"content": [logprobs]}
    return {"choices": [choice]}


def usage_chunk(
    prompt_tokens: int,
    evaluated: int,
    completion_tokens: int,
    metadata: dict[str, Any] | None = None,
    **decoding: int,
) -> Chunk:
    """A request's last chunk: what it used (`evaluated`: the prompt tokens llama.cpp evaluated,
    the rest came from a KV cache; `decoding`: the batched engine's step and draft counts, as
    in `EngineStats`), and metadata for the reply."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_evaluated": evaluated,
        "completion_tokens": completion_tokens,
        **decoding,
    }
    return {"usage": usage, "response_metadata": metadata or {}}


class Text:
    """Incremental UTF-8 decoding and stop strings: text is released once no stop string can
    start in it."""

    def __init__(self, stop: list[str]) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = [s for s in stop if s]
        self.held = ""

    def add(self, piece: bytes) -> tuple[str, bool]:
        """(text to show now, whether a stop string ended the reply)."""
        self.held += self.decoder.decode(piece)
        for stop in self.stop:
            at = self.held.find(stop)
            if at >= 0:
                shown, self.held = self.held[:at], ""
                return shown, True
        keep = max((_partial_stop(self.held, stop) for stop in self.stop), default=0)
        cut = len(self.held) - keep
        shown, self.held = self.held[:cut], self.held[cut:]
        return shown, False

    def flush(self) -> str:
        shown, self.held = self.held + self.decoder.decode(b"", final=True), ""
        return shown


def _partial_stop(text: str, stop: str) -> int:
    """Length of the longest end of `text` that begins `stop`."""
    for length in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-length:]):
            return length
    return 0
