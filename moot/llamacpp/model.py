"""A GGUF file's weights loaded by llama.cpp, and what they tell: tokens, pieces, metadata."""

from __future__ import annotations

import ctypes
from pathlib import Path
from types import ModuleType
from typing import Any

from moot.errors import MissingExtraError, ModelSpecError

_GGUF_MAGIC = b"GGUF"


def require_llama_cpp(purpose: str) -> ModuleType:
    """The `llama_cpp` module, or a MissingExtraError naming the extra that installs it."""
    try:
        import llama_cpp
    except ImportError as error:
        raise MissingExtraError("llama-cpp-python", "local", purpose) from error
    return llama_cpp


def check_gguf(path: Path) -> Path:
    """`path` resolved, once it is known to be a GGUF file (a clear error otherwise)."""
    if path.is_dir():
        found = ", ".join(sorted(p.name for p in path.glob("*.gguf"))[:3]) or "none there"
        raise ModelSpecError(f"{path} is a folder, not a GGUF file: name a .gguf in it ({found})")
    if not path.is_file():
        raise ModelSpecError(f"GGUF file not found: {path}: check the path after 'llama:'")
    with path.open("rb") as handle:
        if handle.read(4) != _GGUF_MAGIC:
            raise ModelSpecError(f"{path} is not a GGUF file: llama.cpp loads .gguf models only")
    return path.resolve()


class LoadedModel:
    """A GGUF's weights in llama.cpp (llama-cpp-python's `LlamaModel`, `raw`), shared by every
    context made on them."""

    def __init__(self, raw: Any, path: Path, n_gpu_layers: int) -> None:
        import llama_cpp

        self.api = llama_cpp
        self.raw = raw
        self.path = path
        self.n_gpu_layers = n_gpu_layers
        self.vocab = raw.vocab  # the grammar sampler reads token texts from it
        self.n_vocab: int = raw.n_vocab()
        self.n_embd: int = raw.n_embd()
        self.n_ctx_train: int = raw.n_ctx_train()

    @classmethod
    def load(cls, path: Path, n_gpu_layers: int, repack: bool = False) -> LoadedModel:
        """Load `path`, its weights not repacked unless asked: llama.cpp's repacked CPU kernels
        compute a row differently when it falls in a group of four, so the batched engine never
        repacks (see `moot.llamacpp.batched`); token fusion does by default."""
        llama_cpp = require_llama_cpp("the llama.cpp backend")
        from llama_cpp import _internals, _logger

        _logger.set_verbose(False)  # llama.cpp logs every KV copy and graph to stderr
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = repack
        try:
            raw = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError as error:
            raise ModelSpecError(f"llama.cpp could not load {path}: {error}") from error
        return cls(raw, path, n_gpu_layers)

    @property
    def on_cpu(self) -> bool:
        return self.n_gpu_layers == 0

    @property
    def recurrent(self) -> bool:
        """Whether the model keeps a recurrent state (Mamba, RWKV, hybrids), whose end cannot
        be cut off as a KV cache's can."""
        api, model = self.api, self.raw.model
        hybrid = getattr(api, "llama_model_is_hybrid", None)
        return bool(api.llama_model_is_recurrent(model) or (hybrid and hybrid(model)))

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return list(self.raw.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens as nothing, as in replies)."""
        api = self.api
        buffer = ctypes.create_string_buffer(64)
        n = api.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = api.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:n]

    def is_end(self, token: int) -> bool:
        """Whether `token` ends a generation (end of text, end of turn...)."""
        return bool(self.api.llama_vocab_is_eog(self.vocab, token))

    def metadata(self) -> dict[str, str]:
        return dict(self.raw.metadata())

    def parameters(self) -> int:
        return int(self.raw.n_params())

    def close(self) -> None:
        self.raw.close()
