"""Co-LLM gates: at each token, whether the base model generates it or defers to the assistant."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, FiniteFloat, PrivateAttr, ValidationError, model_validator

from moot.config import Config, describe
from moot.errors import ConfigError


class GateTraining(Config):
    """What a learned gate was trained on (kept in its file, shown by `train-gate`)."""

    examples: int
    question_template: str = "{question}"
    """How each question was put to the models (the gate suits prompts like it)."""
    objective: Literal["weak labels", "marginal likelihood"] = "weak labels"
    """What the weights were fitted to: Co-LLM's weak labels only, or then the marginal
    likelihood of the reference answers (moot.fusion.train explains both)."""
    positions: int
    """Reference tokens scored (one training row each)."""
    defer_share: float
    """Share of positions labelled "defer": the assistant gave the reference token a higher
    probability than the base."""
    accuracy: float
    """Share of training positions the gate labels as the weak supervision does."""
    predicted_defer_share: float
    """Share of training positions the gate defers at its threshold."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Threshold that defers a given share of training positions ("30%": 0.93): pass it as
    `threshold` to aim at that deferral rate."""
    log_likelihood: dict[str, float] = Field(default_factory=dict)
    """Mean log probability of a training reference token: "base alone", "assistant alone", and
    with 30% of positions deferred, ranked by the gate or by the base's top probability (a
    gate worth having beats that ranking)."""


class LearnedGate(Config):
    """A logistic regression on the base model's last hidden state (Shen et al. 2024):
    P(defer) = sigmoid(weights . (h - mean) / scale + bias).
    Saved as JSON by `moot fusion train-gate`."""

    kind: Literal["moot-colm-gate"] = "moot-colm-gate"
    base: str
    """File name of the base model it was trained on (its hidden states are the input)."""
    assistant: str
    hidden_size: int = Field(ge=1)
    mean: list[FiniteFloat]
    scale: list[FiniteFloat]
    weights: list[FiniteFloat]
    bias: FiniteFloat
    threshold: float = Field(default=0.5, ge=0, le=1)
    """Defer when P(defer) is at least this."""
    training: GateTraining | None = None

    _mean: np.ndarray = PrivateAttr()
    _weights: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _sizes_agree(self) -> LearnedGate:
        for name in ("mean", "scale", "weights"):
            if len(getattr(self, name)) != self.hidden_size:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, not hidden_size")
        if not all(value > 0 for value in self.scale):
            raise ValueError("scale must be above 0")
        self._mean = np.asarray(self.mean, dtype=np.float32)
        self._weights = np.asarray(self.weights, dtype=np.float32) / np.asarray(
            self.scale, dtype=np.float32
        )
        return self

    def probability(self, hidden: np.ndarray) -> float:
        z = float(np.dot(hidden - self._mean, self._weights)) + self.bias
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LearnedGate:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise ConfigError(
                f"gate file not found: {path} (make one with `moot fusion train-gate`)"
            ) from error
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: not a gate file (JSON): {error}") from error
        except RecursionError:
            raise ConfigError(f"{path}: not a gate file: its JSON is nested too deeply") from None
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(f"{path}: not a usable gate: {describe(error)}") from error
