"""YAML files validated by pydantic, with errors that name the file, the line and the field
(society files, merge configs).

A file is composed once, by a loader that refuses what would make the reading itself the attack:
aliases that expand past `MAX_ALIASED` nodes (a "billion laughs" of a few hundred bytes), an
alias inside its own anchor (a cycle), and nesting deeper than `MAX_DEPTH` (a RecursionError).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from moot.config import describe, read_text
from moot.errors import ConfigError

Lines = dict[tuple[Any, ...], int]
"""1-based line of every mapping key and sequence item, by its path in the document."""

MAX_DEPTH = 100
"""Deepest nesting of mappings and sequences a file may have."""
MAX_ALIASED = 20_000
"""Most nodes that aliases may add to a file, counting each alias as the whole of its anchor."""


MAX_FILE_BYTES = 1 << 20
"""The largest society file or merge recipe read (1 MiB: a thousand agents take a few KB)."""


def load_yaml(path: Path, what: str) -> tuple[dict[str, Any], Lines]:
    """The mapping in the YAML file at `path` and its line index (`what` names the file)."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # read_text says why it cannot be read
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            f"{path}: {size:,} bytes is too large for a {what} (at most {MAX_FILE_BYTES:,}): "
            "is it the right file?"
        )
    loader = _BoundedLoader(read_text(path, what))
    try:
        node = loader.get_single_node()
        lines = _line_index(node)  # before constructing: that flattens `<<` merge keys in place
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        kind = "" if isinstance(error, _Refused) else "not valid YAML: "
        raise ConfigError(f"{where}: {kind}{problem}") from error
    except ValueError as error:  # e.g. an integer past Python's 4,300-digit limit
        raise ConfigError(f"{path}: a value cannot be read: {str(error)[:120]}") from error
    finally:
        loader.dispose()
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


class _Refused(yaml.YAMLError):
    """Valid YAML that moot will not read (too deep, or aliases that expand too far)."""

    def __init__(self, problem: str, event: yaml.Event) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = event.start_mark


class _BoundedLoader(yaml.SafeLoader):
    """yaml's safe loader, counting while it composes: the nesting depth, and the size of each
    anchored node, so that an alias adds its anchor's expanded size without being expanded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0  # nodes so far, each alias counted as its anchor's size
        self._aliased = 0  # of those, the nodes added by aliases
        self._sizes: dict[int, int] = {}  # expanded size of each finished anchored node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise _Refused(
                    f"alias *{event.anchor} is inside its own anchor &{event.anchor}, which "
                    "would make it endless: write the nested part out",
                    event,
                )
            self._composed += size
            self._aliased += size
            if self._aliased > MAX_ALIASED:
                raise _Refused(
                    f"aliases expand to more than {MAX_ALIASED:,} values (by *{event.anchor} "
                    "here): write the repeated parts out, or use fewer aliases",
                    event,
                )
            return node
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep: flatten the file", event)
        self._depth += 1
        before = self._composed
        self._composed += 1
        node = super().compose_node(parent, index)
        self._depth -= 1
        if event.anchor is not None:
            self._sizes[id(node)] = self._composed - before
        return node


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
