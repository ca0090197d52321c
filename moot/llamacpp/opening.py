"""Opening an engine by name: apart from the `Engine` interface, which both engines import."""

from __future__ import annotations

from pathlib import Path

from moot.llamacpp.batched import BatchedEngine
from moot.llamacpp.engine import Engine, LoadOptions
from moot.llamacpp.simple import SimpleEngine


def open_engine(path: Path, options: LoadOptions) -> Engine:
    """The engine `options` name, loading the GGUF at `path`."""
    if options.engine == "batched":
        return BatchedEngine(path, options)
    return SimpleEngine(path, options)
