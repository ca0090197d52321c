"""Protocols and aggregators by kind: the classes a society file can name.

Each class declares `kind: Literal["name"] = "name"`; `PROTOCOLS` and `AGGREGATORS` hold the
classes that did when this module was first imported, and every module of `moot.graphs` and
`moot.aggregate` is imported for that: a new protocol file joins by declaring its kind, with no
table to edit. (A class defined elsewhere does not join: it is known in memory only.)
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any, Union, get_args

from pydantic import Field

import moot.aggregate
import moot.graphs
from moot.aggregate.base import Aggregator
from moot.config import Config
from moot.graphs.base import BaseProtocol


def _import_all(package: Any) -> None:
    """Import the public modules of `package`, so that every class in it that declares a kind
    is defined before the union of kinds is made."""
    for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        if not module.name.rpartition(".")[2].startswith("_"):
            importlib.import_module(module.name)


_HOMES = ("moot.graphs.", "moot.aggregate.")
"""Where the classes a society file can name live."""


def declared_kinds(base: type[Config], homes: tuple[str, ...] = _HOMES) -> dict[str, type[Any]]:
    """The imported subclasses of `base` defined in modules under `homes` that declare a `kind`
    of their own, by kind (sorted). A user's class never joins, whenever it was defined.

    A subclass that does not redeclare `kind` is not one: `class MyDebate(Debate)` would be
    written, and read back, as a plain "debate"."""
    found: dict[str, type[Any]] = {}
    pending = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "kind" not in vars(cls).get("__annotations__", {}):
            continue
        if not cls.__module__.startswith(homes):
            continue
        (kind,) = get_args(cls.model_fields["kind"].annotation)
        if found.setdefault(kind, cls) is not cls:
            raise TypeError(
                f"{found[kind].__qualname__} and {cls.__qualname__} both declare kind {kind!r}: "
                "give one of them another"
            )
    return dict(sorted(found.items()))


_import_all(moot.graphs)
_import_all(moot.aggregate)
PROTOCOLS = declared_kinds(BaseProtocol)
"""Protocol classes by kind: "debate" -> Debate, ..."""
AGGREGATORS = declared_kinds(Aggregator)
"""Aggregator classes by kind: "vote" -> MajorityVote, ..."""


def union_of(kinds: dict[str, type[Any]]) -> Any:
    """The classes of `kinds` as one pydantic type, told apart by their `kind` field."""
    return Annotated[Union[tuple(kinds.values())], Field(discriminator="kind")]  # noqa: UP007
