"""YAML files validated by pydantic, with errors that name the file, the line and the field
(society files, merge configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from moot.config import describe, read_text
from moot.errors import ConfigError

Lines = dict[tuple[Any, ...], int]
"""1-based line of every mapping key and sequence item, by its path in the document."""


def load_yaml(path: Path, what: str) -> tuple[dict[str, Any], Lines]:
    """The mapping in the YAML file at `path` and its line index (`what` names the file)."""
    text = read_text(path, what)
    try:
        data = yaml.safe_load(text)
        lines = _line_index(yaml.compose(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} is a mapping of fields (see the examples)")
    return data, lines


def line_of(lines: Lines, loc: tuple[Any, ...]) -> int:
    """The line of the deepest part of `loc` present in the file (pydantic adds union tags)."""
    found: tuple[Any, ...] = ()
    for part in loc:
        if (*found, part) in lines:
            found = (*found, part)
    return lines.get(found, 1)


def located(error: ValidationError, lines: Lines, path: Path, skip: frozenset[str]) -> str:
    """`FILE:LINE: field.path: what is wrong` for the first problem."""
    loc = tuple(error.errors()[0]["loc"])
    return f"{path}:{line_of(lines, loc)}: {describe(error, skip=skip, whole='file')}"


def _line_index(node: yaml.Node | None, at: tuple[Any, ...] = ()) -> Lines:
    lines: Lines = {}
    if node is None:
        return lines
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*at, key.value)
            lines.update(_line_index(value, child))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_index(item, (*at, index)))
    return lines
