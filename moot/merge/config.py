"""A merge recipe in mergekit's YAML, with GGUF files in place of repositories.

    merge_method: ties      # linear, slerp, task_arithmetic, ties, dare_ties, dare_linear
    base_model: base.gguf
    models:
      - model: math.gguf
        parameters: {weight: 0.6, density: 0.5}
      - model: code.gguf
        parameters: {weight: [0.2, 0.8], density: 0.5}   # a list: interpolated across layers
    parameters: {normalize: true}
    dtype: q8_0                        # output type (default: keep each tensor's input type)

Paths are relative to the recipe's folder; `llama:PATH` and `local` are accepted as well.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moot.errors import ConfigError
from moot.yaml_file import load_yaml, located

Method = Literal["linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"]
NEEDS_BASE = {"slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"}
Value = float | list[float]
"""A number, or a list of numbers interpolated across the layers (first layer to last)."""
OUTPUT_TYPES = ("float32", "float16", "bfloat16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")


class Parameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    weight: Value | None = None
    """How much of this model (linear, task arithmetic, TIES, DARE)."""
    density: Value | None = None
    """Share of its changes kept (TIES: the largest; DARE: at random, rescaled)."""
    t: Value | None = None
    """SLERP: 0 is the base model, 1 the other."""
    normalize: bool | None = None
    """Divide by the sum of weights (default: true)."""
    lambda_: float | None = Field(default=None, alias="lambda")
    """Scale of the merged task vector (default 1)."""

    @field_validator("density")
    @classmethod
    def _density_in_range(cls, density: Value | None) -> Value | None:
        values = density if isinstance(density, list) else [density]
        if any(value is not None and not 0 < value <= 1 for value in values):
            raise ValueError(f"density must be in (0, 1], got {density}")
        return density

    @field_validator("t")
    @classmethod
    def _t_in_range(cls, t: Value | None) -> Value | None:
        values = t if isinstance(t, list) else [t]
        if any(value is not None and not 0 <= value <= 1 for value in values):
            raise ValueError(f"t must be in [0, 1], got {t}")
        return t

    @model_validator(mode="after")
    def _known_extras(self) -> Parameters:
        ignored = set(self.model_extra or {}) - {"int8_mask", "rescale"}
        if ignored:
            raise ValueError(f"unknown parameter(s) {', '.join(sorted(ignored))}")
        for name in sorted(set(self.model_extra or {})):
            warnings.warn(f"merge parameter {name} is ignored by moot", stacklevel=2)
        return self


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    parameters: Parameters = Field(default_factory=Parameters)


class MergeConfig(BaseModel):
    """A merge recipe (mergekit's fields)."""

    model_config = ConfigDict(extra="forbid")

    merge_method: Method
    models: list[ModelEntry] = Field(min_length=1)
    base_model: str | None = None
    parameters: Parameters = Field(default_factory=Parameters)
    dtype: Literal[OUTPUT_TYPES] | None = None  # type: ignore[valid-type]
    """Output type of every 2-D tensor (default: keep each tensor's input type where it can be
    written, else Q8_0); 1-D tensors stay float32."""
    seed: int = 0
    """Seed of DARE's random drops."""
    name: str | None = None
    """general.name of the output (default: "merge of ...")."""

    @model_validator(mode="after")
    def _method_fits(self) -> MergeConfig:
        if self.merge_method in NEEDS_BASE and self.base_model is None:
            raise ValueError(f"{self.merge_method} needs a base_model")
        if self.merge_method == "slerp":
            others = [m for m in self.models if m.model != self.base_model]
            if len(others) != 1:
                raise ValueError("slerp merges exactly two models: base_model and one other")
        return self

    def paths(self, folder: Path) -> list[Path]:
        """Every input file, base first (when there is one), each once."""
        names = ([self.base_model] if self.base_model else []) + [m.model for m in self.models]
        return list(dict.fromkeys(resolve(name, folder) for name in names))


def resolve(name: str, folder: Path) -> Path:
    """A model named in a recipe: a GGUF path (relative to the recipe), llama:PATH or local."""
    if name == "local":
        from moot.models.embedded import embedded_model_path

        return embedded_model_path()
    path = Path(name.removeprefix("llama:")).expanduser()
    return path if path.is_absolute() else (folder / path)


def load_config(path: str | Path) -> MergeConfig:
    """The recipe in the YAML file at `path`; mistakes are `FILE:LINE: field: problem`."""
    path = Path(path)
    data, lines = load_yaml(path, "merge config")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = MergeConfig.model_validate(data)
        for warning in caught:
            print(f"warning: {path}: {warning.message}")
        return config
    except ValidationError as error:
        raise ConfigError(located(error, lines, path, frozenset())) from error


def value_at(value: Value | None, position: float | None, default: float) -> float:
    """A parameter's value for a tensor at `position` (0: first layer, 1: last; None: a tensor
    outside the layers, which takes the first value for the input side)."""
    if value is None:
        return default
    if not isinstance(value, list):
        return float(value)
    if len(value) == 1:
        return float(value[0])
    where = 0.0 if position is None else position
    return float(np.interp(where, np.linspace(0, 1, len(value)), value))


def describe_recipe(config: MergeConfig) -> str:
    """The recipe as one JSON line, stored in the output's metadata."""
    return config.model_dump_json(by_alias=True, exclude_none=True)


def check_value(config: MergeConfig) -> None:
    """Refuse weights that cancel out when they are to be normalised."""
    normalize = config.parameters.normalize is not False
    if config.merge_method == "slerp" or not normalize:
        return
    weights = [m.parameters.weight for m in config.models if m.model != config.base_model]
    if config.merge_method == "linear":
        weights = [m.parameters.weight for m in config.models]
    if not weights:  # nothing but the base: the merge refuses that in its own words
        return
    for position in (0.0, 0.5, 1.0):
        total = sum(value_at(weight, position, 1.0) for weight in weights)
        if abs(total) < 1e-12:
            raise ConfigError(
                "the weights sum to 0, so normalizing divides by 0: change a weight or set "
                "parameters: {normalize: false}"
            )


def merge_parameters(config: MergeConfig, entry: ModelEntry, position: float | None) -> Any:
    """(weight, density) of one model for a tensor at `position`, global defaults applied."""
    weight = entry.parameters.weight
    if weight is None:
        weight = config.parameters.weight
    density = entry.parameters.density
    if density is None:
        density = config.parameters.density
    return value_at(weight, position, 1.0), value_at(density, position, 1.0)
