"""Prompt templates, kept as data files beside this module.

A prompt is named by its path without the suffix, e.g. "debate/update" is `debate/update.txt`.
Templates use str.format placeholders; literal braces are doubled. A set of prompts whose
whitespace must be kept exactly (another project's prompts, reproduced) is one JSON object of
templates, e.g. `du/gsm8k.json`.
"""

from __future__ import annotations

import json
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
def load_set(name: str) -> dict[str, str]:
    """The templates of the prompt set `name`, by their keys, whitespace kept."""
    resource = resources.files(__package__).joinpath(f"{name}.json")
    if not resource.is_file():
        raise ConfigError(f"no prompt set named '{name}': expected moot/prompts/{name}.json")
    templates: dict[str, str] = json.loads(resource.read_text(encoding="utf-8"))
    return templates


@cache
def exists(name: str) -> bool:
    return resources.files(__package__).joinpath(f"{name}.txt").is_file()


@cache
def grammar(name: str) -> str | None:
    """The GBNF grammar `grammars/NAME.gbnf` (for llama.cpp's constrained sampling), if any."""
    resource = resources.files(__package__).joinpath(f"grammars/{name}.gbnf")
    return resource.read_text(encoding="utf-8") if resource.is_file() else None


def render(name: str, /, **values: object) -> str:
    """The prompt `name` with its placeholders filled from `values`."""
    return load(name).format(**values)
