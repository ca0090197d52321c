"""What llama.cpp itself does to a merged file: quantize it once, and score a probe text."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from moot.errors import ConfigError, MissingExtraError


def _llama_cpp() -> object:
    try:
        import llama_cpp
    except ImportError as error:
        raise MissingExtraError("llama-cpp-python", "local", "quantizing and --eval") from error
    return llama_cpp


def quantize(source: Path, out: Path, kind: str) -> Path:
    """`source` quantized to `kind` by llama_model_quantize, written under a temporary name and
    renamed when complete."""
    llama_cpp = _llama_cpp()
    name = f"LLAMA_FTYPE_MOSTLY_{kind.upper()}"
    ftype = getattr(llama_cpp, name, None)
    if ftype is None:
        known = sorted(
            attr.removeprefix("LLAMA_FTYPE_MOSTLY_")
            for attr in dir(llama_cpp)
            if attr.startswith("LLAMA_FTYPE_MOSTLY_")
        )
        raise ConfigError(f"unknown quantization type {kind}: use one of {', '.join(known)}")
    params = llama_cpp.llama_model_quantize_default_params()  # type: ignore[attr-defined]
    params.ftype = ftype
    from llama_cpp._utils import suppress_stdout_stderr

    part = out.with_name(out.name + ".part")
    try:
        with suppress_stdout_stderr(disable=False):  # llama.cpp logs every tensor
            status = llama_cpp.llama_model_quantize(  # type: ignore[attr-defined]
                str(source).encode(), str(part).encode(), params
            )
        if status != 0 or not part.exists():
            raise ConfigError(f"llama.cpp could not quantize {source} to {kind} (status {status})")
        part.replace(out)
    except BaseException:  # also SIGTERM or Ctrl-C, which take effect once llama.cpp returns
        part.unlink(missing_ok=True)
        raise
    return out


def token_loss(path: Path, text: str) -> float:
    """Mean negative log-likelihood per token of `text` (after the first token)."""
    _llama_cpp()
    from llama_cpp import Llama

    model = Llama(model_path=str(path), n_ctx=2048, logits_all=True, verbose=False, n_threads=None)
    try:
        tokens = model.tokenize(text.encode("utf-8"), add_bos=True)[:2048]
        if len(tokens) < 2:
            raise ConfigError("the probe text is too short: give at least a sentence")
        model.eval(tokens)
        logits = np.asarray(model.scores[: len(tokens) - 1], dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        chosen = shifted[np.arange(len(tokens) - 1), tokens[1:]]
        loss = float(np.mean(log_norm - chosen))
        return loss if math.isfinite(loss) else float("inf")
    finally:
        model.close()
