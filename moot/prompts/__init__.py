"""Prompt templates, kept as data files beside this module.

A prompt is named by its path without the suffix, e.g. "debate/update" is `debate/update.txt`.
Templates use str.format placeholders; literal braces are doubled.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from moot.errors import ConfigError


@cache
def load(name: str) -> str:
    """The text of the prompt `name`."""
    resource = resources.files(__package__).joinpath(f"{name}.txt")
    if not resource.is_file():
        raise ConfigError(f"no prompt named '{name}': expected the file moot/prompts/{name}.txt")
    return resource.read_text(encoding="utf-8").strip()


@cache
def exists(name: str) -> bool:
    return resources.files(__package__).joinpath(f"{name}.txt").is_file()


def render(name: str, /, **values: object) -> str:
    """The prompt `name` with its placeholders filled from `values`."""
    return load(name).format(**values)
