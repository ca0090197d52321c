"""`moot merge`: weight merging of GGUF models (linear, SLERP, task arithmetic, TIES, DARE),
one tensor chunk at a time; then optionally one quantization by llama.cpp and a quick check of
each model's loss on a probe text.

    moot.merge.run("merge.yaml", "merged.gguf")      # or a MergeConfig, or a dict
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from moot.merge.config import MergeConfig, load_config
from moot.merge.writer import check_output
from moot.merge.writer import run as _merge

__all__ = ["MergeConfig", "load_config", "quantize", "run", "token_loss"]


def run(
    config: MergeConfig | dict[str, Any] | str | Path,
    out: str | Path,
    *,
    folder: str | Path | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> Path:
    """Merge as `config` (a recipe file, a dict or a MergeConfig) says into the GGUF `out`.
    Model paths are relative to `folder` (default: a recipe file's folder, else the current
    one)."""
    if isinstance(config, (str, Path)):
        folder = Path(config).parent if folder is None else folder
        config = load_config(config)
    elif isinstance(config, dict):
        config = MergeConfig.model_validate(config)
    folder = Path(".") if folder is None else Path(folder)
    return _merge(config, out, folder=folder, progress=progress, console=console)


def quantize(source: str | Path, out: str | Path, kind: str) -> Path:
    """Quantize a GGUF file once with llama.cpp's own quantizer (e.g. kind="Q4_K_M")."""
    from moot.merge.quantize import quantize as quantize_file

    check_output(Path(out))
    return quantize_file(Path(source), Path(out), kind)


def token_loss(path: str | Path, text: str) -> float:
    """Mean negative log-likelihood per token of `text` under the GGUF model at `path`."""
    from moot.merge.quantize import token_loss as loss

    return loss(Path(path), text)
