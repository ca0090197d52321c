"""Text embeddings from a GGUF through llama.cpp, so routing needs no extra download."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from moot.errors import MissingExtraError


class LlamaEmbeddings(Embeddings):
    """Mean-pooled, L2-normalised embeddings of any GGUF (default: the embedded model)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 512,
        n_gpu_layers: int | None = None,
    ) -> None:
        """`n_gpu_layers` None: every layer on a GPU build of llama-cpp-python, none on a CPU
        build (as for chat models)."""
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise MissingExtraError("llama-cpp-python", "local", "local embeddings") from error
        from moot.models.llama import default_gpu_layers

        if model_path is None:
            from moot.models.embedded import embedded_model_path

            model_path = embedded_model_path()
        self._llama = Llama(
            model_path=str(model_path),
            embedding=True,
            n_ctx=n_ctx,
            n_gpu_layers=default_gpu_layers() if n_gpu_layers is None else n_gpu_layers,
            verbose=False,
        )
        self._lock = threading.Lock()

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            raw: Any = self._llama.embed(text)
        vectors = raw if raw and isinstance(raw[0], list) else [raw]
        pooled = [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]
        norm = math.sqrt(sum(value * value for value in pooled)) or 1.0
        return [value / norm for value in pooled]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]
